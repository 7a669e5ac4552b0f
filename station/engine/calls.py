"""A running unit's calls to the station, as the scheduler serves them: audit, CA and TLS-listener calls on
the service desk's thread (:mod:`station.engine.services`), questions to the fleet on a thread of their
own, a TLS proof's result once its listener is done — each for the calling worker's own unit only."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from station.audit import AuditLog
from station.config import StationConfig
from station.engine.protocol import Call, Refusal, Reply
from station.engine.services import ServiceDesk
from station.engine.slots import _AUDIT_CALLS, _FLEET_CALLS, _Running
from station.errors import StationError
from station.pki import CertificateAuthority
from station.steps import StationSigner
from station.tls_proof import TlsProofListener


class UnitCalls:
    """The part of :class:`~station.engine.scheduler.Scheduler` that serves its units' calls."""

    config: StationConfig
    ca: CertificateAuthority
    _audit: AuditLog | None
    _desk: ServiceDesk[_Running] | None
    _tls: TlsProofListener
    _running: dict[int, _Running]
    _fleet_calls: queue.SimpleQueue[tuple[int, Call] | None]
    _fleet_thread: threading.Thread | None

    def _command(self, kind: str, value: Any) -> None:
        raise NotImplementedError  # the scheduler's: put a command on the engine thread's queue

    def _serve(self, running: _Running, call: Call) -> None:
        try:
            if call.service == "fleet" and call.method in _FLEET_CALLS:
                if call.args.get("unit_id", running.unit_id) != running.unit_id:
                    raise StationError(
                        f"a worker asked the fleet about unit {call.args['unit_id']}, not its own"
                    )
                # A question to the fleet may wait for the network (up to its own deadline): asked on the
                # fleet thread, answered through this thread's command queue — never blocking other units.
                self._ask_fleet(running.job_id, call)
                return
            if call.service == "tls" and call.method == "result":
                # Answered once the listener is done, or at the call's timeout (never blocking this thread).
                running.parked = call
                running.parked_until = time.monotonic() + float(call.args["timeout_s"])
                return
            # Audit, CA and listener calls: answered on the service desk's thread, in arrival order.
            assert self._desk is not None
            self._desk.put(running, call)
        except StationError as exc:
            self._send(running, Refusal(call.number, str(exc)))
        except Exception as exc:  # noqa: BLE001 - the worker records its step failed with this
            self._send(
                running,
                Refusal(
                    call.number,
                    f"the station could not serve {call.service}.{call.method} "
                    f"({exc!r}) — press Retry; report it if it repeats",
                ),
            )

    def _desk_service(self, running: _Running, call: Call) -> Any:
        """One call's answer, on the service desk's thread (its commits grouped, flushed before it is sent)."""
        with running.serve_lock:
            if self._running.get(running.job_id) is not running:
                raise StationError(
                    "the unit has ended (its worker was stopped); nothing was recorded for this call"
                )
            return self._service(running, call)

    def _service(self, running: _Running, call: Call) -> Any:
        assert self._audit is not None
        args = call.args
        if call.service == "audit" and call.method in _AUDIT_CALLS:
            if "unit_id" in args and args["unit_id"] != running.unit_id:
                raise StationError(f"a worker asked to write unit {args['unit_id']}, not its own")
            return getattr(self._audit, call.method)(**args)
        if call.service == "ca" and call.method == "issue":
            if args.get("unit_id") != running.unit_id:
                raise StationError(
                    f"a worker asked for a certificate for unit {args.get('unit_id')}, not its own"
                )
            return StationSigner(self.ca, self._audit).issue_for_unit(
                unit_id=running.unit_id,
                csr_pem=bytes(args["csr_pem"]),
                profile=running.job.profile,
                serial=running.job.serial,
            )
        if call.service == "tls" and call.method == "listen":
            port = self._tls.listen(
                str(args["host"]), float(args["timeout_s"]), port=int(args.get("port", 0))
            )
            running.tls_ports.add(port)
            return port
        raise StationError(f"unknown station service {call.service}.{call.method}")

    def _ask_fleet(self, job_id: int, call: Call) -> None:
        if self.config.fleet is None:
            raise StationError("this station has no [fleet] configured")
        if self._fleet_thread is None:
            self._fleet_thread = threading.Thread(target=self._fleet_loop, name="engine-fleet", daemon=True)
            self._fleet_thread.start()
        self._fleet_calls.put((job_id, call))

    def _fleet_loop(self) -> None:
        """The fleet thread: one question at a time over this process's one connection to the fleet."""
        from station.fleet.guard import fleet_guard

        while True:
            item = self._fleet_calls.get()
            if item is None:
                return
            job_id, call = item
            answer: object
            try:
                assert self.config.fleet is not None
                answer = Reply(call.number, getattr(fleet_guard(self.config.fleet), call.method)(**call.args))
            except StationError as exc:
                answer = Refusal(call.number, str(exc))
            except Exception as exc:  # noqa: BLE001 - the worker records its step failed with this
                answer = Refusal(call.number, f"the station could not ask the fleet ({exc!r}) — press Retry")
            self._command("reply", (job_id, answer))

    def _answer_parked(self) -> None:
        for running in list(self._running.values()):
            call = running.parked
            if call is None:
                continue
            port = int(call.args["port"])
            if self._tls.finished(port) or time.monotonic() >= running.parked_until:
                running.parked = None
                running.tls_ports.discard(port)
                self._send(running, Reply(call.number, self._tls.result(port, 0.0)))

    def _send(self, running: _Running, message: object) -> None:
        """Send to a unit's worker (from the engine thread or the service desk's: one message at a time)."""
        with running.send_lock:
            try:
                running.connection.send(message)
            except (OSError, ValueError):
                pass  # the worker is gone; its sentinel tells the rest
