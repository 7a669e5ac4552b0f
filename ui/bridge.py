"""The one place where the core's plain callbacks become queued Qt signals.

Nothing that can block runs on the GUI thread: a unit runs in its own worker process under the
station's engine (:class:`Engine`, over :mod:`station.engine`), short jobs (fixture probes, the admin
PIN check) run on a :class:`TaskPool`.  Neither touches widgets: they emit signals, which Qt queues to
the GUI thread because the receiving object lives there.  Errors come back as values, never raised on
the GUI thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
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

from station.audit import AuditLog
from station.config import Fixture, StationConfig
from station.engine import Scheduler, UnitJob, UnitOutcome
from station.errors import StationError
from station.flow import FlowEvent
from station.home import StationHome
from station.line.handoff import LineHandOff
from station.pki import CertificateAuthority
from station.profiles import DeviceProfile
from station.transport import DeviceAddress
from station.transport.base import probe

__all__ = ["Engine", "FixtureProber", "ProbeResult", "StationParts", "TaskPool", "UnitOutcome", "UnitPlan",
           "UnitRequest", "UnitRunner"]

# A probe must never hold up closing the window for long.
PROBE_TIMEOUT_S = 1.0
PROBE_INTERVAL_MS = 5000


# -- short jobs -------------------------------------------------------------------------------


class _Relay(QObject):
    """Carries one job's result from a pool thread to the GUI thread (it lives in the GUI thread)."""

    done = Signal(object)
    failed = Signal(object)

    def __init__(self, on_done: Callable[[Any], None], on_failed: Callable[[BaseException], None],
                 forget: Callable[[_Relay], None]) -> None:
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

    def submit(self, work: Callable[[], object], on_done: Callable[[Any], None],
               on_failed: Callable[[BaseException], None] | None = None) -> bool:
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

    def __init__(self, pool: TaskPool, parent: QObject | None = None, *,
                 interval_ms: int = PROBE_INTERVAL_MS) -> None:
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


@dataclass(frozen=True)
class StationParts:
    """What a unit needs from the station, shared by every unit of this window."""

    home: StationHome
    config: StationConfig
    ca: CertificateAuthority
    audit: AuditLog
    line: LineHandOff | None = None


class Engine(QObject):
    """The window's engine: one :class:`station.engine.Scheduler` shared by the single-board page and the
    batch grid (each unit in its own worker process).

    The scheduler calls back on its own thread; events wait in a deque (its lock is held for an append or
    a swap, never across anything slow) and reach the GUI thread as one queued signal per burst, where
    they go to the runner that submitted the unit.  The GUI thread only submits and cancels: it never
    waits for a unit, and no lock a unit's audit write holds is ever taken here.
    """

    _arrived = Signal()
    delivered = Signal(object)  # every unit's every event (FlowEvent), on the GUI thread, as handed out

    def __init__(self, parts: StationParts, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.parts = parts
        self._scheduler: Scheduler | None = None
        self._pending: deque[FlowEvent] = deque()
        self._pending_lock = threading.Lock()
        self._handlers: dict[int, Callable[[FlowEvent], None]] = {}
        self._arrived.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def submit(self, job: UnitJob, handler: Callable[[FlowEvent], None]) -> int:
        """Queue a unit; ``handler`` gets its events on the GUI thread."""
        if self._scheduler is None or (self._scheduler.failure is not None and not self._scheduler.alive):
            # First unit of this window, or the engine could not start last time (the audit log was
            # unavailable, say): a fresh one tries again.
            parts = self.parts
            self._scheduler = Scheduler(home=parts.home, config=parts.config, ca=parts.ca, observer=self._observe,
                                        line=parts.line)
            self._scheduler.start()
        number = self._scheduler.submit(job)
        self._handlers[number] = handler
        return number

    def cancel(self, number: int) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel(number)

    @property
    def busy(self) -> bool:
        return bool(self._handlers)

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Stop the engine: units still running are cancelled, then terminated after ``timeout_s`` (each
        recorded failed and resumable); no worker process outlives this.  For closing the window only."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.close(timeout_s)
        self._deliver()

    def _observe(self, event: FlowEvent) -> None:  # the engine thread
        with self._pending_lock:
            first = not self._pending
            self._pending.append(event)
        if first:
            self._arrived.emit()

    @Slot()
    def _deliver(self) -> None:
        with self._pending_lock:
            events, self._pending = self._pending, deque()
        for event in events:
            handler = self._handlers.get(event.job)
            if event.kind == "unit_finished":
                self._handlers.pop(event.job, None)
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
    def parts(self) -> StationParts:
        return self.engine.parts

    @property
    def running(self) -> bool:
        return self._job is not None

    def start(self, request: UnitRequest) -> None:
        if self._job is not None:
            raise RuntimeError("a unit is already running here")
        job = UnitJob(serial=request.serial, device=request.fixture.device, profile=request.profile,
                      operator=request.operator, fixture=request.fixture.name, batch=request.batch,
                      resume=request.resume, order=request.order, stream_output=self.forward_output)
        self._job = self.engine.submit(job, self._on_event)

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
