"""The words a unit, a step attempt, a progress event and a batch slot can be in — as types.

Each member *is* its word (``UnitState.PASSED == "passed"``, a ``str``): the audit log's columns, the exports,
the engine's messages and the GUI's style sheets keep exactly the strings they had, while code compares
against a name that mypy checks instead of a string literal it cannot.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class UnitState(StrEnum):
    """Where a unit (one attempt to enrol one board) stands in the audit log (``units.state``)."""

    RUNNING = "running"
    PASSED = "passed"
    # Resumable: Retry (``--resume``) continues it from its failed step's resume point.
    FAILED = "failed"
    # The station refused to go on with the board (a changed host key, a board not this serial's).
    ABORTED = "aborted"
    # A passed unit replaced by a re-provisioning of the same board.
    SUPERSEDED = "superseded"


# A unit that --resume may take over: it failed, or a crash left it running.
RESUMABLE_UNIT_STATES = frozenset({UnitState.FAILED, UnitState.RUNNING})


class StepOutcome(StrEnum):
    """How one attempt of one step ended (``steps.outcome``)."""

    PASSED = "passed"
    FAILED = "failed"
    # Failed in a way that may be transient (a lost link, a deadline): tried again.
    RETRYING = "retrying"
    # The step does not apply to this board (the TLS proof of a serial-only board).
    SKIPPED = "skipped"


# What a unit reports while it runs (station.flow.FlowEvent.kind).  A Literal, not an enum: the engine and the
# GUI build and compare these as plain words, and mypy --strict (strict equality) still refuses a misspelt one.
EventKind = Literal[
    "unit_planned", "unit_started", "step_started", "output", "step_finished", "unit_finished"
]


class SlotState(StrEnum):
    """A fixture of the batch grid, and the board on it."""

    EMPTY = "empty"
    # A serial was scanned: the unit waits for its turn.
    READY = "ready"
    RUNNING = "running"
    # Abort was pressed: the unit is being stopped.
    STOPPING = "stopping"
    PASSED = "passed"
    FAILED = "failed"
    # The unit never started (bad input, a board already passed, one active elsewhere).
    REFUSED = "refused"
