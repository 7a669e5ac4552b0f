"""The one place where the core's plain callbacks become queued Qt signals, and the window's one door to the
station service (its client and what it says, re-exported here for the rest of the window).

Nothing that can block runs on the GUI thread: a unit runs in its own worker process under the
station's engine (:class:`Engine`, over :mod:`station.engine`), short jobs (fixture probes, the admin
PIN check) run on a :class:`TaskPool`.  Neither touches widgets: they emit signals, which Qt queues to
the GUI thread because the receiving object lives there.  Errors come back as values, never raised on
the GUI thread.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any

from PySide6.QtCore import (
    QCoreApplication,
    QEventLoop,
    QObject,
    QRunnable,
    Qt,
    QThreadPool,
    QTimer,
    Signal,
    Slot,
)

from station.config import Fixture
from station.engine import Ending, UnitJob, UnitOutcome
from station.errors import StationError
from station.flow import FlowEvent
from station.profiles import DeviceProfile
from station.service.audit_reader import (
    AuditReader,
    ExportedFile,
    Revoked,
    ServiceAuditReader,
    UnitDetail,
)
from station.service.audit_reads import RECENT_UNITS
from station.service.audit_wire import LabelHistory
from station.service.client import (
    CaLockedError,
    ServiceClient,
    ServiceUnavailable,
    connect,
)
from station.service.frames import FrameError
from station.service.window_client import StationClient, WindowView
from station.service.window_ops import settings_record
from station.transport import DeviceAddress
from station.transport.base import probe

__all__ = [
    "Ending",
    "RECENT_UNITS",
    "AuditReader",
    "ExportedFile",
    "Revoked",
    "UnitDetail",
    "LabelHistory",
    "window_audit_reader",
    "Engine",
    "StationClient",
    "WindowView",
    "settings_record",
    "FixtureProber",
    "ProbeResult",
    "TaskPool",
    "UnitOutcome",
    "UnitPlan",
    "UnitRequest",
    "UnitRunner",
]

# A probe must never hold up closing the window for long.
PROBE_TIMEOUT_S = 1.0
PROBE_INTERVAL_MS = 5000


# -- short jobs -------------------------------------------------------------------------------


class _Relay(QObject):
    """Carries one job's result from a pool thread to the GUI thread (it lives in the GUI thread)."""

    done = Signal(object)
    failed = Signal(object)

    def __init__(
        self,
        on_done: Callable[[Any], None],
        on_failed: Callable[[BaseException], None],
        forget: Callable[[_Relay], None],
    ) -> None:
        super().__init__()
        self._on_done = on_done
        self._on_failed = on_failed
        self._forget = forget
        # Connected to this object's own slots: emitted on a pool thread, delivered on the GUI thread.
        self.done.connect(self._deliver_done)
        self.failed.connect(self._deliver_failed)

    @Slot(object)
    def _deliver_done(self, value: object) -> None:
        self._forget(self)
        self._on_done(value)

    @Slot(object)
    def _deliver_failed(self, error: object) -> None:
        self._forget(self)
        assert isinstance(error, BaseException)
        self._on_failed(error)


class _Job(QRunnable):
    def __init__(self, work: Callable[[], object], relay: _Relay) -> None:
        super().__init__()
        self._work = work
        self._relay = relay

    def run(self) -> None:
        try:
            value = self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread as a value
            self._relay.failed.emit(exc)
        else:
            self._relay.done.emit(value)


class TaskPool(QObject):
    """Runs short blocking jobs off the GUI thread and calls back on the GUI thread."""

    def __init__(self, parent: QObject | None = None, *, max_threads: int = 4) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._relays: set[_Relay] = set()
        self._closed = False

    def submit(
        self,
        work: Callable[[], object],
        on_done: Callable[[Any], None],
        on_failed: Callable[[BaseException], None] | None = None,
    ) -> bool:
        """Run ``work()`` on a pool thread; False (and nothing runs) once the pool is shut down."""
        if self._closed:
            return False
        relay = _Relay(on_done, on_failed or (lambda error: None), self._relays.discard)
        self._relays.add(relay)
        self._pool.start(_Job(work, relay))
        return True

    def active(self) -> int:
        return self._pool.activeThreadCount()

    def shutdown(self, timeout_ms: int) -> bool:
        """Drop queued jobs and wait (bounded) for running ones; True if none is left running."""
        self._closed = True
        self._pool.clear()
        return self._pool.waitForDone(timeout_ms)


# -- fixtures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    fixture: str
    answers: bool
    detail: str


def probe_device(fixture: Fixture, timeout_s: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Whether the fixture's device answers (:func:`station.transport.base.probe`); blocks up to
    ``timeout_s``, so the window runs it on the task pool."""
    try:
        address = DeviceAddress.parse(fixture.device)
    except StationError as exc:
        return ProbeResult(fixture.name, False, str(exc))
    answers, detail = probe(address, timeout_s)
    return ProbeResult(fixture.name, answers, detail)


class FixtureProber(QObject):
    """Checks every few seconds, on the task pool, whether each fixture's device answers."""

    probed = Signal(object)  # ProbeResult

    def __init__(
        self, pool: TaskPool, parent: QObject | None = None, *, interval_ms: int = PROBE_INTERVAL_MS
    ) -> None:
        super().__init__(parent)
        self._pool = pool
        self._fixtures: tuple[Fixture, ...] = ()
        self._in_flight = 0
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.probe_now)

    def set_fixtures(self, fixtures: tuple[Fixture, ...]) -> None:
        self._fixtures = fixtures

    def start(self) -> None:
        self._timer.start()
        self.probe_now()

    def stop(self) -> None:
        self._timer.stop()

    @Slot()
    def probe_now(self) -> None:
        if self._in_flight:  # a slow round is still out: do not pile up probes
            return
        for fixture in self._fixtures:
            if self._pool.submit(partial(probe_device, fixture), self._on_result, self._on_error):
                self._in_flight += 1

    def _on_result(self, result: object) -> None:
        self._in_flight -= 1
        self.probed.emit(result)

    def _on_error(self, error: BaseException) -> None:
        self._in_flight -= 1


# -- units ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitRequest:
    """One board to provision, as the technician asked for it."""

    serial: str
    fixture: Fixture
    profile: DeviceProfile
    operator: str
    resume: bool = False
    # Batch mode: the batch id recorded on the unit (a resumed unit keeps the batch it started in).
    batch: str | None = None
    # The work order the technician picked (None: the open order holding the serial).
    order: str | None = None


@dataclass(frozen=True)
class UnitPlan:
    """What the audit history says about the steps about to run (median seconds, None = no history)."""

    steps: tuple[str, ...]
    eta_s: dict[str, float | None] = field(default_factory=dict)


# How long the link thread waits for an event before it looks for a request to send.
LINK_POLL_S = 0.05
# How long between attempts to reach a service that does not answer (or went away).
RECONNECT_S = 2.0
# How long closing the window waits for the link thread (it never waits on the GUI thread for more).
LINK_STOP_S = 1.0
# At most this many messages taken from the socket before the link looks at its requests again.
LINK_BURST = 500


class _Posted(StrEnum):
    """What the link thread tells the GUI thread (the first item of each posted tuple)."""

    EVENT = "event"  # a unit's FlowEvent
    ANSWER = "answer"  # ticket, the service's answer (the unit's job number)
    REFUSED = "refused"  # ticket, why: the unit ends refused
    CA_LOCKED = "ca_locked"  # ticket, op, args, why, the CA's kind: waits for the window's unlock dialog
    CONNECTED = "connected"  # socket path, the running units' last events
    LOST = "lost"  # why: the service went away
    STATUS = "status"  # words for the status bar
    NOTICE = "notice"  # what the service's line hand-off said


def _flow_event(record: dict[str, Any]) -> FlowEvent:
    from station.cli.serve import flow_event

    return flow_event(record)


def _unit_request(job: UnitJob) -> dict[str, Any]:
    """What the service's ``provision``/``retry`` request takes for a unit (as `station provision` sends it)."""
    return {
        "serial": job.serial,
        "device": job.device,
        "profile": job.profile.name,
        "operator": job.operator,
        "fixture": job.fixture,
        "resume": job.resume,
        "batch": job.batch,
        "order": job.order,
        "stream_output": job.stream_output,
    }


class _ServiceLink:
    """The window's one connection to the station service, owned by one plain thread: it connects (and, when
    a unit is asked for and no service answers, starts a per-user one on the same home, as the CLI does),
    follows every unit's events (``follow``: the service's running units first), and sends the window's
    requests.  Every socket call has a deadline (station.service.client); nothing here touches Qt: what the
    GUI thread must know goes through ``post``."""

    def __init__(self, station: StationClient, post: Callable[[tuple[Any, ...]], None]) -> None:
        self.station = station
        self._post = post
        self._requests: queue.SimpleQueue[tuple[str, dict[str, Any], int]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="station-service-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, op: str, args: dict[str, Any], ticket: int = 0) -> None:
        self._requests.put((op, args, ticket))
        self._wake.set()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _connect(self, *, start: bool) -> ServiceClient | None:
        try:
            return ServiceClient.connect(self.station.path)
        except OSError:
            if not start:
                return None
        try:  # the service went away (a per-user one ended): started again as the window did at first
            client = connect(self.station.home_arg, start=True)
        except StationError as exc:
            self._post((_Posted.STATUS, f"✗ no station service: {exc}"))
            self._refuse_all(str(exc))
            return None
        if client is not None:
            self.station.path = client.path
            self._post(
                (
                    "status",
                    f"no station service was running; started one for {_account()} on {client.path} — units "
                    "run there and go on if this window closes",
                )
            )
        return client

    def _run(self) -> None:
        client: ServiceClient | None = None
        said_none = False
        while not self._stop.is_set():
            if client is None:
                asked = not self._requests.empty()
                client = self._connect(start=asked)
                if client is None:
                    if asked:  # no service, and none could be started: what was asked ends refused, said why
                        self._refuse_all(
                            "no station service answers and none could be started for this window"
                        )
                    elif not said_none:
                        said_none = True
                        self._post(
                            (
                                "status",
                                f"no station service answers on {self.station.path} — the next board started "
                                "here starts one",
                            )
                        )
                    self._wake.wait(RECONNECT_S)
                    self._wake.clear()
                    continue
                try:
                    running = client.call("follow")["running"]
                except StationError as exc:
                    client.close()
                    client = None
                    self._post(
                        ("status", f"✗ the station service did not let this window watch its units: {exc}")
                    )
                    self._wake.wait(RECONNECT_S)
                    self._wake.clear()
                    continue
                self._post((_Posted.CONNECTED, str(client.path), [_flow_event(record) for record in running]))
            try:
                self._exchange(client)
            except (
                StationError
            ) as exc:  # the service went away (or broke a frame): its units are in the audit log
                client.close()
                client = None
                self._post((_Posted.LOST, str(exc)))
                self._stop.wait(RECONNECT_S)
        if client is not None:
            client.close()

    def _refuse_all(self, why: str) -> None:
        while True:
            try:
                _op, _args, ticket = self._requests.get_nowait()
            except queue.Empty:
                return
            self._post((_Posted.REFUSED, ticket, why))

    def _exchange(self, client: ServiceClient) -> None:
        while True:
            try:
                op, args, ticket = self._requests.get_nowait()
            except queue.Empty:
                break
            self._request(client, op, args, ticket)
        message = client.next_message(wait_s=LINK_POLL_S)
        taken = 0
        while message is not None and taken < LINK_BURST:
            taken += 1
            record = message.get("event")
            if record is not None:
                self._post((_Posted.EVENT, _flow_event(record)))
            elif "notice" in message:
                self._post((_Posted.NOTICE, str(message["notice"])))
            # (frames.receive reads nothing with a zero wait: a millisecond takes what already came)
            message = client.next_message(wait_s=0.001) if self._requests.empty() else None

    def _request(self, client: ServiceClient, op: str, args: dict[str, Any], ticket: int) -> None:
        token = self.station.token  # a kiosk's signed-in person: the service records them as the operator
        sent = {**args, "session": token} if token is not None else args
        try:
            result = client.call(op, sent)
        except CaLockedError as exc:
            # The window asks for the CA's secret (its unlock dialog sends it with ca_unlock), then sends again.
            self._post((_Posted.CA_LOCKED, ticket, op, args, str(exc), exc.kind))
            return
        except (ServiceUnavailable, FrameError):
            raise
        except StationError as exc:
            self._post((_Posted.REFUSED, ticket, str(exc)))
            return
        self._post((_Posted.ANSWER, ticket, result))


def _account() -> str:
    from station.roles import account_name

    return account_name(os.geteuid())


class Engine(QObject):
    """The window's door to the station's engine.  The units run in the **station service** (`station serve`:
    the system one on a line PC, else a per-user one the window started, as the CLI does), so closing or killing
    the window leaves them running, and a window opened later — or a second one — shows them (:attr:`foreign`).
    A unit asked for while the service's CA is locked waits (:attr:`ca_locked`) until the window's unlock dialog
    sent the secret (:meth:`send_waiting`) or was cancelled (:meth:`refuse_waiting`).

    Each submitted unit gets a *ticket* at once (the service's job number comes back later, on the link
    thread).  Events wait in a deque (its lock is held for an append or a swap, never across anything slow)
    and reach the GUI thread as one queued signal per burst, where they go to the runner that submitted or
    attached the unit.  The GUI thread only submits and cancels: it never waits on the socket or on a unit.
    """

    _arrived = Signal()
    delivered = Signal(object)  # every unit's every event (FlowEvent), on the GUI thread, as handed out
    # An event of a unit running in the service that no runner of this window started or attached (a unit of a
    # window that was closed or killed, or of another window, or of `station batch`).
    foreign = Signal(object)
    service_status = Signal(str)  # what the window says about the service, in words (status bar)
    notice = Signal(str)  # what the service's line hand-off says (a label printed, MES records kept)
    # The service's CA is locked (its words, {"kind": "file"|"token", "label": …}): the window asks for the secret.
    ca_locked = Signal(str, object)

    def __init__(self, station: StationClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.station = station
        self._link: _ServiceLink | None = None
        # Requests the service refused with "the CA is locked", waiting for the window's unlock dialog.
        self._waiting: list[tuple[str, dict[str, Any], int, str]] = []
        self._pending: deque[tuple[Any, ...]] = deque()
        self._pending_lock = threading.Lock()
        self._tickets = itertools.count(1)
        self._handlers: dict[int, Callable[[FlowEvent], None]] = {}  # ticket → handler
        self._units: dict[
            int, UnitJob
        ] = {}  # ticket → what was asked (for an outcome the service could not give)
        self._job_of: dict[int, int] = {}  # ticket → the engine's job number
        self._ticket_of: dict[int, int] = {}  # the engine's job number → ticket
        self._abort_asked: set[int] = set()  # tickets cancelled before the service answered
        self.service_socket: str | None = None
        self.service_text = station.started or ""
        # Units running in the service that this window did not start: job number → last event.
        self.running_elsewhere: dict[int, FlowEvent] = {}
        self._arrived.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def watch(self) -> None:
        """Follow the station service's units (a running one only; none is started until a unit is asked for)."""
        if self._link is not None:
            return
        self._link = _ServiceLink(self.station, self._post)
        self._link.start()

    def submit(self, job: UnitJob, handler: Callable[[FlowEvent], None]) -> int:
        """Queue a unit; ``handler`` gets its events on the GUI thread.  Returns its ticket."""
        ticket = next(self._tickets)
        self._handlers[ticket] = handler
        self._units[ticket] = job
        self.watch()
        assert self._link is not None
        self._link.send("retry" if job.resume else "provision", _unit_request(job), ticket)
        return ticket

    def attach(self, job: int, handler: Callable[[FlowEvent], None]) -> int:
        """Watch a unit already running in the service (:attr:`foreign`) as if submitted here; its ticket."""
        ticket = next(self._tickets)
        self._handlers[ticket] = handler
        self._bind(ticket, job)
        self.running_elsewhere.pop(job, None)
        return ticket

    def _bind(self, ticket: int, job: int) -> None:
        self._job_of[ticket] = job
        self._ticket_of[job] = ticket

    def send_waiting(self) -> None:
        """The CA was unlocked from the window: the requests that waited for it go again."""
        waiting, self._waiting = self._waiting, []
        for op, args, ticket, _why in waiting:
            if ticket in self._handlers and ticket not in self._abort_asked and self._link is not None:
                self._link.send(op, args, ticket)
            elif ticket in self._handlers:
                self._finish(ticket, Ending.REFUSED, "aborted before the station's CA was unlocked")

    def refuse_waiting(self) -> None:
        """The unlock dialog was cancelled: what waited for the CA ends refused, saying why (nothing touched)."""
        waiting, self._waiting = self._waiting, []
        for _op, _args, ticket, why in waiting:
            if ticket in self._handlers:
                self._finish(ticket, Ending.REFUSED, why)

    def cancel(self, ticket: int) -> None:
        job = self._job_of.get(ticket)
        if any(waiting[2] == ticket for waiting in self._waiting):
            self._waiting = [waiting for waiting in self._waiting if waiting[2] != ticket]
            self._finish(
                ticket, Ending.REFUSED, "aborted before the station's CA was unlocked — nothing was done"
            )
        elif job is None:
            self._abort_asked.add(ticket)  # sent as soon as the service says which job it is
        elif self._link is not None:
            self._link.send("abort", {"jobs": [job]})

    def abort_job(self, job: int) -> None:
        """Stop a unit running in the service by its job number (one this window re-attached, say)."""
        if self._link is not None:
            self._link.send("abort", {"jobs": [job]})

    @property
    def busy(self) -> bool:
        return bool(self._handlers)

    def shutdown(self, timeout_s: float = LINK_STOP_S) -> None:
        """The window closes: the units go on in the service; this window only stops watching (bounded)."""
        link, self._link = self._link, None
        if link is not None:
            link.stop(min(timeout_s, LINK_STOP_S))
        self._waiting.clear()
        self._deliver()

    def _post(self, item: tuple[Any, ...]) -> None:  # any thread
        with self._pending_lock:
            first = not self._pending
            self._pending.append(item)
        if first:
            try:
                self._arrived.emit()
            except RuntimeError:  # the window is gone (the link thread outlived it by a moment)
                pass

    @Slot()
    def _deliver(self) -> None:
        with self._pending_lock:
            items, self._pending = self._pending, deque()
        for item in items:
            kind = item[0]
            if kind == _Posted.EVENT:
                self._event(item[1])
            elif kind == _Posted.ANSWER:
                _kind, ticket, result = item
                if ticket in self._handlers and isinstance(result, dict) and "job" in result:
                    self._bind(ticket, int(result["job"]))
                    if ticket in self._abort_asked:
                        self._abort_asked.discard(ticket)
                        self.cancel(ticket)
            elif kind == _Posted.REFUSED:
                _kind, ticket, message = item
                if ticket in self._handlers:
                    self._finish(ticket, Ending.REFUSED, message)
            elif kind == _Posted.CA_LOCKED:
                _kind, ticket, op, args, message, ca = item
                if ticket in self._handlers:
                    first = not self._waiting
                    self._waiting.append((op, args, ticket, message))
                    if first:
                        self.ca_locked.emit(message, ca)
            elif kind == _Posted.CONNECTED:
                _kind, path, running = item
                self.service_socket = path
                if not self.service_text.startswith("no station service was running"):
                    self._say(f"units run in the station service ({path})")
                for event in running:
                    self._event(event)
            elif kind == _Posted.LOST:
                self._say(f"✗ {item[1]}")
                self.running_elsewhere.clear()
                for ticket in list(self._handlers):
                    self._finish(
                        ticket,
                        Ending.FAILED,
                        f"{item[1]} — the unit is left unfinished in the audit "
                        "log; press Retry to continue it",
                        resumable=True,
                    )
            elif kind == _Posted.STATUS:
                self._say(item[1])
            elif kind == _Posted.NOTICE:
                self.notice.emit(item[1])

    def _say(self, text: str) -> None:
        self.service_text = text
        self.service_status.emit(text)

    def _finish(self, ticket: int, kind: Ending, message: str, *, resumable: bool = False) -> None:
        """A unit the service could not run (refused, or the service went away): its end, as an event."""
        job = self._units.get(ticket)
        serial = job.serial if job is not None else ""
        fixture = job.fixture if job is not None else None
        outcome = UnitOutcome(
            kind, serial, message, fixture=fixture, device=job.device if job else "", resumable=resumable
        )
        number = self._job_of.get(ticket, -ticket)
        self._ticket_of.setdefault(number, ticket)
        self._event(
            FlowEvent(
                kind="unit_finished",
                serial=serial,
                fixture=fixture,
                job=number,
                message=message,
                result=outcome,
            )
        )

    def _event(self, event: FlowEvent) -> None:
        ticket = self._ticket_of.get(event.job)
        if ticket is None:
            if event.kind == "unit_finished":
                self.running_elsewhere.pop(event.job, None)
            elif event.kind != "output":
                self.running_elsewhere[event.job] = event
            self.delivered.emit(event)
            self.foreign.emit(event)
            return
        handler = self._handlers.get(ticket)
        if event.kind == "unit_finished":
            self._handlers.pop(ticket, None)
            self._units.pop(ticket, None)
            self._ticket_of.pop(event.job, None)
            self._job_of.pop(ticket, None)
            self._abort_asked.discard(ticket)
        if handler is not None:
            handler(event)
        self.delivered.emit(event)


class UnitRunner(QObject):
    """One place that runs one unit at a time (the single-board page, or one fixture of the batch grid):
    submits it to the window's :class:`Engine` and relays its events as signals on the GUI thread."""

    flow_event = Signal(object)  # FlowEvent
    planned = Signal(object)  # UnitPlan
    finished = Signal(object)  # UnitOutcome
    idle = Signal()  # the unit is over and its worker process has ended

    def __init__(self, engine: Engine, parent: QObject | None = None, *, forward_output: bool = True) -> None:
        """``forward_output=False``: the unit's device output is not even sent (a view without a log)."""
        super().__init__(parent)
        self.engine = engine
        self.forward_output = forward_output
        self._job: int | None = None

    @property
    def running(self) -> bool:
        return self._job is not None

    def start(self, request: UnitRequest) -> None:
        if self._job is not None:
            raise RuntimeError("a unit is already running here")
        job = UnitJob(
            serial=request.serial,
            device=request.fixture.device,
            profile=request.profile,
            operator=request.operator,
            fixture=request.fixture.name,
            batch=request.batch,
            resume=request.resume,
            order=request.order,
            stream_output=self.forward_output,
        )
        self._job = self.engine.submit(job, self._on_event)

    def attach(self, job: int) -> None:
        """Show a unit already running in the station service (started by a window that was closed, say)."""
        if self._job is not None:
            raise RuntimeError("a unit is already running here")
        self._job = self.engine.attach(job, self._on_event)

    def abort(self) -> None:
        """Ask the running unit to stop; it ends failed (resumable) at its next check — or is terminated
        by the engine if it does not within the cancel deadline."""
        if self._job is not None:
            self.engine.cancel(self._job)

    def wait(self, timeout_ms: int) -> bool:
        """Run the event loop until the unit is over (bounded); only for shutdown paths and tests."""
        end = time.monotonic() + timeout_ms / 1000
        while self._job is not None and time.monotonic() < end:
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.01)
        return self._job is None

    def _on_event(self, event: FlowEvent) -> None:
        if event.kind == "unit_planned":
            steps = tuple(event.etas or {})
            self.planned.emit(UnitPlan(steps, dict(event.etas or {})))
        elif event.kind == "unit_finished":
            self._job = None
            if event.result is not None:
                self.finished.emit(event.result)
            self.idle.emit()
        else:
            self.flow_event.emit(event)


# -- the audit tab ----------------------------------------------------------------------------


def window_audit_reader(
    station: StationClient, *, session: Callable[[], str | None] | None = None
) -> AuditReader:
    """The reader of the window's audit tab: the station service this window is a client of (the system service's
    socket on a line PC, else the home's per-user one, started again for this account if it went away).
    ``session`` gives the kiosk session token of a person signed in at the window (their role for every read)."""
    return ServiceAuditReader.for_home(station.home_arg, str(station.path), session=session)
