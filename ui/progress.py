"""The state of the unit on screen: each step's state and time, overall progress and time left.

Fed only with the core's :class:`~station.flow.FlowEvent` values and the audit history's per-step
medians (:class:`~ui.bridge.UnitPlan`); it holds no Qt objects, so it can be checked in isolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from station import display
from station.flow import FlowEvent
from station.states import StepOutcome, UnitState


class StepShows(StrEnum):
    """What a step's row says: how its last attempt ended (a :class:`~station.states.StepOutcome` word), or that it
    waits, runs, or was not run because the unit ended before it (keys of ui.style.STEP_STATES)."""

    WAITING = "waiting"
    RUNNING = "running"
    PASSED = StepOutcome.PASSED.value
    SKIPPED = StepOutcome.SKIPPED.value
    FAILED = StepOutcome.FAILED.value
    RETRYING = StepOutcome.RETRYING.value
    NOT_RUN = "not_run"
    # A unit re-attached by a window opened while it ran: its steps before the first one seen were over by then.
    EARLIER = "earlier"


DONE_STATES = frozenset({StepShows.PASSED, StepShows.SKIPPED, StepShows.EARLIER})
# A running step never shows as complete before its step_finished event arrives.
RUNNING_STEP_CAP = 0.95


@dataclass
class StepState:
    name: str
    title: str
    state: StepShows = StepShows.WAITING
    duration_s: float | None = None
    attempt: int = 1
    started_at: float | None = None
    eta_s: float | None = None
    message: str = ""


class UnitProgress:
    """Steps of the unit on screen, in the profile's order."""

    def __init__(self, steps: Sequence[tuple[str, str]]) -> None:
        self.steps = [StepState(name, title) for name, title in steps]
        self._by_name = {step.name: step for step in self.steps}
        self.current: StepState | None = None

    def step(self, name: str) -> StepState | None:
        return self._by_name.get(name)

    def plan(self, eta_s: dict[str, float | None]) -> None:
        for name, eta in eta_s.items():
            if name in self._by_name:
                self._by_name[name].eta_s = eta

    def over_before(self, name: str) -> None:
        """A unit watched from step ``name`` on (re-attached): the steps before it were over already."""
        for step in self.steps:
            if step.name == name:
                return
            if step.state == StepShows.WAITING:
                step.state = StepShows.EARLIER

    def reset_for_retry(self) -> None:
        """Keep what passed; everything else waits again (a resumed unit re-runs identify and guard)."""
        for step in self.steps:
            if step.state not in DONE_STATES:
                step.state, step.duration_s, step.message = StepShows.WAITING, None, ""
        self.current = None

    def apply(self, event: FlowEvent, now: float) -> StepState | None:
        """Take one event into account; return the step it changed, if any."""
        step = self._by_name.get(event.step)
        if step is None:
            return None
        if event.kind == "step_started":
            step.state, step.attempt, step.started_at = StepShows.RUNNING, event.attempt, now
            step.duration_s, step.message = None, ""
            if event.eta_s is not None:
                step.eta_s = event.eta_s
            self.current = step
        elif event.kind == "step_finished":
            step.state = StepShows(event.outcome) if event.outcome in tuple(StepOutcome) else StepShows.FAILED
            step.duration_s = event.duration_s
            step.message = event.message
            if self.current is step:
                self.current = None
        elif event.kind == "unit_finished" and event.outcome != UnitState.PASSED:
            # The step that ended the unit, if its own step_finished did not say so (a cancellation).
            if step.state in (StepShows.RUNNING, StepShows.WAITING, StepShows.RETRYING):
                step.state = StepShows.FAILED
                step.message = event.message
            self.current = None
        else:
            return None
        return step

    def finish(self, *, passed: bool) -> None:
        """The unit is over: a step still marked running did not finish; after a failure, the steps
        still waiting were not run (a Retry puts them back to waiting)."""
        for step in self.steps:
            if step.state in (StepShows.RUNNING, StepShows.RETRYING):
                step.state = StepShows.FAILED
            elif step.state == StepShows.WAITING and not passed:
                step.state = StepShows.NOT_RUN
        self.current = None

    def done_count(self) -> int:
        return sum(step.state in DONE_STATES for step in self.steps)

    def fraction(self, now: float) -> float:
        """0…1 of the unit done: finished steps, plus the running step's share of its usual time."""
        if not self.steps:
            return 0.0
        done = float(self.done_count())
        current = self.current
        if current is not None and current.started_at is not None and current.eta_s:
            done += min(RUNNING_STEP_CAP, (now - current.started_at) / current.eta_s)
        return min(1.0, done / len(self.steps))

    def remaining_s(self, now: float) -> float | None:
        """Seconds left, from the audit history's medians; None while any step still to run has no history."""
        total = 0.0
        for step in self.steps:
            if step.state in DONE_STATES or step.state in (StepShows.FAILED, StepShows.NOT_RUN):
                continue
            if step.eta_s is None:
                return None
            if step is self.current and step.started_at is not None:
                total += max(0.0, step.eta_s - (now - step.started_at))
            else:
                total += step.eta_s
        return total


def format_duration(seconds: float) -> str:
    """``42 s`` or ``3 min 05 s``, as the window shows running times (whole seconds: a tenth ticking is noise)."""
    return display.format_duration(seconds, decimals=0)
