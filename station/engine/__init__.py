"""The station's one engine: a slot scheduler running every unit in its own worker process.

`station provision`, `station batch`, the window's single-board page and its batch grid all submit
:class:`UnitJob`\\ s to a :class:`Scheduler` and watch the same :class:`~station.flow.FlowEvent` values;
every unit ends as one :class:`UnitOutcome`.
"""

from station.engine.outcome import Ending, UnitOutcome
from station.engine.scheduler import CANCEL_DEADLINE_S, Scheduler, UnitJob
from station.engine.selection import choose_profile, known_fixtures

__all__ = ["CANCEL_DEADLINE_S", "Ending", "Scheduler", "UnitJob", "UnitOutcome", "choose_profile", "known_fixtures"]
