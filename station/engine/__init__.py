"""The station's one engine: a slot scheduler running every unit in its own worker process.

`station provision`, `station batch`, the window's single-board page and its batch grid all submit
:class:`UnitJob`\\ s to a :class:`Scheduler` and watch the same :class:`~station.flow.FlowEvent` values;
every unit ends as one :class:`UnitOutcome`.

The names are loaded on first use: a unit's worker process imports :mod:`station.engine.worker` and
must not pay for the scheduler (or anything else it does not run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from station.lazy_names import lazy_names

if TYPE_CHECKING:
    from station.engine.outcome import Ending, UnitOutcome
    from station.engine.scheduler import CANCEL_DEADLINE_S, Scheduler, UnitJob
    from station.engine.selection import choose_profile, known_fixtures

__all__ = [
    "CANCEL_DEADLINE_S",
    "Ending",
    "Scheduler",
    "UnitJob",
    "UnitOutcome",
    "choose_profile",
    "known_fixtures",
]

_HOMES = {
    "Ending": "outcome",
    "UnitOutcome": "outcome",
    "CANCEL_DEADLINE_S": "scheduler",
    "Scheduler": "scheduler",
    "UnitJob": "scheduler",
    "choose_profile": "selection",
    "known_fixtures": "selection",
}


__getattr__ = lazy_names(__name__, _HOMES)
