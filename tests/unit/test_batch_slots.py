"""The batch grid's rules (station.batch.SlotBoard, no Qt): scan-to-slot, duplicates refused on the
spot, what counts as queued, running, passed and failed, and the yield."""

from __future__ import annotations

import pytest

from station.batch import FIXTURE_SCAN_PREFIX, SlotBoard
from station.config import Fixture
from station.errors import StationError
from station.flow import FlowEvent

FIXTURES = [Fixture(f"sim-0{n}", f"ssh://root@127.0.0.{n + 1}:2222") for n in range(1, 5)]


def digits_only(fixture: Fixture, text: str) -> str:
    if not text.isdigit():
        raise StationError(f"{text!r} is not a serial for {fixture.name}")
    return text


@pytest.fixture
def board() -> SlotBoard:
    return SlotBoard(FIXTURES, batch_id="B-test")


def test_a_serial_scanned_alone_goes_to_the_highlighted_next_free_fixture(board: SlotBoard) -> None:
    assert board.highlighted is board.slots["sim-01"]
    placed = board.scan("1001", digits_only)
    assert placed.accepted and (placed.fixture, placed.serial) == ("sim-01", "1001")
    assert board.slots["sim-01"].state == "ready"
    assert board.highlighted is board.slots["sim-02"]


@pytest.mark.parametrize(
    "barcode", ["sim-03", f"{FIXTURE_SCAN_PREFIX}sim-03", "fixture:sim-03", " FIXTURE: sim-03 "]
)
def test_a_fixture_barcode_then_a_serial_puts_the_board_on_that_fixture(
    board: SlotBoard, barcode: str
) -> None:
    selected = board.scan(barcode, digits_only)
    assert selected.accepted and selected.fixture == "sim-03" and selected.serial is None
    assert board.highlighted is board.slots["sim-03"]
    placed = board.scan("1003", digits_only)
    assert (placed.fixture, placed.serial) == ("sim-03", "1003")
    assert board.selected is None and board.highlighted is board.slots["sim-01"]


def test_an_unknown_fixture_barcode_and_a_bad_serial_are_refused_and_nothing_moves(board: SlotBoard) -> None:
    unknown = board.scan("FIXTURE:sim-99", digits_only)
    assert not unknown.accepted and "names no fixture" in unknown.message and "sim-01" in unknown.message
    bad = board.scan("ABC", digits_only)
    assert not bad.accepted and "not a serial" in bad.message
    assert {slot.state for slot in board.slots.values()} == {"empty"}


def test_the_same_serial_on_a_second_fixture_is_refused_on_the_spot(board: SlotBoard) -> None:
    board.scan("1001", digits_only)
    again = board.scan("1001", digits_only)
    assert not again.accepted and "already on fixture sim-01" in again.message
    board.scan("sim-04", digits_only)
    assert not board.scan("1001", digits_only).accepted
    assert board.slots["sim-04"].serial is None and board.slots["sim-02"].serial is None
    # Scanned again onto the fixture that holds it: nothing changes, nothing is refused.
    board.scan("sim-01", digits_only)
    assert board.scan("1001", digits_only).accepted and board.slots["sim-01"].state == "ready"


def test_a_running_fixture_takes_no_other_board(board: SlotBoard) -> None:
    board.scan("1001", digits_only)
    board.mark_started("sim-01", 10.0)
    refused = board.scan("sim-01", digits_only)
    assert not refused.accepted and "is provisioning board 1001" in refused.message
    assert not board.place("sim-01", "1002").accepted
    with pytest.raises(StationError, match="abort it"):
        board.clear("sim-01")


def test_progress_and_results_make_the_counts_and_the_yield(board: SlotBoard) -> None:
    for serial in ("1001", "1002", "1003", "1004"):
        board.scan(serial, digits_only)
    assert board.counts().queued == 4 and board.counts().yield_fraction is None
    for name in ("sim-01", "sim-02", "sim-03"):
        board.mark_started(name, 0.0)
    changed = board.apply(
        "sim-01",
        FlowEvent(
            kind="step_started",
            serial="1001",
            step="keygen",
            title="Generate key",
            index=5,
            count=12,
            attempt=2,
        ),
    )
    assert changed is not None and (changed.step_index, changed.step_count, changed.attempt) == (5, 12, 2)
    assert board.apply("sim-01", FlowEvent(kind="output", serial="1001", message="noise")) is None
    counts = board.counts()
    assert (counts.queued, counts.running, counts.passed, counts.failed) == (1, 3, 0, 0)

    board.finish("sim-01", result="passed", message="enrolled", now=30.0, unit_id=7)
    board.finish(
        "sim-02",
        result="failed",
        message="cancelled",
        now=31.0,
        unit_id=8,
        failed_step="keygen",
        resumable=True,
    )
    board.finish("sim-03", result="refused", message="already active", now=1.0)
    counts = board.counts()
    assert (counts.queued, counts.running, counts.passed, counts.failed) == (1, 0, 1, 2)
    assert counts.yield_fraction == pytest.approx(1 / 3)

    # No empty fixture left: the next serial goes where a board passed (it was taken off).
    assert board.highlighted is board.slots["sim-01"]
    board.mark_started("sim-02", 40.0, resume=True)
    assert board.slots["sim-02"].state == "running" and not board.slots["sim-02"].resumable
    with pytest.raises(StationError, match="nothing to resume"):
        board.mark_started("sim-03", 41.0, resume=True)


def test_a_new_batch_empties_idle_fixtures_and_keeps_running_ones(board: SlotBoard) -> None:
    board.scan("1001", digits_only)
    board.scan("1002", digits_only)
    board.mark_started("sim-02", 0.0)
    old = board.batch_id
    new = board.new_batch()
    assert new != old and board.batch_id == new
    assert board.slots["sim-01"].state == "empty" and board.slots["sim-02"].state == "running"
