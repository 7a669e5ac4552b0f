"""Upper time bounds in tests: only ever a deadline under test, and then said so.

A test may assert that something gave up or stopped *within its deadline* — that is the product's promise
("every blocking call has a deadline").  It never asserts speed (that is measured in bench/).  The bound is the
deadline under test plus a named slack for the station's own work on a loaded two-core machine.
"""

from __future__ import annotations

import time

# The station's own work around a deadline (reading what arrived, closing, recording), on a loaded machine.
DEADLINE_SLACK_S = 1.0


def assert_within_deadline(
    started: float, deadline_s: float, what: str, *, slack_s: float = DEADLINE_SLACK_S
) -> None:
    """``what`` (started at ``time.monotonic()`` == ``started``) ended within ``deadline_s`` plus the slack."""
    took = time.monotonic() - started
    assert took < deadline_s + slack_s, f"{what} took {took:.2f} s; its deadline is {deadline_s:g} s"
