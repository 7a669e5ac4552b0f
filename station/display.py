"""How the station writes a duration or a share for a person — one wording in the CLI, the window and reports.

``42.0 s``, ``3 min 05 s``, ``2 h 07 min``; ``97.5 %``; ``—`` for a value that does not exist (no unit finished
yet).  The live step timer uses whole seconds (``42 s``: a tenth ticking by is noise), everything recorded a
tenth of a second.
"""

from __future__ import annotations

NONE = "—"


def format_duration(seconds: float | None, *, decimals: int = 1) -> str:
    """``42.0 s`` under a minute (``decimals`` places), ``3 min 05 s`` under an hour, then ``2 h 07 min``."""
    if seconds is None:
        return NONE
    seconds = max(0.0, seconds)
    if round(seconds, decimals) < 60:
        return f"{seconds:.{decimals}f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_percent(share: float | None, *, decimals: int = 1) -> str:
    """A share of 1 as a percentage: ``0.975`` → ``97.5 %``."""
    return NONE if share is None else f"{share * 100:.{decimals}f} %"
