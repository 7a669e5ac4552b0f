"""Before anything touches a board: the technician signs in, and a scanned serial is checked
against the fixture's profile on the spot — refused with the reason, nothing started."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from station.admin import StationSettings, save_settings
from tests.gui.conftest import SERIAL, home_audit
from tests.helpers.technician import run_unit, scan, sign_in

pytestmark = pytest.mark.gui


def test_nothing_is_provisioned_before_an_operator_signs_in(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    window = open_window(sim_home, station_ca, fixtures_file)
    assert window.pages.currentWidget() is window.sign_in_page
    assert window.focusWidget() is window.operator_field
    assert not window.provision()

    qtbot.keyClick(window.operator_field, Qt.Key.Key_Return)  # nothing typed
    assert "type your name or scan your badge" in window.sign_in_problem.text()
    assert window.operator is None

    sign_in(qtbot, window, "  Alice   Martin ")
    assert window.operator == "Alice Martin"
    assert window.pages.currentWidget() is window.station_page
    assert "Alice Martin" in window.operator_label.text()

    qtbot.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)  # sign out
    assert window.operator is None and window.pages.currentWidget() is window.sign_in_page


@pytest.mark.parametrize(
    ("scanned", "reason"),
    [
        ("12345", "does not match profile welma-optee's pattern ^[0-9]{15}$"),
        (
            "2026000000000012026000000000012026000000000012026000000000012026000000000012",
            "the scanner probably read two labels",
        ),
        ("202600000;reboot", "contains characters a serial number cannot have"),
        ("", "the scanned serial is empty"),
    ],
)
def test_an_invalid_serial_is_refused_on_the_spot_with_the_reason(
    qtbot, sim_home, station_ca, fixtures_file, open_window, scanned, reason
):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    scan(qtbot, window, scanned)
    feedback = window.scan_feedback.text()
    assert "Refused" in feedback and reason in feedback
    assert window.serial is None
    qtbot.keyClick(window.scan, Qt.Key.Key_Return)  # Enter again: still refused, nothing starts
    assert not window.runner.running
    assert home_audit(window).units() == []
    assert window.scan.selectedText() == scanned  # selected: the next scan replaces it


def test_a_valid_serial_is_accepted_for_the_selected_fixture(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    window.select_fixture("bench-2")
    scan(qtbot, window, SERIAL)
    assert window.serial == SERIAL
    assert f"serial {SERIAL} for fixture bench-2" in window.scan_feedback.text()
    assert window.result.verdict.text() == "READY"
    assert not window.runner.running


def test_without_fixtures_the_window_says_how_to_get_some(qtbot, sim_home, station_ca, open_window):
    window = open_window(sim_home, station_ca)
    sign_in(qtbot, window, "alice")
    assert window.session.fixtures.fixtures == ()
    scan(qtbot, window, SERIAL)
    assert "no fixture is selected" in window.scan_feedback.text()


def test_auto_start_starts_on_a_scan_but_not_on_a_serial_typed_by_hand(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    save_settings(sim_home, StationSettings(auto_start=True))
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    qtbot.keyClicks(window.scan, SERIAL, delay=80)  # a person typing, not a scanner's burst
    qtbot.keyClick(window.scan, Qt.Key.Key_Return)
    assert window.serial == SERIAL and not window.runner.running
    assert "press Enter again" in window.scan_feedback.text()

    window.scan.clear()
    outcome = run_unit(qtbot, window, lambda: scan(qtbot, window, SERIAL), timeout_s=60)  # a burst: starts
    assert outcome.kind == "failed" and outcome.failed_step == "identify"  # nothing answers at bench-1
