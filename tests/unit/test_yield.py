"""How a batch went, in figures a quality lead can check by hand — and the paged queries the audit view browses.

Every expected number below is worked out from the units written in the fixture, not read back from the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from station.audit import AuditLog, HistogramBin, UnitFilter
from tests.helpers.audit import Clock, start

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAY2 = T0 + timedelta(days=1)


def step(
    log: AuditLog, clock: Clock, unit_id: int, name: str, seconds: float, outcome: str = "passed"
) -> None:
    began = clock()
    clock.advance(seconds=seconds)
    log.record_step(unit_id, step=name, attempt=1, outcome=outcome, started_at=began, ended_at=clock())


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    """Batch B-17 on day 1 (seven boards, one of them enrolled twice), batch B-18 on day 2 (one board).

    B-17, unit by unit:
      1 passed first time, keygen 10 s          5 aborted: wipe failed, then restarted (unit 6)
      2 passed first time, keygen 20 s          6 same board, passed first time, keygen 30 s ... superseded
      3 keygen failed, resumed, passed (att. 2)    later by unit 8 (a re-provisioning, still running, keygen 50 s)
        keygen 25 s on the second attempt       7 still running, keygen 40 s
      4 passed keygen 45 s, push failed, failed
    """
    clock = Clock(T0)
    with AuditLog(tmp_path / "audit.db", clock=clock) as audit:
        batch = {"batch": "B-17"}

        u1 = start(audit, "S1", **batch)
        step(audit, clock, u1.id, "keygen", 10)
        audit.finish_unit(u1.id, result="passed")

        u2 = start(audit, "S2", **batch)
        step(audit, clock, u2.id, "keygen", 20)
        audit.finish_unit(u2.id, result="passed")

        u3 = start(audit, "S3", **batch)
        step(audit, clock, u3.id, "keygen", 3, outcome="failed")
        audit.finish_unit(u3.id, result="failed", failed_step="keygen")
        audit.resume_unit(u3.id)
        step(audit, clock, u3.id, "keygen", 25)
        audit.finish_unit(u3.id, result="passed")

        u4 = start(audit, "S4", **batch)
        step(audit, clock, u4.id, "keygen", 45)
        step(audit, clock, u4.id, "push", 1, outcome="failed")
        audit.finish_unit(u4.id, result="failed", failed_step="push")

        u5 = start(audit, "S5", **batch)
        step(audit, clock, u5.id, "wipe", 2, outcome="failed")
        audit.finish_unit(u5.id, result="failed", failed_step="wipe")
        audit.finish_unit(u5.id, result="aborted", message="restarted from the first step")

        u6 = start(audit, "S5", **batch)
        step(audit, clock, u6.id, "keygen", 30)
        audit.finish_unit(u6.id, result="passed")

        u7 = start(audit, "S7", **batch)
        step(audit, clock, u7.id, "keygen", 40)

        u8 = start(audit, "S5", reprovision_reason="rework", **batch)
        step(audit, clock, u8.id, "keygen", 50)

        clock.now = DAY2
        u9 = start(audit, "S9", batch="B-18", operator="bob", fixture="slot-2")
        step(audit, clock, u9.id, "keygen", 99)
        step(audit, clock, u9.id, "tls_proof", 1, outcome="failed")
        audit.finish_unit(u9.id, result="failed", failed_step="tls_proof")
        yield audit


def test_the_yield_of_a_batch_adds_up_by_hand(log: AuditLog) -> None:
    summary = log.yield_summary(batch="B-17")

    assert (summary.units, summary.running, summary.finished) == (8, 2, 6)
    # Passed: units 1, 2, 3 and 6 (superseded later, but it passed). First time: 1, 2 and 6.
    assert (summary.passed, summary.passed_first_attempt, summary.superseded) == (4, 3, 1)
    assert (summary.failed, summary.aborted) == (1, 1)
    assert summary.pass_rate == pytest.approx(4 / 6)
    assert summary.first_pass_yield == pytest.approx(3 / 6)
    # Every failed attempt counts, also unit 3's keygen that a resume later fixed; most first, then by name.
    assert summary.failures_by_step == (("keygen", 1), ("push", 1), ("wipe", 1))
    assert (summary.first_started, summary.last_started) == (T0, T0 + timedelta(seconds=176))


def test_key_generation_times_of_a_batch(log: AuditLog) -> None:
    keygen = log.yield_summary(batch="B-17").keygen

    # Passed keygen runs: 10, 20, 25, 45, 30, 40, 50 s (unit 3's failed 3 s run is not a key generation).
    assert keygen.count == 7
    assert (keygen.min_s, keygen.max_s, keygen.mean_s) == (10.0, 50.0, pytest.approx(220 / 7, abs=1e-3))
    # Nearest rank on 10 20 25 30 40 45 50: p50 → 4th, p90/p95/p99 → 7th.
    assert keygen.quantiles == ((0.5, 30.0), (0.9, 50.0), (0.95, 50.0), (0.99, 50.0))
    assert keygen.quantile(0.5) == 30.0
    # 40 s spread over at most 20 bins: 2 s wide, from 10 s; 50 s lands in the last bin.
    assert len(keygen.histogram) == 20
    assert keygen.histogram[0] == HistogramBin(10.0, 12.0, 1)
    assert keygen.histogram[-1] == HistogramBin(48.0, 50.0, 1)
    filled = {(b.low, b.count) for b in keygen.histogram if b.count}
    assert filled == {(10.0, 1), (20.0, 1), (24.0, 1), (30.0, 1), (40.0, 1), (44.0, 1), (48.0, 1)}
    assert sum(b.count for b in keygen.histogram) == keygen.count


def test_a_period_selects_units_by_their_start(log: AuditLog) -> None:
    day2 = log.yield_summary(since=DAY2, until=DAY2 + timedelta(days=1))
    assert (day2.units, day2.passed, day2.failed, day2.pass_rate, day2.first_pass_yield) == (
        1,
        0,
        1,
        0.0,
        0.0,
    )
    assert day2.failures_by_step == (("tls_proof", 1),)
    assert (day2.keygen.count, day2.keygen.min_s, day2.keygen.max_s) == (1, 99.0, 99.0)
    # One value: one round bin around it.
    assert [b for b in day2.keygen.histogram if b.count] == [HistogramBin(90.0, 100.0, 1)]

    everything = log.yield_summary()
    assert (everything.units, everything.failed) == (9, 2)
    assert log.yield_summary(until=DAY2).units == 8
    assert log.yield_summary(batch="B-17", since=DAY2).units == 0


def test_nothing_to_summarise_gives_zeros_and_no_rates(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as empty:
        summary = empty.yield_summary(batch="nothing")
    assert (summary.units, summary.finished, summary.passed) == (0, 0, 0)
    assert (summary.pass_rate, summary.first_pass_yield) == (None, None)
    assert summary.failures_by_step == ()
    assert (summary.keygen.count, summary.keygen.quantiles, summary.keygen.histogram) == (0, (), ())
    assert summary.keygen.quantile(0.5) is None
    assert (summary.first_started, summary.last_started) == (None, None)


def test_a_batch_still_running_has_no_rates_yet(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as audit:
        start(audit, "S1", batch="B-1")
        summary = audit.yield_summary(batch="B-1")
    assert (summary.units, summary.running, summary.pass_rate) == (1, 1, None)


# ------------------------------------------------------------------------------ the paged queries


def serials(units: list[object]) -> list[str]:
    return [u.serial for u in units]  # type: ignore[attr-defined]


def test_pages_follow_each_other_without_overlap(log: AuditLog) -> None:
    pages = [log.units_page(offset=offset, limit=4) for offset in (0, 4, 8)]
    assert [len(page) for page in pages] == [4, 4, 1]
    ids = [u.id for page in pages for u in page]
    assert ids == list(range(9, 0, -1))  # newest first by default
    assert log.count_units() == 9


def test_pages_sort_by_an_indexed_column_with_the_unit_id_breaking_ties(log: AuditLog) -> None:
    by_serial = log.units_page(order_by="serial", descending=False, limit=100)
    assert [(u.serial, u.id) for u in by_serial][3:7] == [("S4", 4), ("S5", 5), ("S5", 6), ("S5", 8)]
    newest_serial_first = log.units_page(order_by="serial", descending=True, limit=3)
    assert [(u.serial, u.id) for u in newest_serial_first] == [("S9", 9), ("S7", 7), ("S5", 8)]
    by_state = log.units_page(order_by="state", descending=False, limit=100)
    assert [u.state for u in by_state] == sorted(u.state for u in by_state)
    # A missing batch/fixture/failed step sorts first (NULL), and still every unit is listed once.
    by_step = log.units_page(order_by="failed_step", descending=False, limit=100)
    assert sorted(u.id for u in by_step) == list(range(1, 10))
    assert [u.failed_step for u in by_step][-2:] == ["push", "tls_proof"]
    with pytest.raises(ValueError, match="order_by"):
        log.units_page(order_by="message")


def test_every_filter_narrows_the_page_and_the_count(log: AuditLog) -> None:
    cases = {
        UnitFilter(serial_prefix="S5"): [8, 6, 5],
        UnitFilter(result="failed"): [9, 4],
        UnitFilter(result="failed", serial_prefix="S4"): [4],
        UnitFilter(operator="bob"): [9],
        UnitFilter(batch="B-17", result="running"): [8, 7],
        UnitFilter(fixture="slot-2"): [9],
        UnitFilter(failed_step="push"): [4],
        UnitFilter(station="line-1", since=DAY2): [9],
        UnitFilter(station="elsewhere"): [],
        UnitFilter(until=T0 + timedelta(seconds=1)): [1],
    }
    for filters, expected in cases.items():
        assert [u.id for u in log.units_page(filters=filters)] == expected, filters
        assert log.count_units(filters) == len(expected), filters


def test_a_serial_prefix_is_taken_literally(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as audit:
        for serial in ("A*1", "A11", "a11", "A?2"):
            start(audit, serial)
        assert serials(audit.units_page(filters=UnitFilter(serial_prefix="A*"))) == ["A*1"]
        assert serials(
            audit.units_page(filters=UnitFilter(serial_prefix="A"), order_by="serial", descending=False)
        ) == [
            "A*1",
            "A11",
            "A?2",
        ]
