"""How a unit leaves its slot: deadlines enforced (its worker terminated, not asked), cancels, a dead
worker's unit recorded failed and resumable, the outcome settled and announced."""

from __future__ import annotations

import selectors
import threading
import time
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime

from station.engine.calls import UnitCalls
from station.engine.outcome import Ending, UnitOutcome, finished
from station.engine.protocol import Cancel
from station.engine.slots import (
    BETWEEN_STEPS_S,
    CANCEL_DEADLINE_S,
    WORKER_EXIT_S,
    WORKER_START_S,
    Observer,
    UnitJob,
    _Running,
)
from station.errors import StationError
from station.flow import Admission, FlowEvent
from station.line.handoff import LineHandOff
from station.states import StepOutcome, UnitState
from station.steps import STEPS


class UnitEndings(UnitCalls):
    """The part of :class:`~station.engine.scheduler.Scheduler` that ends units."""

    observer: Observer
    line: LineHandOff | None
    step_grace_s: float
    _queues: dict[str, deque[tuple[int, UnitJob]]]
    _outcomes: dict[int, UnitOutcome]
    _changed: threading.Condition
    _selector: selectors.BaseSelector

    def _enforce_deadlines(self, close_by: float | None) -> None:
        now = time.monotonic()
        for running in list(self._running.values()):
            if close_by is not None and now >= close_by:
                self._terminate(
                    running, "the station closed before this unit stopped — press Retry to continue it"
                )
            elif now >= running.deadline:
                if running.done is not None:
                    if running.process.is_alive():
                        running.process.kill()
                    running.process.join(WORKER_EXIT_S)
                    self._ended(running, running.done.problem)
                    continue
                if running.cancelled:
                    reason = (
                        f"the unit did not stop within {CANCEL_DEADLINE_S:g} s of being cancelled; the station "
                        "terminated its worker — press Retry to continue it"
                    )
                elif running.step:
                    timeout = running.job.profile.policy(running.step).timeout_s
                    title = STEPS[running.step].title if running.step in STEPS else running.step
                    reason = (
                        f"step {title} did not end within its deadline of {timeout:g} s (+{self.step_grace_s:g} "
                        "s); the station terminated the unit's worker — check the board, then press Retry"
                    )
                elif not running.reported:
                    reason = (
                        f"the unit's worker did not start within {WORKER_START_S:g} s; the station terminated "
                        "it — the station's computer may be overloaded; press Retry"
                    )
                else:
                    reason = (
                        f"the unit made no progress for {BETWEEN_STEPS_S:g} s; the station terminated its "
                        "worker — check the board, then press Retry"
                    )
                self._terminate(running, reason)

    def _ask_to_stop(self, running: _Running) -> None:
        if running.cancelled:
            return
        running.cancelled = True
        running.deadline = min(running.deadline, time.monotonic() + CANCEL_DEADLINE_S)
        self._send(running, Cancel())

    def _cancel_one(self, number: int) -> None:
        running = self._running.get(number)
        if running is not None:
            self._ask_to_stop(running)
            return
        for device, jobs in self._queues.items():
            for entry in list(jobs):
                if entry[0] == number:
                    jobs.remove(entry)
                    job = entry[1]
                    self._settle(
                        number,
                        UnitOutcome(
                            Ending.NOT_STARTED,
                            job.serial,
                            "cancelled before it started",
                            fixture=job.fixture,
                            device=device,
                            job=number,
                        ),
                    )
                    return

    def _drop_queued(self, message: str) -> None:
        queues, self._queues = self._queues, {}
        for device, jobs in queues.items():
            for number, job in jobs:
                self._settle(
                    number,
                    UnitOutcome(
                        Ending.NOT_STARTED,
                        job.serial,
                        message,
                        fixture=job.fixture,
                        device=device,
                        job=number,
                    ),
                )

    # -- ending ---------------------------------------------------------------------------------------

    def _not_started(self, number: int, job: UnitJob, admission: Admission, problem: str) -> None:
        """An admitted unit whose start could not be made durable: failed (resumable), its board untouched."""
        assert self._audit is not None
        unit = admission.unit
        step = admission.plan[0] if admission.plan else "identify"
        try:
            self._audit.finish_unit(unit.id, result="failed", failed_step=step, message=problem)
        except StationError:
            pass  # the log is unavailable: the outcome says so; a resume finds the unit running or failed
        self._settle(
            number,
            UnitOutcome(
                Ending.FAILED,
                job.serial,
                problem,
                unit_id=unit.id,
                failed_step=step,
                resumable=True,
                fixture=job.fixture,
                device=job.device,
                job=number,
            ),
        )

    def _death_reason(self, running: _Running) -> str:
        code = running.process.exitcode
        how = (
            f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        )
        where = f" during step {STEPS[running.step].title}" if running.step in STEPS else ""
        return (
            f"the unit's worker process {how}{where} — the station recorded the unit as failed; press Retry "
            "to continue it"
        )

    def _terminate(self, running: _Running, reason: str) -> None:
        """Stop a worker now (SIGKILL: it is not asked) and record its unit failed and resumable."""
        if running.process.is_alive():
            running.process.kill()
        running.process.join(WORKER_EXIT_S)
        self._ended(running, reason)

    def _ended(self, running: _Running, reason: str) -> None:
        """Take a unit off its slot; if its worker left it running in the log, record it failed (resumable)."""
        assert self._audit is not None
        reason = (
            reason or "the unit's worker ended without recording the unit's end — press Retry to continue it"
        )
        with running.serve_lock:  # a call the desk is serving for it ends first; later ones are refused
            self._running.pop(running.job_id, None)
        self._unwatch(running)
        with running.send_lock:  # never while the service desk sends on it (its descriptor could be reused)
            running.connection.close()
        for port in running.tls_ports:
            self._tls.result(port, 0.0)
        job = running.job
        try:
            self._record_left_running(running, reason)
            self._hand_off(running.unit_id)
            ended = running.done_at or time.monotonic()
            outcome = finished(
                self._audit,
                running.unit_id,
                serial=job.serial,
                fixture=job.fixture,
                device=job.device,
                duration_s=ended - running.began,
                device_s=running.done.device_s if running.done is not None else 0.0,
                job=running.job_id,
            )
            if running.done is not None:
                outcome = replace(outcome, service_s=running.done.service_s, worker_cpu_s=running.done.cpu_s)
        except StationError as exc:
            outcome = UnitOutcome(
                Ending.FAILED,
                job.serial,
                f"{reason} (and it could not be recorded: {exc})",
                unit_id=running.unit_id,
                failed_step=running.step or None,
                resumable=True,
                fixture=job.fixture,
                device=job.device,
                job=running.job_id,
            )
        self._settle(running.job_id, outcome)

    def _record_left_running(self, running: _Running, reason: str) -> None:
        """A unit its worker left running in the log: its step (if one was under way) and the unit recorded
        failed, resumable, with ``reason``."""
        assert self._audit is not None
        job = running.job
        unit = self._audit.unit(running.unit_id)
        if unit.state == UnitState.RUNNING:
            step = running.step or running.last_step or (running.plan[0] if running.plan else "identify")
            if running.step:
                started = running.step_started_at or datetime.now(UTC)
                self._audit.record_step(
                    unit.id,
                    step=step,
                    attempt=running.attempt,
                    outcome=StepOutcome.FAILED,
                    started_at=started,
                    ended_at=datetime.now(UTC),
                    message=reason,
                )
                self._emit(
                    FlowEvent(
                        kind="step_finished",
                        serial=job.serial,
                        unit_id=unit.id,
                        step=step,
                        title=STEPS[step].title if step in STEPS else step,
                        outcome=StepOutcome.FAILED,
                        attempt=running.attempt,
                        message=reason,
                        fixture=job.fixture,
                        job=running.job_id,
                    )
                )
            self._audit.finish_unit(unit.id, result=UnitState.FAILED, failed_step=step, message=reason)

    def _unwatch(self, running: _Running) -> None:
        """Stop waiting on a unit's pipe and sentinel (before either closes)."""
        self._unwatch_pipe(running)
        try:
            self._selector.unregister(running.process.sentinel)
        except (KeyError, ValueError):
            pass  # never watched: its worker did not start

    def _unwatch_pipe(self, running: _Running) -> None:
        """Stop waiting on a unit's pipe: it sent its last message, or its end is closed."""
        try:
            self._selector.unregister(running.connection)
        except (KeyError, ValueError):
            pass  # never watched (its worker did not start), or no longer

    def _hand_off(self, unit_id: int) -> None:
        """The unit's end is recorded: hand it to the line (label on PASS, MES record), without waiting."""
        assert self._audit is not None
        if self.line is None:
            return
        try:
            self.line.unit_finished(self._audit.unit(unit_id))
        except Exception:  # noqa: BLE001 - the unit is recorded; the hand-off reports its own problems
            pass

    def _settle(self, number: int, outcome: UnitOutcome) -> None:
        self._emit(
            FlowEvent(
                kind="unit_finished",
                serial=outcome.serial,
                unit_id=outcome.unit_id,
                step=outcome.failed_step or "",
                outcome=str(outcome.kind),
                message=outcome.message,
                fixture=outcome.fixture,
                duration_s=outcome.duration_s,
                job=number,
                result=outcome,
            )
        )
        with self._changed:
            self._outcomes[number] = outcome
            self._changed.notify_all()

    def _emit(self, event: FlowEvent) -> None:
        try:
            self.observer(event)
        except Exception:  # noqa: BLE001 - a broken watcher must never break a unit
            pass
