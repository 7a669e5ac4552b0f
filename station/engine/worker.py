"""A unit's worker process: runs the steps of one unit against its board.

Started by :class:`station.engine.scheduler.Scheduler` with multiprocessing's *forkserver* method: a fork
of the station's fork server — a freshly executed, single-threaded interpreter that never imports Qt and has
already imported this module — so nothing is inherited from a station process that has Qt or threads, and a
start costs a fork, not an interpreter start (*spawn*, a fresh interpreter per unit, where forkserver is
unavailable).  The worker holds the
board's link and nothing the station must keep to itself: it signs nothing and writes no audit record —
it asks the station over its pipe (:mod:`station.engine.protocol`).  It dies with the station
(``PR_SET_PDEATHSIG``, and when its pipe closes) and lives under a memory limit (``RLIMIT_AS``), so a
board that floods it takes down only its own unit.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import queue
import resource
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from station.audit import CertificateRecord, Unit
from station.engine.protocol import Call, Cancel, Done, Progress, Refusal, Reply, WorkerStart
from station.engine.spawning import lower_own_autogroup
from station.errors import StationError
from station.fleet.guard import GuardVerdict
from station.flow import FlowEvent, Provisioner
from station.identity_log import IdentityConflicts, IdentityRecord
from station.orders import OrderStatus
from station.profiles import DeviceProfile
from station.steps import STATION_PID_ENV, UnitIssuance, station_is_ancestor
from station.transport.waiting import WakingEvent

# How long a worker waits for the station to answer one service call (the station answers in
# milliseconds; this only bounds a station that is gone or wedged).
SERVICE_TIMEOUT_S = 120.0
PR_SET_PDEATHSIG = 1
EXIT_STATION_GONE = 3


class ServiceClient:
    """The worker's end of the pipe: calls to the station, progress to it, Cancel from it."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._send_lock = threading.Lock()
        self._replies: queue.SimpleQueue[Reply | Refusal] = queue.SimpleQueue()
        self._numbers = itertools.count(1)
        # Posted calls (no answer awaited) and the first refusal of one, raised at the next call.
        self._posted: set[int] = set()
        self._posted_refusal: Refusal | None = None
        self.cancel = WakingEvent()  # its link's waits wake on it
        # How long this unit has waited for the station to answer its calls (bench/batch_scaling.py).
        self.waited_s = 0.0
        threading.Thread(target=self._read, name="station-pipe", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self._connection.recv()
            except (EOFError, OSError):
                # The station is gone: nobody can record what this unit does any more.
                os._exit(EXIT_STATION_GONE)
            if isinstance(message, Cancel):
                self.cancel.set()
            elif isinstance(message, Refusal) and message.number in self._posted:
                if self._posted_refusal is None:
                    self._posted_refusal = message
            elif isinstance(message, Reply | Refusal):
                self._replies.put(message)

    def send(self, message: object) -> None:
        with self._send_lock:
            self._connection.send(message)

    def call(self, service: str, method: str, **args: Any) -> Any:
        began = time.perf_counter()
        try:
            return self._call(service, method, args)
        finally:
            if (service, method) != ("tls", "result"):  # that one waits for the board to connect
                self.waited_s += time.perf_counter() - began

    def post(self, service: str, method: str, **args: Any) -> None:
        """A call whose answer the unit need not wait for (a step record): sent in order with its other
        calls, served before the next of them; a refusal is raised by the next call."""
        self._raise_posted_refusal()
        number = next(self._numbers)
        self._posted.add(number)
        self.send(Call(number, service, method, args, answer=False))

    def _raise_posted_refusal(self) -> None:
        refusal = self._posted_refusal
        if refusal is not None:
            raise StationError(refusal.message)

    def _call(self, service: str, method: str, args: dict[str, Any]) -> Any:
        self._raise_posted_refusal()
        number = next(self._numbers)
        self.send(Call(number, service, method, args))
        while True:
            try:
                answer = self._replies.get(timeout=SERVICE_TIMEOUT_S)
            except queue.Empty:
                raise StationError(
                    f"the station did not answer ({service}.{method}) within {SERVICE_TIMEOUT_S:g} s — press Retry"
                ) from None
            if answer.number != number:
                continue  # the answer to a call given up on
            if isinstance(answer, Refusal):
                raise StationError(answer.message)
            self._raise_posted_refusal()  # an earlier step record was refused meanwhile
            return answer.value


class FleetProxy:
    """The fleet's checks, asked by the station (the parent) over its one connection to the fleet."""

    def __init__(self, client: ServiceClient) -> None:
        self._client = client

    def check_unit(
        self, *, serial: str, unit_id: int, reprovision: bool, host_key: str | None
    ) -> GuardVerdict:
        verdict: GuardVerdict = self._fleet(
            "check_unit", serial=serial, unit_id=unit_id, reprovision=reprovision, host_key=host_key
        )
        return verdict

    def public_key_holder(self, spki_sha256: str) -> str | None:
        holder: str | None = self._fleet("public_key_holder", spki_sha256=spki_sha256)
        return holder

    def _fleet(self, method: str, **args: Any) -> Any:
        from station.fleet.guard import FleetRefusal

        try:
            return self._client.call("fleet", method, **args)
        except StationError as exc:
            raise FleetRefusal(str(exc)) from None


class AuditProxy:
    """The audit log as a unit's steps see it, written by the station (the parent) on the worker's behalf."""

    def __init__(self, client: ServiceClient, *, post_step_records: bool = True) -> None:
        self._client = client
        self._post_step_records = post_step_records

    def pin_host_key(self, unit_id: int, *, key_type: str, fingerprint: str) -> None:
        self._client.call(
            "audit", "pin_host_key", unit_id=unit_id, key_type=key_type, fingerprint=fingerprint
        )

    def public_key_seen(self, spki_sha256: str) -> bool:
        return bool(self._client.call("audit", "public_key_seen", spki_sha256=spki_sha256))

    def record_certificate(self, unit_id: int, *, certificate_pem: bytes) -> CertificateRecord:
        record: CertificateRecord = self._client.call(
            "audit", "record_certificate", unit_id=unit_id, certificate_pem=certificate_pem
        )
        return record

    def certificate_for_unit(self, unit_id: int) -> CertificateRecord | None:
        record: CertificateRecord | None = self._client.call("audit", "certificate_for_unit", unit_id=unit_id)
        return record

    def unit(self, unit_id: int) -> Unit:
        unit: Unit = self._client.call("audit", "unit", unit_id=unit_id)
        return unit

    def unit_work_order(self, unit_id: int) -> OrderStatus | None:
        status: OrderStatus | None = self._client.call("audit", "unit_work_order", unit_id=unit_id)
        return status

    def record_soc_id(self, unit_id: int, *, soc_id: str, source: str) -> None:
        self._client.call("audit", "record_soc_id", unit_id=unit_id, soc_id=soc_id, source=source)

    def unit_soc_id(self, unit_id: int) -> IdentityRecord | None:
        record: IdentityRecord | None = self._client.call("audit", "unit_soc_id", unit_id=unit_id)
        return record

    def identity_conflicts(
        self, unit_id: int, *, soc_id: str | None, host_key_fingerprint: str | None
    ) -> IdentityConflicts:
        conflicts: IdentityConflicts = self._client.call(
            "audit",
            "identity_conflicts",
            unit_id=unit_id,
            soc_id=soc_id,
            host_key_fingerprint=host_key_fingerprint,
        )
        return conflicts

    def record_step(self, unit_id: int, **fields: Any) -> None:
        # Posted: the unit goes on at once (the record needs no flush, and the station serves it before the
        # unit's next call); a refusal fails the unit's next call.
        if self._post_step_records:
            self._client.post("audit", "record_step", unit_id=unit_id, **fields)
        else:
            self._client.call("audit", "record_step", unit_id=unit_id, **fields)

    def finish_unit(
        self, unit_id: int, *, result: str, failed_step: str | None = None, message: str | None = None
    ) -> Unit:
        unit: Unit = self._client.call(
            "audit", "finish_unit", unit_id=unit_id, result=result, failed_step=failed_step, message=message
        )
        return unit


class SignerProxy:
    """The CA as a unit sees it: the station signs; the CA key never enters the worker."""

    def __init__(self, client: ServiceClient, certificate_pem: bytes) -> None:
        self._client = client
        self._certificate_pem = certificate_pem

    @property
    def certificate_pem(self) -> bytes:
        return self._certificate_pem

    def issue_for_unit(
        self, *, unit_id: int, csr_pem: bytes, profile: DeviceProfile, serial: str
    ) -> UnitIssuance:
        # The station signs for the unit it runs here, with that unit's profile and serial (not sent back).
        issuance: UnitIssuance = self._client.call("ca", "issue", unit_id=unit_id, csr_pem=csr_pem)
        return issuance


class TlsProxy:
    """The TLS proof's listener, which runs in the station (it holds the station's TLS key)."""

    def __init__(self, client: ServiceClient) -> None:
        self._client = client

    def listen(self, host: str, timeout_s: float, port: int = 0) -> int:
        return int(self._client.call("tls", "listen", host=host, timeout_s=timeout_s, port=port))

    def result(self, port: int, timeout_s: float) -> tuple[bytes | None, list[str]]:
        presented, failure = self._client.call("tls", "result", port=port, timeout_s=timeout_s)
        return presented, list(failure)


def die_with_station(parent_pid: int) -> None:
    """SIGKILL this process when its parent ends (Linux), and stop now if the station already has.

    The parent is the station (spawn) or the station's fork server (forkserver), which exits as soon as the
    station's end of its pipe closes — when the station ends, however it ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if not station_is_ancestor(parent_pid):
        os._exit(EXIT_STATION_GONE)


def own_cpu_group(autogroup_nice: int | None = None) -> None:
    """Leave the station's session, so that the kernel charges this worker's CPU to a group of its own
    (only with STATION_WORKER_SESSION=own: by default a worker stays in the station's session — see
    station.engine.spawning.WORKER_SESSION_ENV, where the measurement that decided it is named).

    With autogroup scheduling (Linux's default on desktops) every session is one CPU group.  When the window
    hosted the engine, 64 workers left in the window's session spent its share, and in a burst (64 TLS
    proofs at once) the window's GUI thread then sat runnable for seconds (measured from
    /proc/PID/task/TID/schedstat, bench/gui_batch_stall.py) — hence this.  Now the engine runs in the station
    service, whose session is its own (not a window's), and 64 groups of their own starve the service's
    threads instead, so workers stay in its session unless asked otherwise.  The worker's group keeps the
    default weight: lowered (autogroup nice 10), a unit crawls on a machine where other programs run.
    Where autogroups are off, the worker's own nice keeps it below the station.  Ctrl-C in the station's
    terminal no longer reaches it (it ignored it anyway: the station turns it into a Cancel); it still
    dies with the station (PDEATHSIG, pipe EOF).
    """
    try:
        os.setsid()
    except OSError:
        return  # already a session leader: nothing to leave
    if autogroup_nice is not None:
        lower_own_autogroup(autogroup_nice)


def limit_memory(limit_bytes: int) -> None:
    """The last line of defence against a board that floods its unit: past this, allocations fail
    (MemoryError fails the step) in this worker only."""
    if limit_bytes <= 0:
        return
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    except (ValueError, OSError):
        pass


def main(connection: Connection, start: WorkerStart) -> None:
    """The worker's entry point (multiprocessing's target)."""
    die_with_station(start.parent_pid)
    if start.own_session:
        own_cpu_group(start.autogroup_nice)
    # Ctrl-C in a terminal reaches the whole process group: the station turns it into a Cancel message,
    # which ends the unit cleanly (failed and resumable) — the worker itself ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if start.environment:
        os.environ.clear()
        os.environ.update(start.environment)
    if start.cwd:
        try:
            os.chdir(start.cwd)
        except OSError:
            pass  # gone since: the unit uses absolute paths only
    os.environ[STATION_PID_ENV] = str(start.parent_pid)
    limit_memory(start.memory_limit_bytes)
    client = ServiceClient(connection)
    pid = os.getpid()

    def observe(event: FlowEvent) -> None:
        # The station announces the unit's end itself (with its outcome); output only if someone shows it.
        if event.kind == "unit_finished" or (event.kind == "output" and not start.stream_output):
            return
        client.send(Progress(_stamped(event, start.job, pid)))

    provisioner = Provisioner(
        home=start.home,
        config=start.config,
        ca=SignerProxy(client, start.ca_certificate_pem),
        audit=AuditProxy(client, post_step_records=start.post_step_records),
        observer=observe,
    )
    try:
        result = provisioner.run_admitted(
            start.admission,
            profile=start.profile,
            cancel=client.cancel,
            tls=TlsProxy(client),
            identity_file=start.identity_file,
            fleet=FleetProxy(client) if start.config.fleet is not None else None,
        )
    except StationError as exc:
        client.send(Done(False, str(exc), service_s=client.waited_s, cpu_s=_own_cpu_s()))
    except BaseException as exc:  # noqa: BLE001 - reported to the station, which records the unit failed
        client.send(
            Done(
                False,
                f"the unit's worker hit an unexpected error ({exc!r})",
                service_s=client.waited_s,
                cpu_s=_own_cpu_s(),
            )
        )
    else:
        client.send(
            Done(result.passed, device_s=result.device_s, service_s=client.waited_s, cpu_s=_own_cpu_s())
        )
    # Nothing is left to flush (the link is closed, the end recorded): leave at once rather than through
    # the interpreter's shutdown, which a busy machine can stretch to a noticeable fraction of a unit.
    os._exit(0)


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stamped(event: FlowEvent, job: int, pid: int) -> FlowEvent:
    from dataclasses import replace

    return replace(event, job=job, pid=pid)
