"""Yield and step-duration statistics (quantiles, histograms) over the units a filter selects."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from station.audit.core import AuditCore
from station.audit.queries import _unit_filter, _where
from station.audit.records import UnitFilter, _parse_optional_time
from station.states import StepOutcome, UnitState

if TYPE_CHECKING:
    # Imported where a connection is made: a unit's worker process uses this module's records, not SQLite.
    import sqlite_utils


# The step whose duration distribution the yield summary reports: key generation on the token is the slow,
# hardware-bound step whose drift shows a failing batch of boards first.
KEYGEN_STEP = "keygen"
DURATION_QUANTILES = (0.5, 0.9, 0.95, 0.99)
DURATION_HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class HistogramBin:
    """Values ``low <= v < high`` (the last bin also holds ``high``) and how many there were."""

    low: float
    high: float
    count: int


@dataclass(frozen=True)
class DurationStats:
    """The distribution of one step's durations in seconds; every figure is None when there are none."""

    count: int
    min_s: float | None
    max_s: float | None
    mean_s: float | None
    # (p, value): nearest-rank quantiles, value = the ceil(p·count)-th smallest duration.
    quantiles: tuple[tuple[float, float], ...]
    histogram: tuple[HistogramBin, ...]

    def quantile(self, p: float) -> float | None:
        return dict(self.quantiles).get(p)


@dataclass(frozen=True)
class YieldSummary:
    """How a batch or a period went.

    Counts are of units (attempts to enrol a board) started in the period. A *superseded* unit counts as passed:
    only a passed unit can be superseded, by a later re-provisioning of its board. Rates are over *finished*
    units: a unit still running has no result yet, and counting it as "not passed" would make a live batch's
    yield drop by the number of boards on the fixtures.
    """

    since: datetime | None
    until: datetime | None
    batch: str | None
    units: int
    running: int
    passed: int
    passed_first_attempt: int
    failed: int
    aborted: int
    superseded: int
    # When the first and the last of these units started; None when there are none.
    first_started: datetime | None
    last_started: datetime | None
    # Failed attempts by the step that failed them, most first — including attempts later resumed or restarted.
    failures_by_step: tuple[tuple[str, int], ...]
    keygen: DurationStats

    @property
    def finished(self) -> int:
        return self.units - self.running

    @property
    def pass_rate(self) -> float | None:
        """Passed units / finished units; None when none has finished."""
        return self.passed / self.finished if self.finished else None

    @property
    def first_pass_yield(self) -> float | None:
        """Units that passed at their first attempt (never resumed) / finished units; None when none finished."""
        return self.passed_first_attempt / self.finished if self.finished else None


# ---------------------------------------------------------------------------------------------- errors


def _duration_stats(
    db: sqlite_utils.Database, *, step: str, in_scope: str, params: dict[str, Any]
) -> DurationStats:
    """Count, range, mean, nearest-rank quantiles and a histogram of the passed runs of ``step``.

    SQLite groups the durations by millisecond — a few thousand distinct values however many runs there were —
    and every figure is computed from those groups in one pass, exactly.
    """
    # julianday() keeps milliseconds, which is all a duration in a report needs; rounding to them also keeps
    # float noise (29.99999 for 30 s) from moving a duration into the bin below.
    groups = [
        (float(value), int(count))
        for value, count in db.execute(
            "SELECT round((julianday(s.ended_at) - julianday(s.started_at)) * 86400.0, 3) AS d, count(*) "
            "FROM steps AS s WHERE s.step = :duration_step AND s.outcome = :outcome_passed"
            + in_scope
            + " GROUP BY d ORDER BY d",
            {**params, "duration_step": step, "outcome_passed": StepOutcome.PASSED.value},
        ).fetchall()
    ]
    return duration_stats(groups)


def duration_stats(groups: list[tuple[float, int]]) -> DurationStats:
    """The figures of durations given as (seconds, how many) sorted by seconds — shared by the local log and the
    fleet (station.fleet.queries), so that both scopes compute quantiles and histogram bins the same way."""
    count = sum(n for _, n in groups)
    if not count:
        return DurationStats(0, None, None, None, (), ())
    low, high = groups[0][0], groups[-1][0]
    ranks = {p: max(1, math.ceil(p * count)) for p in DURATION_QUANTILES}
    found: dict[float, float] = {}
    seen = 0
    for value, n in groups:
        seen += n
        for p, rank in ranks.items():
            if p not in found and seen >= rank:
                found[p] = value
    width, first = _histogram_grid(low, high, DURATION_HISTOGRAM_BINS)
    bins = max(1, math.ceil((high - first) / width - 1e-9))
    counts = [0] * bins
    for value, n in groups:
        # The epsilon keeps a value on a bin edge in the bin that starts there; the top edge joins the last bin.
        counts[min(max(int((value - first) / width + 1e-9), 0), bins - 1)] += n
    return DurationStats(
        count=count,
        min_s=round(low, 3),
        max_s=round(high, 3),
        mean_s=round(sum(value * n for value, n in groups) / count, 3),
        quantiles=tuple((p, round(found[p], 3)) for p in DURATION_QUANTILES),
        histogram=tuple(
            HistogramBin(
                low=round(first + i * width, 6), high=round(first + (i + 1) * width, 6), count=counts[i]
            )
            for i in range(bins)
        ),
    )


def _histogram_grid(low: float, high: float, bins: int) -> tuple[float, float]:
    """A round bin width (1, 2, 2.5 or 5 × 10^k) giving at most ``bins`` bins, and the first bin's start."""
    span = high - low
    if span <= 0:
        width = 10 ** math.floor(math.log10(abs(low))) if low else 1.0
        return width, math.floor(low / width) * width
    raw = span / bins
    magnitude = 10 ** math.floor(math.log10(raw))
    width = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / width) * width
    # Snapping the start down can spill one bin over; the next round width fits.
    if math.ceil((high - first) / width - 1e-9) > bins:
        width = next(m * magnitude for m in (2, 2.5, 5, 10, 20) if m * magnitude > width)
        first = math.floor(low / width) * width
    return width, first


class YieldStats(AuditCore):
    """The yield summary (part of :class:`~station.audit.AuditLog`)."""

    # ----------------------------------------------------------------------------------------- yield

    def yield_summary(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        batch: str | None = None,
        order: str | None = None,
    ) -> YieldSummary:
        """How the units started in ``[since, until)`` (and of ``batch``, if given) went; see YieldSummary.

        Everything is counted in SQL, on its own connection and snapshot, so a summary of a million units
        neither loads them into memory nor holds up the workers writing meanwhile.
        """
        clauses, params = _unit_filter(UnitFilter(batch=batch, since=since, until=until, order=order))
        # Steps are narrowed to the units in scope with IN (subquery), not a join: SQLite then either probes
        # the steps index per unit id or checks ids against a list, and never scans steps once per unit.
        in_scope = f" AND s.unit_id IN (SELECT u.id FROM units AS u{_where(clauses)})" if clauses else ""
        with self._snapshot() as db:
            groups = db.execute(
                "SELECT u.state, u.attempt, count(*), min(u.started_at), max(u.started_at) FROM units AS u"
                + _where(clauses)
                + " GROUP BY u.state, u.attempt",
                params,
            ).fetchall()
            failures = db.execute(
                "SELECT s.step, count(*) FROM steps AS s WHERE s.outcome = :outcome_failed"
                + in_scope
                + " GROUP BY s.step ORDER BY count(*) DESC, s.step",
                {**params, "outcome_failed": StepOutcome.FAILED.value},
            ).fetchall()
            keygen = _duration_stats(db, step=KEYGEN_STEP, in_scope=in_scope, params=params)
        by_state: dict[str, int] = {}
        first_attempt_passes = 0
        for state, attempt, count, _first, _last in groups:
            by_state[state] = by_state.get(state, 0) + int(count)
            if state in (UnitState.PASSED, UnitState.SUPERSEDED) and attempt == 1:
                first_attempt_passes += int(count)
        starts = [group[3] for group in groups] + [group[4] for group in groups]
        return YieldSummary(
            since=since,
            until=until,
            batch=batch,
            units=sum(by_state.values()),
            running=by_state.get(UnitState.RUNNING, 0),
            passed=by_state.get(UnitState.PASSED, 0) + by_state.get(UnitState.SUPERSEDED, 0),
            passed_first_attempt=first_attempt_passes,
            failed=by_state.get(UnitState.FAILED, 0),
            aborted=by_state.get(UnitState.ABORTED, 0),
            superseded=by_state.get(UnitState.SUPERSEDED, 0),
            first_started=_parse_optional_time(min(starts)) if starts else None,
            last_started=_parse_optional_time(max(starts)) if starts else None,
            failures_by_step=tuple((str(step), int(count)) for step, count in failures),
            keygen=keygen,
        )
