"""The slot scheduler: the one executor of units, for `station provision`, `station batch`, the window's
single-board page and its batch grid alike.

One fixture slot per device: the boards of one device run one after another, devices run in parallel (at
most ``slots`` at once).  Each unit runs in its own worker process (:mod:`station.engine.worker`), started
with multiprocessing's *forkserver* method: forked by the station's fork server, a freshly executed,
single-threaded interpreter without Qt that has imported what a unit needs once (*spawn*, a fresh
interpreter per unit, where forkserver is unavailable or ``STATION_WORKER_START=spawn``).  This process keeps what must not leave the station — the CA key
and signing, the audit writes, host-key pinning (an audit write), the TLS proof's listener — and serves it
to the workers over their pipes (:mod:`station.engine.protocol`).

One engine thread starts units, reads their pipes, forwards their progress to the observer as plain
:class:`~station.flow.FlowEvent` values, and enforces deadlines; their calls to the audit log, the CA and
the TLS listener are answered on the service desk's thread (:mod:`station.engine.services`: in arrival
order, many units' audit writes made durable by one flush before any answer leaves), questions to the
fleet on a thread of their own.  A worker still busy past its step's deadline plus a grace is terminated
— not asked — and its unit recorded failed and resumable; so is a worker that dies (a crash, the memory
limit, a kill).  Nothing another unit does can stop the engine thread for longer than one audit write
(a unit's start or end), and callers (a window's GUI thread) only put commands on a queue: they never
wait for a unit.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import queue
import select
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from station.audit import AuditLog
from station.config import StationConfig
from station.engine import worker
from station.engine.endings import UnitEndings
from station.engine.outcome import Ending, UnitOutcome, refused
from station.engine.protocol import Call, Done, Progress, WorkerStart
from station.engine.services import ServiceDesk
from station.engine.slots import (
    BETWEEN_STEPS_S,
    CANCEL_DEADLINE_S,
    READ_BURST,
    STEP_DEADLINE_GRACE_S,
    WORKER_EXIT_S,
    WORKER_MEMORY_LIMIT_MIB,
    WORKER_NICENESS,
    WORKER_START_S,
    Observer,
    UnitJob,
    _Running,
)
from station.engine.spawning import (
    FORKSERVER_PRELOAD,
    START_METHOD_ENV,
    START_METHODS,
    _lower_priority,
    _secret,
    clean_spawn,
    finish_start,
    worker_context,
    worker_environment,
    worker_process,
)
from station.engine.spawning import worker_own_session as worker_own_session_default
from station.errors import StationError
from station.flow import Admission, EtaCache, FlowEvent, Provisioner
from station.home import StationHome
from station.line.handoff import LineHandOff
from station.pki import CertificateAuthority
from station.tls_proof import TlsProofListener

# Names kept importable from here (the scheduler was one module before it was split for #19).
__all__ = [
    "BETWEEN_STEPS_S",
    "CANCEL_DEADLINE_S",
    "FORKSERVER_PRELOAD",
    "READ_BURST",
    "START_METHODS",
    "START_METHOD_ENV",
    "STEP_DEADLINE_GRACE_S",
    "WORKER_EXIT_S",
    "WORKER_MEMORY_LIMIT_MIB",
    "WORKER_NICENESS",
    "WORKER_START_S",
    "Scheduler",
    "UnitJob",
    "_secret",
    "clean_spawn",
    "worker_context",
    "worker_environment",
]


class Scheduler(UnitEndings):
    """Runs :class:`UnitJob`\\ s, each in its own worker process; see the module's description.

    ``observer`` is called on the engine thread with every event (keep it short: a window queues it).
    """

    def __init__(
        self,
        *,
        home: StationHome,
        config: StationConfig,
        ca: CertificateAuthority,
        observer: Observer | None = None,
        slots: int | None = None,
        line: LineHandOff | None = None,
        step_grace_s: float = STEP_DEADLINE_GRACE_S,
        memory_limit_mib: int = WORKER_MEMORY_LIMIT_MIB,
        start_method: str | None = None,
        post_step_records: bool = True,
        worker_own_session: bool | None = None,
        worker_autogroup_nice: int | None = None,
        worker_niceness: int = WORKER_NICENESS,
    ) -> None:
        if slots is not None and slots < 1:
            raise StationError("--jobs must be at least 1")
        self.home = home
        self.config = config
        self.ca = ca
        self.observer: Observer = observer or (lambda event: None)
        self.slots = slots
        # Label printer and MES: told of every unit that ended, here (the workers have neither).
        self.line = line
        self.step_grace_s = step_grace_s
        self.memory_limit_bytes = memory_limit_mib * 1024 * 1024
        self._context = worker_context(start_method)
        self.start_method = self._context.get_start_method()
        # How workers run (bench/batch_scaling.py compares them in one run): see WorkerStart.
        self.post_step_records = post_step_records
        self.worker_own_session = (
            worker_own_session_default() if worker_own_session is None else worker_own_session
        )
        self.worker_autogroup_nice = worker_autogroup_nice
        self.worker_niceness = worker_niceness
        self.failure: BaseException | None = None
        self._init_engine_state()

    def _init_engine_state(self) -> None:
        """The engine thread's own bookkeeping (what is queued, running and ended; what it waits on)."""
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._numbers = 0
        self._numbers_lock = threading.Lock()
        self._queues: dict[str, deque[tuple[int, UnitJob]]] = {}
        self._running: dict[int, _Running] = {}
        self._outcomes: dict[int, UnitOutcome] = {}
        self._submitted: set[int] = set()
        self._changed = threading.Condition()
        self._stopping = False
        self._stopped = False  # the engine thread takes no more commands (it is ending)
        self._thread: threading.Thread | None = None
        # What the engine thread waits on: the wake-up socket, and each running unit's pipe and process
        # sentinel — registered once per unit (epoll), not rebuilt on every round as 2 × 64 descriptors.
        self._selector = selectors.DefaultSelector()
        self._audit: AuditLog | None = None
        self._desk: ServiceDesk[_Running] | None = None
        self._tls = TlsProofListener(self.ca)
        self._identity_file = ""
        # Questions to the fleet, answered on a thread of their own (see _ask_fleet).
        self._fleet_calls: queue.SimpleQueue[tuple[int, Call] | None] = queue.SimpleQueue()
        self._fleet_thread: threading.Thread | None = None

    # -- commands (any thread; none of them waits for a unit) -----------------------------------------

    def start(self) -> None:
        """Start the engine thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="station-engine", daemon=True)
        self._thread.start()

    def submit(self, job: UnitJob) -> int:
        """Queue a unit on its device's slot; returns the job number its events carry."""
        with self._numbers_lock:
            self._numbers += 1
            number = self._numbers
        with self._changed:
            self._submitted.add(number)
            # Decided under the lock the ending engine thread takes before its last look at the commands:
            # a board is either seen by it or refused here — never queued where nobody reads.
            stopped = self._stopped or (self._thread is not None and not self._thread.is_alive())
            if not stopped:
                self._command("submit", (number, job))
        if stopped:
            # The engine has stopped (closed, or it could not open the audit log): say so, never hang.
            why = f" ({self.failure})" if self.failure is not None else ""
            self._settle(
                number,
                UnitOutcome(
                    Ending.NOT_STARTED,
                    job.serial,
                    f"the station's engine has stopped{why} "
                    "— restart the station, then start the board again",
                    fixture=job.fixture,
                    device=job.device,
                    job=number,
                ),
            )
            return number
        return number

    @property
    def alive(self) -> bool:
        """Whether the engine thread runs (it stops when closed, or when it could not start)."""
        return self._thread is not None and self._thread.is_alive()

    def cancel(self, job: int) -> None:
        """Stop one unit (it ends failed and resumable), or drop it if it has not started."""
        self._command("cancel", job)

    def cancel_all(self) -> None:
        """Stop every running unit (each ends failed and resumable); queued boards are not started."""
        self._command("cancel_all", None)

    def outcome(self, job: int) -> UnitOutcome | None:
        with self._changed:
            return self._outcomes.get(job)

    def wait(self, jobs: Iterable[int], timeout_s: float | None = None) -> bool:
        """Block until every one of ``jobs`` has an outcome (bounded by ``timeout_s``); not for a GUI thread."""
        wanted = set(jobs)
        end = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            while not wanted <= self._outcomes.keys():
                if self._thread is None or not self._thread.is_alive():
                    return False
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # An outcome and the engine's end both notify; the cap only bounds a missed wake-up.
                self._changed.wait(1.0 if left is None else min(1.0, left))
        return True

    def worker_pids(self) -> list[int]:
        """The process ids of the units' workers running now (any thread; for measuring)."""
        for _ in range(3):
            try:
                return [pid for running in list(self._running.values()) if (pid := running.process.pid)]
            except RuntimeError:  # the engine thread changed the slots meanwhile: look again
                continue
        return []

    @property
    def busy(self) -> bool:
        with self._changed:
            return bool(self._submitted - self._outcomes.keys())

    def close(self, timeout_s: float = CANCEL_DEADLINE_S) -> None:
        """Cancel what runs, wait (bounded) for the units to record themselves, terminate what is left
        (recorded failed and resumable), and stop the engine thread.  No worker outlives this."""
        thread = self._thread
        if thread is None:
            return
        self._command("close", time.monotonic() + timeout_s)
        thread.join(timeout_s + WORKER_EXIT_S + 5)

    def run(self, jobs: Iterable[UnitJob]) -> list[UnitOutcome]:
        """Run ``jobs`` to their ends (the CLI's way); Ctrl-C cancels them and is raised again."""
        jobs = list(jobs)
        self.start()
        numbers = [self.submit(job) for job in jobs]
        try:
            self.wait(numbers)
        except KeyboardInterrupt:
            self.cancel_all()
            self.wait(numbers, CANCEL_DEADLINE_S + WORKER_EXIT_S)
            raise
        finally:
            self.close()
        if self.failure is not None:
            if isinstance(self.failure, StationError):
                raise self.failure
            raise StationError(f"the station's engine stopped: {self.failure!r}") from self.failure
        outcomes = []
        for number, job in zip(numbers, jobs, strict=True):
            outcome = self.outcome(number)
            outcomes.append(
                outcome
                or UnitOutcome(
                    Ending.NOT_STARTED,
                    job.serial,
                    "the station stopped first",
                    fixture=job.fixture,
                    device=job.device,
                    job=number,
                )
            )
        return outcomes

    def _command(self, kind: str, value: Any) -> None:
        self._commands.put((kind, value))
        try:
            self._wake_write.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (the buffer is full of wake-ups) or closing

    # -- the engine thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        close_by: float | None = None
        try:
            # Before any worker, on this thread (a caller never waits for it): the audit log — a connection
            # of the engine's own, so a window's reads never wait behind a unit's write — and the station's
            # SSH key the workers log in with.
            self._selector.register(self._wake_read, selectors.EVENT_READ, None)
            self._audit = AuditLog(self.home.audit_db)
            self._desk = ServiceDesk(self._audit, self._desk_service, self._send)
            self._identity_file = str(self.home.ensure_station_key())
            self._warm_up()
            while True:
                close_by = self._take_commands(close_by)
                if close_by is not None and not self._running:
                    break
                if close_by is None:
                    self._start_ready()
                for key, _ in self._selector.select(self._timeout(close_by)):
                    if key.data is None:
                        self._drain_wake()
                        continue
                    unit: _Running = key.data[0]
                    if self._running.get(unit.job_id) is not unit:
                        continue  # taken off its slot by an earlier event of this round
                    if not key.data[1]:
                        self._read_ready(unit)
                    elif self._running.get(unit.job_id) is unit:  # its sentinel: the worker ended
                        self._drain(unit)  # what it sent before it ended comes first
                        unit.process.join(WORKER_EXIT_S)  # it has ended: at once
                        done = unit.done
                        self._ended(unit, done.problem if done is not None else self._death_reason(unit))
                self._answer_parked()
                self._enforce_deadlines(close_by)
        except BaseException as exc:  # noqa: BLE001 - a broken engine must not leave workers behind
            self.failure = exc
        finally:
            for running in list(self._running.values()):
                self._terminate(
                    running, "the station stopped while this unit ran — press Retry to continue it"
                )
            stopped = "the station stopped before this board's turn"
            if self.failure is not None:
                stopped += f" ({self.failure}) — fix that, then start the board again"
            with self._changed:
                self._stopped = True
            self._take_commands(time.monotonic())  # boards submitted meanwhile: not started either
            self._drop_queued(stopped)
            if self._fleet_thread is not None:
                self._fleet_calls.put(None)
            if self._desk is not None:
                self._desk.close(WORKER_EXIT_S)
            if self._audit is not None:
                self._audit.close()
            self._selector.close()
            self._wake_read.close()
            self._wake_write.close()
            with self._changed:
                self._changed.notify_all()

    def _take_commands(self, close_by: float | None) -> float | None:
        while True:
            try:
                kind, value = self._commands.get_nowait()
            except queue.Empty:
                return close_by
            if kind == "submit":
                number, job = value
                if close_by is not None:
                    self._settle(
                        number,
                        UnitOutcome(
                            Ending.NOT_STARTED,
                            job.serial,
                            "the station is closing",
                            fixture=job.fixture,
                            device=job.device,
                            job=number,
                        ),
                    )
                else:
                    self._queues.setdefault(job.device, deque()).append((number, job))
            elif kind == "reply":
                job_id, answer = value
                running = self._running.get(int(job_id))
                if running is not None:
                    self._send(running, answer)
            elif kind == "cancel":
                self._cancel_one(int(value))
            elif kind == "cancel_all":
                self._drop_queued("the batch was cancelled before this board started")
                for running in self._running.values():
                    self._ask_to_stop(running)
            elif kind == "close":
                self._drop_queued("the station is closing")
                for running in self._running.values():
                    self._ask_to_stop(running)
                close_by = float(value) if close_by is None else min(close_by, float(value))

    def _drain_wake(self) -> None:
        try:
            while self._wake_read.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _timeout(self, close_by: float | None) -> float:
        # One pass over the running units (this runs once per engine round: at 64 slots, thousands a batch).
        now = time.monotonic()
        soonest = now + 1.0 if close_by is None else min(now + 1.0, close_by)
        parked = now + 0.05
        for running in self._running.values():
            if running.deadline < soonest:
                soonest = running.deadline
            if running.parked is not None and parked < soonest:
                soonest = parked
        return max(0.0, min(soonest - now, 1.0))

    # -- starting -----------------------------------------------------------------------------------

    def _warm_up(self) -> None:
        """Start the fork server now (it imports the worker's modules while the first unit is admitted)."""
        if self.start_method != "forkserver":
            return
        try:
            with clean_spawn():  # the server's environment is what every worker it forks starts with
                multiprocessing.forkserver.ensure_running()
        except OSError:
            return  # the first unit's start tries again and reports what went wrong
        # The server itself stays at the station's priority: the engine thread waits for it to fork each worker
        # (Process.start reads the new pid from it), and a server niced below 64 busy boards made every start
        # wait tens of milliseconds for a core — while the engine thread forwarded no call.  Each worker is
        # lowered as soon as it is started (_start).

    def _start_ready(self) -> None:
        """Admit every board whose slot is free, then start their workers.  The admissions' records are made
        durable by one flush for all of them (a burst of 64 boards is one disk flush, not 64 with the audit
        log's lock held through each) — before any of their workers starts: a unit's start is on disk before
        anything touches its board, as with one ``synchronous=FULL`` commit per unit."""
        assert self._audit is not None
        if not self._queues or (self.slots is not None and len(self._running) >= self.slots):
            return  # nothing to start (most rounds): no commit group, no scan of the running units
        busy = {running.job.device for running in self._running.values()}
        admitted: list[tuple[int, UnitJob, Admission, float]] = []
        etas: EtaCache = {}  # read once for the burst
        with self._audit.grouped_commits():
            for device, jobs in list(self._queues.items()):
                if self.slots is not None and len(self._running) + len(admitted) >= self.slots:
                    break
                if device in busy or not jobs:
                    continue
                number, job = jobs.popleft()
                if not jobs:
                    del self._queues[device]
                began = time.monotonic()
                admission = self._admit(number, job, etas)
                if admission is not None:
                    admitted.append((number, job, admission, began))
                    busy.add(device)
        if not admitted:
            return
        try:
            self._audit.make_durable()
        except Exception as exc:  # noqa: BLE001 - no worker may start on a start that may not be on disk
            problem = (
                f"the station could not write the audit log to disk ({exc}) — the board was not touched; "
                "check the disk, then press Retry"
            )
            for number, job, admission, _began in admitted:
                self._not_started(number, job, admission, problem)
            return
        # Every worker's request goes to the fork server first, then their pids are read: the server forks
        # them back to back, and the engine thread does not wait for each fork in turn (see worker_process).
        launched = [self._start(number, job, admission, began) for number, job, admission, began in admitted]
        for running in launched:
            if running is not None:
                self._started(running)

    def _admit(self, number: int, job: UnitJob, etas: EtaCache) -> Admission | None:
        """Record a unit's start (the resume rules decided in one place); None when refused (settled)."""
        assert self._audit is not None
        provisioner = Provisioner(home=self.home, config=self.config, ca=self.ca, audit=self._audit)
        try:
            return provisioner.admit(
                serial=job.serial,
                device=job.device,
                profile=job.profile,
                operator=job.operator,
                fixture=job.fixture,
                batch=job.batch,
                resume=job.resume,
                restart=job.restart,
                reprovision_reason=job.reprovision_reason,
                order=job.order,
                eta_cache=etas,
            )
        except StationError as exc:
            self._settle(
                number, refused(exc, serial=job.serial, fixture=job.fixture, device=job.device, job=number)
            )
            return None

    def _start(self, number: int, job: UnitJob, admission: Admission, began: float) -> _Running | None:
        """Ask for a unit's worker (its pid is read by :meth:`_started`); None if it could not be asked for."""
        unit = admission.unit
        if admission.profile is not None and admission.profile is not job.profile:
            job = replace(job, profile=admission.profile)  # the work order's profile
        self._emit(
            FlowEvent(
                kind="unit_planned",
                serial=unit.serial,
                unit_id=unit.id,
                fixture=job.fixture,
                count=len(job.profile.step_names()),
                etas=dict(admission.etas),
                job=number,
            )
        )
        start = WorkerStart(
            job=number,
            admission=admission,
            profile=job.profile,
            config=self.config,
            home=self.home,
            identity_file=self._identity_file,
            ca_certificate_pem=self.ca.certificate_pem,
            stream_output=job.stream_output,
            memory_limit_bytes=self.memory_limit_bytes,
            parent_pid=os.getpid(),
            environment=worker_environment(),
            cwd=os.getcwd(),
            post_step_records=self.post_step_records,
            own_session=self.worker_own_session,
            autogroup_nice=self.worker_autogroup_nice,
        )
        ours, theirs = self._context.Pipe(duplex=True)
        process = worker_process(self._context, worker.main, (theirs, start), f"unit-{unit.serial}")
        running = _Running(
            number, job, unit.id, admission.plan, process, ours, began, time.monotonic() + WORKER_START_S
        )
        self._running[number] = running
        try:
            with clean_spawn():
                process.start()
        except OSError as exc:
            self._ended(running, f"the station could not start a worker for this unit ({exc}) — press Retry")
            return None
        finally:
            theirs.close()
        return running

    def _started(self, running: _Running) -> None:
        """A worker asked for by :meth:`_start`: its pid read (bounded), its priority lowered, and watched."""
        process = running.process
        try:
            finish_start(process)
        except OSError as exc:
            # No pid: nothing to signal.  Should the server fork it after all, the worker finds its pipe
            # closed (by _ended) and exits at once.
            self._ended(running, f"the station could not start a worker for this unit ({exc}) — press Retry")
            return
        _lower_priority(process.pid, self.worker_niceness)
        self._selector.register(running.connection, selectors.EVENT_READ, (running, False))
        self._selector.register(process.sentinel, selectors.EVENT_READ, (running, True))

    # -- a running unit -----------------------------------------------------------------------------

    def _receive(self, running: _Running) -> bool:
        """Read one message, when epoll said the pipe is readable (level-triggered: another message waiting
        makes the next select return at once).  No ``Connection.poll()`` here — it builds a selector per call,
        the engine thread's main cost in a burst; a worker writes each message whole, so this read does not
        wait for it.  False when there is nothing more to read (the worker's end is closed, or it is done)."""
        try:
            message = running.connection.recv()
        except (EOFError, OSError):
            # The worker closed its end: its sentinel (or the deadline) ends the slot.  Stop watching the pipe
            # now — at its end of file it stays readable, and until the fork server reports the exit (at 64
            # slots, milliseconds to tens of them) every round would find it ready and read nothing again.
            self._unwatch_pipe(running)
            return False
        running.reported = True
        if isinstance(message, Progress):
            self._progress(running, message.event)
        elif isinstance(message, Call):
            self._serve(running, message)
        elif isinstance(message, Done):
            # Its end is recorded; the process exits by itself (its sentinel ends the slot) — this
            # thread never waits for it, and one that lingers is terminated at the deadline.
            running.done, running.done_at = message, time.monotonic()
            running.deadline = running.done_at + WORKER_EXIT_S
            self._unwatch_pipe(running)  # its last message: what follows is only its end of file
            return False
        return True

    def _read_ready(self, running: _Running) -> None:
        """What a worker sent, when epoll said its pipe is readable: a message, then more while its pipe's own
        poll object (made once per unit: a ``poll(0)`` system call) says they are there — at most
        READ_BURST, so that a chatty worker does not keep the other slots waiting."""
        poller = running.poller
        if poller is None:
            poller = running.poller = select.poll()
            poller.register(running.connection.fileno(), select.POLLIN)
        for _ in range(READ_BURST):
            if not self._receive(running) or not poller.poll(0):
                return

    def _drain(self, running: _Running) -> None:
        """What an ended worker sent before it ended (its pipe may still be held open by nobody: poll first)."""
        try:
            while running.connection.poll() and self._receive(running):
                pass
        except (EOFError, OSError):
            pass

    def _progress(self, running: _Running, event: FlowEvent) -> None:
        now = time.monotonic()
        if event.kind == "step_started":
            running.step, running.attempt = event.step, event.attempt
            running.step_started_at = datetime.now(UTC)
            timeout = running.job.profile.policy(event.step).timeout_s
            running.deadline = now + timeout + self.step_grace_s
        elif event.kind == "step_finished":
            running.last_step, running.step = running.step or event.step, ""
            running.deadline = now + BETWEEN_STEPS_S
        if running.cancelled:
            running.deadline = min(running.deadline, now + CANCEL_DEADLINE_S)
        if running.done is not None:
            running.deadline = min(running.deadline, (running.done_at or now) + WORKER_EXIT_S)
        self._emit(replace(event, job=running.job_id, fixture=running.job.fixture))
