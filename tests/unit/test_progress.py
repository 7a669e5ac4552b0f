"""The unit on screen follows the core's events: step states, overall progress and the time left
from the audit history's medians (plain Python, no Qt)."""

from __future__ import annotations

import pytest

from station.flow import FlowEvent
from ui.progress import UnitProgress

STEPS = [("identify", "Identify board"), ("wipe", "Wipe secure storage"), ("keygen", "Generate key")]


def event(kind: str, step: str, **fields: object) -> FlowEvent:
    return FlowEvent(kind=kind, serial="202600000000001", step=step, **fields)  # type: ignore[arg-type]


def test_progress_and_time_left_follow_the_steps():
    progress = UnitProgress(STEPS)
    assert progress.remaining_s(0) is None  # no history yet
    progress.plan({"identify": 1.0, "wipe": 2.0, "keygen": 10.0})
    assert progress.remaining_s(0) == 13.0
    progress.apply(event("step_started", "identify", eta_s=1.0), now=100.0)
    assert progress.step("identify").state == "running"
    assert progress.remaining_s(100.5) == pytest.approx(12.5)
    progress.apply(event("step_finished", "identify", outcome="passed", duration_s=0.8), now=100.8)
    progress.apply(event("step_started", "wipe"), now=100.8)
    assert progress.done_count() == 1
    assert progress.fraction(101.8) == pytest.approx((1 + 0.5) / 3)
    assert progress.fraction(1000) < 2 / 3  # a slow step never shows as done before it is
    assert progress.remaining_s(110) == pytest.approx(10.0)  # an overdue step counts as nearly done


def test_a_failed_step_and_a_retry_keep_what_passed():
    progress = UnitProgress(STEPS)
    progress.apply(event("step_started", "identify"), now=0)
    progress.apply(event("step_finished", "identify", outcome="passed", duration_s=1), now=1)
    progress.apply(event("step_started", "wipe"), now=1)
    progress.apply(event("step_finished", "wipe", outcome="failed", duration_s=1, message="no"), now=2)
    assert [s.state for s in progress.steps] == ["passed", "failed", "waiting"]
    progress.finish(passed=False)
    assert [s.state for s in progress.steps] == ["passed", "failed", "not_run"]
    progress.reset_for_retry()
    assert [s.state for s in progress.steps] == ["passed", "waiting", "waiting"]


def test_a_cancelled_step_without_its_own_finish_is_marked_failed():
    progress = UnitProgress(STEPS)
    progress.apply(event("step_started", "keygen"), now=0)
    progress.apply(
        event("unit_finished", "keygen", outcome="failed", message="cancelled by the operator"), now=1
    )
    assert progress.step("keygen").state == "failed"
    progress.finish(passed=False)
    assert progress.current is None
    assert [s.state for s in progress.steps] == ["not_run", "not_run", "failed"]
