"""Scanning into the batch grid, without devices: the same serial on two fixtures is refused on the
spot, and — the real guard — a board another station already holds is refused by the audit log's
unique index when its unit starts; auto-start starts a scanned board at once."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from station.admin import StationSettings, save_settings
from station.audit import AuditLog
from tests.gui.conftest import SERIAL, home_audit
from tests.helpers.technician import sign_in

pytestmark = pytest.mark.gui

CTRL = Qt.KeyboardModifier.ControlModifier


def batch_scan(qtbot, window, text: str) -> None:
    qtbot.keyClicks(window.batch.scan, text)
    qtbot.keyClick(window.batch.scan, Qt.Key.Key_Return)


def test_the_same_serial_scanned_onto_a_second_fixture_is_refused_on_the_spot(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    qtbot.keyClick(window, Qt.Key.Key_2, CTRL)
    view = window.batch
    batch_scan(qtbot, window, SERIAL)
    assert view.board.slots["bench-1"].serial == SERIAL
    assert view.tiles["bench-2"].serial.text() == "▶ next serial goes here"

    batch_scan(qtbot, window, SERIAL)
    assert "Refused" in view.feedback.text() and "already on fixture bench-1" in view.feedback.text()
    assert view.board.slots["bench-2"].state == "empty"
    batch_scan(qtbot, window, "FIXTURE:bench-2")
    batch_scan(qtbot, window, SERIAL)
    assert view.board.slots["bench-2"].serial is None
    assert view.board.counts().queued == 1 and not view.running
    # A label that is no serial is refused with the profile's reason, and goes nowhere.
    batch_scan(qtbot, window, "12-AB")
    assert "Refused" in view.feedback.text() and view.board.slots["bench-2"].state == "empty"


def test_a_board_another_station_holds_is_refused_by_the_audit_log_when_its_unit_starts(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    # Another station (or window) on the same audit log is provisioning the board right now: this
    # grid cannot know, the audit log's unique index does.
    with AuditLog(sim_home.audit_db) as other:
        held = other.start_unit(
            serial=SERIAL,
            profile="welma-optee",
            device="ssh://root@127.0.0.9:22",
            operator="zoe",
            station="line-2",
        )
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    qtbot.keyClick(window, Qt.Key.Key_2, CTRL)
    view = window.batch
    batch_scan(qtbot, window, SERIAL)
    assert view.board.slots["bench-1"].state == "ready"  # nothing in this grid holds it

    finished = []
    view.slot_finished.connect(lambda name, outcome: finished.append(outcome))
    with qtbot.waitSignal(view.idle, timeout=30_000):
        qtbot.keyClick(window, Qt.Key.Key_Return, CTRL)
    (outcome,) = finished
    assert outcome.kind == "refused" and f"unit {held.id}" in outcome.message
    assert "already being provisioned" in outcome.message
    assert view.tiles["bench-1"].verdict.text() == "NOT STARTED"
    assert view.board.counts().failed == 1
    assert [unit.id for unit in home_audit(window).units(limit=10)] == [held.id]  # no second unit


def test_auto_start_starts_a_scanned_board_at_once_with_the_batch_id(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    save_settings(sim_home, StationSettings(auto_start=True))
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    qtbot.keyClick(window, Qt.Key.Key_2, CTRL)
    view = window.batch
    assert "Auto-start on scan: <b>on</b>" in view.mode_label.text()
    with qtbot.waitSignal(view.idle, timeout=60_000):
        batch_scan(qtbot, window, SERIAL)  # a scanner's burst and Enter
        assert view.board.slots["bench-1"].state in ("running", "failed")
    # Nothing listens at bench-1: the unit fails at identify, with the reason, and is resumable.
    slot = view.board.slots["bench-1"]
    assert slot.state == "failed" and slot.failed_step == "identify" and slot.resumable
    assert "cannot connect to the device at 127.0.0.1:9" in slot.message
    assert home_audit(window).find_unit(SERIAL).batch == view.board.batch_id
    assert view.tiles["bench-1"].retry_button.isEnabled()


def test_a_fixture_busy_in_the_batch_is_refused_on_the_single_board_screen(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    view = window.batch
    view.handle_scan(SERIAL)
    view.board.mark_started("bench-1", 0.0)  # as if its unit were running
    window.show_mode("single")
    window.select_fixture("bench-1")
    window.scan.setText("202600000000002")
    assert window.provision() is False
    assert "provisioning a board of the batch" in window.scan_feedback.text()
    assert not window.runner.running
