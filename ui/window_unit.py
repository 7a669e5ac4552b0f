"""A unit on the single-board page, while it runs and once it ended: its steps, clock, device log and verdict
(a part of :class:`ui.main_window.MainWindow`).

It also shows a unit that runs in the station service without this window having started it — the window was
closed or killed and reopened, say: the page follows it live (Esc aborts it) while its Batch tile does too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from station.flow import FlowEvent
from station.masking import Masker
from station.states import StepOutcome, UnitState
from station.steps import STEPS
from ui.bridge import Ending, UnitOutcome, UnitPlan, UnitRequest
from ui.progress import UnitProgress, format_duration

if TYPE_CHECKING:
    from ui.main_window import MainWindow

_duration = format_duration


class UnitViewMixin:
    """The single-board page's unit (started here, or re-attached)."""

    def _start(self: MainWindow, request: UnitRequest) -> None:
        self._mirrored_job = None  # the page shows this unit now, not one re-attached
        same_board = (
            self.progress is not None and self.request is not None and self.request.serial == request.serial
        )
        self.request = request
        self.outcome = None
        self._masker = Masker(request.profile.secrets)
        if request.resume and same_board and self.progress is not None:
            self.progress.reset_for_retry()
        else:
            self.progress = UnitProgress([(name, STEPS[name].title) for name in request.profile.step_names()])
            self.log.clear()
        self.steps.set_steps(self.progress.steps)
        self.sheet = None
        self.label_preview.show_sheet(None)
        verb = "Resuming" if request.resume else "Provisioning"
        self.result.show_state(
            "running",
            f"{verb} board {request.serial} on fixture {request.fixture.name}…",
            "watch the steps; press Esc to abort.",
        )
        self._append_log(
            f"━━ {verb} {request.serial} on {request.fixture.name} ({request.fixture.device}), "
            f"profile {request.profile.name}, operator {request.operator}"
        )
        self._unit_began = time.monotonic()
        self._unit_active = True
        self._feedback(f"{verb.lower()} board {request.serial} on fixture {request.fixture.name}", ok=True)
        self.runner.start(request)
        self._tick.start()
        self._refresh_running()
        self._update_buttons()

    def _on_plan(self: MainWindow, plan: UnitPlan) -> None:
        if self.progress is None:
            return
        self.progress.plan(plan.eta_s)
        for step in self.progress.steps:
            self.steps.show_step(step)
        self._refresh_running()

    def _on_event(self: MainWindow, event: FlowEvent) -> None:
        if self.progress is None:
            return
        changed = self.progress.apply(event, time.monotonic())
        if changed is not None:
            self.steps.show_step(changed)
        if event.kind == "unit_started":
            self._append_log(f"unit {event.unit_id}: {event.message}")
        elif event.kind == "step_started":
            usual = f" (usually {event.eta_s:.1f} s)" if event.eta_s else ""
            retry = f" — try {event.attempt}" if event.attempt > 1 else ""
            self._append_log(f"▶ [{event.index + 1}/{event.count}] {event.title}{usual}{retry}")
            if self.result.state == UnitState.RUNNING:
                self.result.detail.setText(
                    f"Board {event.serial}: step {event.index + 1} of {event.count}, {event.title}."
                )
        elif event.kind == "output":
            self._append_log(event.message)
        elif event.kind == "step_finished":
            line = f"  {event.outcome} in {event.duration_s:.2f} s"
            if event.outcome != StepOutcome.PASSED and event.message:
                line += f": {event.message.strip().splitlines()[-1]}"
            self._append_log(line)

    def _refresh_running(self: MainWindow) -> None:
        progress = self.progress
        if progress is None:
            return
        now = time.monotonic()
        self.progress_bar.setValue(round(progress.fraction(now) * 1000))
        self.progress_bar.setFormat(f"{progress.done_count()} of {len(progress.steps)} steps")
        if not self.runner.running and self._mirrored_job is None:
            self.eta_label.setText("")
            return
        if progress.current is not None and progress.current.started_at is not None:
            self.steps.show_running_time(progress.current, now - progress.current.started_at)
        left = progress.remaining_s(now)
        self.eta_label.setText(
            "Time left: learning (no history yet)" if left is None else f"About {_duration(left)} left"
        )

    def _on_finished(self: MainWindow, outcome: UnitOutcome) -> None:
        self._unit_active = False
        self._mirrored_job = None
        self._tick.stop()
        self.outcome = outcome
        if self.progress is not None:
            self.progress.finish(passed=outcome.kind == Ending.PASSED)
            for step in self.progress.steps:
                self.steps.show_step(step)
        self._refresh_running()
        self.eta_label.setText(f"Took {_duration(time.monotonic() - self._unit_began)}")
        message = self._masker(outcome.message)
        self._show_verdict(outcome, message)
        self._append_log(f"━━ {outcome.kind.upper()}: {message}")
        if outcome.kind == Ending.PASSED:
            self._feedback(f"board {outcome.serial} passed — label it, then scan the next board", ok=True)
        else:
            self._feedback(
                f"board {outcome.serial} did not pass — the reason is on the right", ok=False, mark="✗"
            )
        self.serial = None
        self.scan.selectAll()
        self._update_buttons()
        if not self._closing:
            self.focus_scan()
        self.unit_finished.emit(outcome)

    def _show_verdict(self: MainWindow, outcome: UnitOutcome, message: str) -> None:
        """The result panel: passed (and its label), refused (why; Retry if resumable), or failed (where, and
        what to do next)."""
        if outcome.kind == Ending.PASSED:
            self.result.show_state(
                "passed",
                f"Board {outcome.serial} is enrolled (unit {outcome.unit_id}).",
                "stick the label on the board, then scan the next board.",
            )
            self._show_label(outcome)
            return
        if outcome.kind == Ending.REFUSED:
            next_step = (
                "press Retry (F5) to continue this board's unfinished unit from where it failed."
                if outcome.resumable
                else "nothing was done to the board; fix the cause, then scan again."
            )
            if outcome.resumable and self.request is not None:
                self.request = UnitRequest(
                    outcome.serial,
                    self.request.fixture,
                    self.request.profile,
                    self.request.operator,
                    resume=True,
                )
            self.result.show_state("refused", message, next_step)
            return
        where = ""
        if outcome.failed_step in STEPS and self.request is not None:
            names = self.request.profile.step_names()
            index = names.index(outcome.failed_step) + 1 if outcome.failed_step in names else 0
            where = f"Failed at step {index} of {len(names)}, {STEPS[outcome.failed_step].title}: "
        resume_from = STEPS[outcome.failed_step].resume_from if outcome.failed_step in STEPS else None
        again = f" — it continues from “{STEPS[resume_from].title}”" if resume_from in STEPS else ""
        next_step = (
            f"do what the message says, then press Retry (F5){again}. "
            "To give up on this board, set it aside and scan the next one."
        )
        self.result.show_state(
            "failed",
            where + message,
            next_step
            if outcome.resumable
            else "set the board aside and call the line engineer with this message.",
        )

    def _append_log(self: MainWindow, text: str) -> None:
        # The core masks device output already; a second pass guards against any PIN that slipped through.
        bar = self.log.verticalScrollBar()
        following = bar.value() >= bar.maximum() - 2
        self.log.appendPlainText(self._masker(text.rstrip("\n")))
        if following:  # keep showing the newest line, unless the technician scrolled back to read
            bar.setValue(bar.maximum())

    # -- a unit re-attached (running in the service, started elsewhere) ------------------------------------

    def _mirror_foreign(self: MainWindow, event: FlowEvent) -> None:
        """A unit this window did not start runs in the service: while the page is idle, it shows that unit
        too (its Batch tile follows it as well), with its steps, log and verdict."""
        if (
            self._closing
            or self._mirrored_job is not None
            or self.runner.running
            or self._unit_active
            or event.kind in ("output", "unit_finished")
        ):
            return
        fixture = next((f for f in self.session.fixtures.fixtures if f.name == event.fixture), None)
        if fixture is None:
            return
        try:
            profile = self.session.profile_for(fixture)
        except Exception:  # noqa: BLE001 - a profile the window cannot read: the tile alone shows the unit
            return
        self._mirrored_job = event.job
        self.select_fixture(fixture.name)
        self.request = UnitRequest(event.serial, fixture, profile, self.operator or "")
        self.outcome = None
        self.sheet = None
        self.label_preview.show_sheet(None)
        self._masker = Masker(profile.secrets)
        self.progress = UnitProgress([(name, STEPS[name].title) for name in profile.step_names()])
        self.steps.set_steps(self.progress.steps)
        self.log.clear()
        self.result.show_state(
            "running",
            f"Board {event.serial} on fixture {fixture.name} is being provisioned in the station service "
            "(started before this window opened)…",
            "watch the steps here or on its Batch tile; press Esc to abort it.",
        )
        self._append_log(
            f"━━ re-attached: board {event.serial} on {fixture.name}, running in the station service"
        )
        self._unit_began = time.monotonic()
        if event.step:
            self.progress.over_before(event.step)
            self.steps.set_steps(self.progress.steps)
        self._on_event(event)
        self._tick.start()
        self._refresh_running()
        self._update_buttons()

    def _mirrored_event(self: MainWindow, event: FlowEvent) -> None:
        """Every unit's event (Engine.delivered): those of the re-attached unit the page shows."""
        if self._mirrored_job is None or event.job != self._mirrored_job:
            return
        if event.kind == "unit_finished":
            if event.result is not None:
                self._on_finished(event.result)
            else:
                self._mirrored_job = None
                self._tick.stop()
                self._update_buttons()
        elif event.kind != "unit_planned":
            self._on_event(event)
