"""Batch mode in the window against real simulated Welma boards: eight boards scanned onto eight
fixtures and provisioned in parallel to PASS with the batch id on every unit; one board aborted and
retried while its neighbour goes on; Cancel all and closing the window leave every unit failed and
resumable (or passed) and no thread behind."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from station.batch import CANCEL_DEADLINE_S
from tests.gui.conftest import home_audit
from tests.helpers.technician import sign_in

pytestmark = [pytest.mark.gui, pytest.mark.integration]

CTRL = Qt.KeyboardModifier.ControlModifier
BATCH_TIMEOUT_MS = 240_000


def serial(n: int) -> str:
    return f"2026000000001{n:02d}"


def batch_scan(qtbot, window, text: str) -> None:
    """A scanner reads a label (a fixture's or a board's) into the batch scan field."""
    qtbot.keyClicks(window.batch.scan, text)
    qtbot.keyClick(window.batch.scan, Qt.Key.Key_Return)


def open_batch(qtbot, window, operator: str) -> None:
    sign_in(qtbot, window, operator)
    qtbot.keyClick(window, Qt.Key.Key_2, CTRL)  # Ctrl+2: the Batch tab, from the keyboard
    assert window.mode() == "batch"
    assert window.batch.scan.hasFocus()


def wait_for_step(qtbot, window, fixtures, step: str, timeout_ms: int = 60_000) -> None:
    qtbot.waitUntil(
        lambda: all(window.batch.board.slots[name].step == step for name in fixtures), timeout=timeout_ms
    )


def test_eight_boards_scanned_onto_eight_fixtures_pass_in_parallel_with_the_batch_id_on_every_unit(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    devices = start_farm(count=8)
    window = open_window(sim_home)
    open_batch(qtbot, window, "fiona")
    view = window.batch
    assert list(view.tiles) == [device.name for device in devices]

    # Two boards by fixture barcode then serial (with and without the prefix), six into the next free fixture.
    batch_scan(qtbot, window, "FIXTURE:sim-08")
    batch_scan(qtbot, window, serial(8))
    batch_scan(qtbot, window, "sim-07")
    batch_scan(qtbot, window, serial(7))
    for n in range(1, 7):
        assert view.board.highlighted.name == f"sim-0{n}"
        batch_scan(qtbot, window, serial(n))
    assert view.board.counts().queued == 8
    assert {name: slot.serial for name, slot in view.board.slots.items()} == {
        f"sim-0{n}": serial(n) for n in range(1, 9)
    }
    assert not view.running  # auto-start is off: nothing starts before Start all

    with qtbot.waitSignal(view.idle, timeout=BATCH_TIMEOUT_MS):
        qtbot.keyClick(window, Qt.Key.Key_Return, CTRL)  # Ctrl+Enter: Start all
        # Every fixture works at once, each on its own worker thread.
        qtbot.waitUntil(lambda: sum(runner.running for runner in view.runners.values()) == 8, timeout=10_000)
        assert window.batch.counts_label.text().startswith("Queued 0 · Running 8")
        assert not window.sign_out_button.isEnabled() and not window.settings_button.isEnabled()

    counts = view.board.counts()
    assert (counts.passed, counts.failed, counts.running) == (8, 0, 0), [
        slot.message for slot in view.board.slots.values()
    ]
    assert view.yield_label.text() == "Yield 100 % (8/8)"
    for name, tile in view.tiles.items():
        assert tile.verdict.text() == "PASS" and tile.bar.value() == 1000, name
    units = home_audit(window).units(limit=20)
    assert len(units) == 8 and {unit.state for unit in units} == {"passed"}
    assert {unit.batch for unit in units} == {view.board.batch_id}
    assert {unit.fixture: unit.serial for unit in units} == {f"sim-0{n}": serial(n) for n in range(1, 9)}
    assert {unit.operator for unit in units} == {"fiona"}
    assert len({home_audit(window).certificate_for_unit(unit.id).fingerprint_sha256 for unit in units}) == 8
    # The history now gives the time left of the next batch.
    view.new_batch()
    batch_scan(qtbot, window, serial(20))
    qtbot.waitUntil(lambda: view.eta_label.text().startswith("About "), timeout=10_000)


def test_one_board_is_aborted_and_retried_while_its_neighbour_goes_on_to_pass(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=2, keygen_delay=6)
    window = open_window(sim_home)
    open_batch(qtbot, window, "gus")
    view = window.batch
    batch_scan(qtbot, window, serial(1))
    batch_scan(qtbot, window, serial(2))
    view.start_all_button.click()
    wait_for_step(qtbot, window, ["sim-01"], "keygen")

    finished = []
    view.slot_finished.connect(lambda name, outcome: finished.append((name, outcome)))
    view.tiles["sim-01"].abort_button.click()
    assert view.tiles["sim-01"].verdict.text() == "STOPPING"
    qtbot.waitUntil(lambda: [name for name, _ in finished] == ["sim-01"], timeout=30_000)
    aborted = finished[0][1]
    assert aborted.kind == "failed" and aborted.failed_step == "keygen" and "cancelled" in aborted.message
    assert view.board.slots["sim-02"].state == "running"  # its neighbour did not wait, nor stop
    qtbot.waitUntil(lambda: view.tiles["sim-01"].retry_button.isEnabled(), timeout=10_000)
    assert view.tiles["sim-01"].verdict.text() == "FAIL"
    assert "cancelled" in view.tiles["sim-01"].reason.text()

    with qtbot.waitSignal(view.idle, timeout=BATCH_TIMEOUT_MS):
        view.tiles["sim-01"].retry_button.click()
    assert {name: slot.state for name, slot in view.board.slots.items()} == {
        "sim-01": "passed",
        "sim-02": "passed",
    }
    unit = home_audit(window).find_unit(serial(1))
    assert unit.id == aborted.unit_id and unit.attempt == 2 and unit.state == "passed"
    assert unit.batch == view.board.batch_id == home_audit(window).find_unit(serial(2)).batch


def test_cancel_all_mid_batch_leaves_every_unit_failed_and_resumable_or_passed_and_no_thread(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=4, keygen_delay=60)
    window = open_window(sim_home)
    open_batch(qtbot, window, "hana")
    view = window.batch
    for n in range(1, 5):
        batch_scan(qtbot, window, serial(n))
    view.start_all_button.click()
    wait_for_step(qtbot, window, list(view.tiles), "keygen")

    began = time.monotonic()
    with qtbot.waitSignal(view.idle, timeout=int(CANCEL_DEADLINE_S * 1000)):
        view.cancel_all_button.click()
        assert {tile.verdict.text() for tile in view.tiles.values()} == {"STOPPING"}
    assert time.monotonic() - began < CANCEL_DEADLINE_S
    assert not view.running and not view._tick.isActive()
    for name, slot in view.board.slots.items():
        assert slot.state in ("failed", "passed"), name
        assert slot.state == "passed" or slot.resumable, name
        unit = home_audit(window).find_unit(slot.serial)
        assert unit.state == slot.state and unit.batch == view.board.batch_id
    assert view.tiles["sim-01"].retry_button.isEnabled()
    # (The conftest guard fails the test if any QThread or timer is left.)


def test_closing_the_window_during_a_batch_asks_stops_every_board_and_waits_for_them(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window, monkeypatch
):
    start_farm(count=3, keygen_delay=60)
    window = open_window(sim_home)
    open_batch(qtbot, window, "ivan")
    view = window.batch
    for n in range(1, 4):
        batch_scan(qtbot, window, serial(n))
    view.start_all()
    wait_for_step(qtbot, window, list(view.tiles), "keygen")

    asked = []
    monkeypatch.setattr(
        QMessageBox,
        "question",
        lambda parent, title, text, *args: asked.append(text) or QMessageBox.StandardButton.Yes,
    )
    with qtbot.waitSignal(view.idle, timeout=int(CANCEL_DEADLINE_S * 1000)):
        window.close()
        assert window.isVisible()  # not before every worker has ended
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert len(asked) == 1 and "3 boards of the batch" in asked[0]
    assert not view.running
    for slot in view.board.slots.values():
        unit = home_audit(window).find_unit(slot.serial)
        assert unit.state == "failed" and "cancelled" in (unit.message or "")
