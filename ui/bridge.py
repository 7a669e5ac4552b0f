"""The one place where the core's plain callbacks become queued Qt signals.

Nothing that can block runs on the GUI thread: a unit runs in a :class:`UnitWorker` on its own
QThread (one per unit), short jobs (fixture probes, the admin PIN check) run on a
:class:`TaskPool`.  Workers never touch widgets: they emit signals, which Qt queues to the GUI
thread because the receiving object lives there.  Errors come back as values, never raised on the
GUI thread.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from PySide6.QtCore import (
    QCoreApplication,
    QObject,
    QRunnable,
    Qt,
    QThread,
    QThreadPool,
    QTimer,
    Signal,
    Slot,
)

from station.audit import AuditLog, SerialAlreadyPassed, UnitAlreadyActive
from station.config import Fixture, StationConfig
from station.errors import StationError
from station.flow import FlowEvent, Provisioner
from station.home import StationHome
from station.line.handoff import LineHandOff
from station.pki import CertificateAuthority
from station.profiles import DeviceProfile
from station.transport import DeviceAddress
from station.transport.base import probe

# How much lower than the GUI thread a unit's worker runs (Linux nice, per thread; the threads a unit
# starts — paramiko's transport, the TLS proof's server — inherit it).  Raising nice needs no privilege.
WORKER_NICENESS = 10

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
class UnitOutcome:
    """How a unit ended, for the window: passed / failed / refused (never started) / crashed."""

    kind: str
    serial: str
    message: str
    unit_id: int | None = None
    failed_step: str | None = None
    certificate_fingerprint: str | None = None
    # A failed unit that Retry can continue (a refused start of a board whose last unit failed, too).
    resumable: bool = False


@dataclass(frozen=True)
class StationParts:
    """What a unit needs from the station, shared by every unit of this window."""

    home: StationHome
    config: StationConfig
    ca: CertificateAuthority
    audit: AuditLog
    line: LineHandOff | None = None


class UnitWorker(QObject):
    """Runs one unit on its QThread; reports only through signals."""

    flow_event = Signal(object)  # FlowEvent
    planned = Signal(object)  # UnitPlan
    finished = Signal(object)  # UnitOutcome

    def __init__(self, parts: StationParts, request: UnitRequest, cancel: threading.Event, *,
                 forward_output: bool = True) -> None:
        super().__init__()
        self._parts = parts
        self._request = request
        self._cancel = cancel
        self._forward_output = forward_output

    def _observe(self, event: FlowEvent) -> None:
        # Device output is most of a unit's events; a view that does not show it is spared the queued
        # signal (and the GUI thread the work of dropping it).
        if self._forward_output or event.kind != "output":
            self.flow_event.emit(event)

    @Slot()
    def run(self) -> None:
        yield_cpu_to_gui()
        outcome = self._provision()
        # Hand the object back to the GUI thread so it is deleted there, not in a finished thread.
        app = QCoreApplication.instance()
        if app is not None:
            self.moveToThread(app.thread())
        self.finished.emit(outcome)

    def _provision(self) -> UnitOutcome:
        request, parts = self._request, self._parts
        serial = request.serial
        try:
            provisioner = Provisioner(home=parts.home, config=parts.config, ca=parts.ca, audit=parts.audit,
                                      observer=self._observe, line=parts.line)
            steps = request.profile.step_names()
            self.planned.emit(UnitPlan(steps, {step: provisioner.eta(request.profile, step) for step in steps}))
            result = provisioner.provision(
                serial=serial, device=request.fixture.device, profile=request.profile, operator=request.operator,
                fixture=request.fixture.name, batch=request.batch, resume=request.resume,
                cancel=self._cancel, order=request.order,
            )
        except SerialAlreadyPassed as exc:
            return UnitOutcome("refused", serial, str(exc), unit_id=exc.unit.id)
        except UnitAlreadyActive as exc:
            resumable = exc.unit is not None and exc.unit.state == "failed"
            return UnitOutcome("refused", serial, str(exc), unit_id=exc.unit.id if exc.unit else None,
                               failed_step=exc.unit.failed_step if exc.unit else None, resumable=resumable)
        except StationError as exc:
            return UnitOutcome("refused", serial, str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the technician, never raised on the GUI thread
            return UnitOutcome("crashed", serial,
                               f"the station hit an unexpected error ({exc!r}) — press Retry; if it happens again, "
                               "call the line engineer with this message")
        if result.passed:
            record = parts.audit.certificate_for_unit(result.unit.id)
            return UnitOutcome("passed", serial, result.message, unit_id=result.unit.id,
                               certificate_fingerprint=record.fingerprint_sha256 if record else None)
        return UnitOutcome("failed", serial, result.message, unit_id=result.unit.id,
                           failed_step=result.failed_step, resumable=result.unit.state == "failed")


def yield_cpu_to_gui(niceness: int = WORKER_NICENESS) -> bool:
    """Lower the calling worker thread's CPU priority below the GUI thread's.

    With 64 units at once, the workers and the threads they start are hundreds of runnable threads at
    the batch's busy moments; at equal priority the GUI thread waits its turn behind all of them and
    the window freezes for hundreds of milliseconds.  A worker waits on its board most of the time, so
    a lower priority costs it nothing measurable.  Linux only (nice is per thread there); elsewhere,
    or if refused, nothing changes.  Returns whether the priority was lowered.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
    except OSError:
        return False
    return True


class UnitRunner(QObject):
    """Starts units on worker threads and relays their signals, on the GUI thread."""

    flow_event = Signal(object)  # FlowEvent
    planned = Signal(object)  # UnitPlan
    finished = Signal(object)  # UnitOutcome
    idle = Signal()  # the worker thread has ended

    def __init__(self, parts: StationParts, parent: QObject | None = None, *, forward_output: bool = True) -> None:
        """``forward_output=False``: the unit's device output is not relayed (a view without a log)."""
        super().__init__(parent)
        self.parts = parts
        self.forward_output = forward_output
        self._thread: QThread | None = None
        self._worker: UnitWorker | None = None
        self._cancel = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, request: UnitRequest) -> None:
        if self._thread is not None:
            raise RuntimeError("a unit is already running in this window")
        self._cancel = threading.Event()
        # No parent: the thread must outlive a window that is closed while it still winds down.
        thread = QThread()
        thread.setObjectName(f"unit-{request.serial}")
        worker = UnitWorker(self.parts, request, self._cancel, forward_output=self.forward_output)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.flow_event.connect(self._relay_event)
        worker.planned.connect(self._relay_plan)
        worker.finished.connect(self._relay_finished)
        # Direct: the worker thread ends its own event loop as soon as the unit is over, without waiting
        # for the GUI thread to deliver a queued quit — so wait() on a shutdown path (which blocks the GUI
        # thread) returns when the unit has stopped, not at its timeout.  QThread.quit is thread-safe.
        worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._thread_ended)
        self._thread, self._worker = thread, worker
        thread.start()

    def abort(self) -> None:
        """Ask the running unit to stop; it ends failed (resumable) at its next check."""
        self._cancel.set()

    def wait(self, timeout_ms: int) -> bool:
        """Block until the worker thread has ended (bounded); only for shutdown paths and tests."""
        return self._thread.wait(timeout_ms) if self._thread is not None else True

    @Slot(object)
    def _relay_event(self, event: FlowEvent) -> None:
        self.flow_event.emit(event)

    @Slot(object)
    def _relay_plan(self, plan: UnitPlan) -> None:
        self.planned.emit(plan)

    @Slot(object)
    def _relay_finished(self, outcome: UnitOutcome) -> None:
        self.finished.emit(outcome)

    @Slot()
    def _thread_ended(self) -> None:
        thread, self._thread, self._worker = self._thread, None, None
        if thread is not None:
            thread.wait()  # already finished: returns at once; makes the C++ side safe to delete
            thread.deleteLater()
        self.idle.emit()
