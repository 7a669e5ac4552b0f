"""Keyboard-only operation: a sensible tab order, scanner keys that land in the scan field wherever
the focus is, and the shortcuts (Ctrl+Enter provision, F5 retry, Ctrl+, settings)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from station.flow import FlowEvent
from tests.gui.conftest import SERIAL, home_audit
from tests.helpers.technician import run_unit, scan, sign_in

pytestmark = pytest.mark.gui


def test_tab_walks_the_window_in_working_order(qtbot, sim_home, station_ca, fixtures_file, open_window):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    seen = [QApplication.focusWidget()]
    for _ in range(6):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        seen.append(QApplication.focusWidget())
    # Retry, Abort and the label buttons are disabled at this point and skipped.
    assert seen == [
        window.scan,
        window.provision_button,
        window.fixtures,
        window.log,
        window.settings_button,
        window.sign_out_button,
        window.scan,
    ]


def test_a_scan_while_the_focus_is_elsewhere_still_lands_in_the_scan_field(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    window.fixtures.setFocus()
    scan(qtbot, window, SERIAL)
    assert window.scan.text() == SERIAL and window.serial == SERIAL
    assert window.focusWidget() is window.scan


def test_ctrl_enter_provisions_and_f5_retries_a_board_that_does_not_answer(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    window.select_fixture("bench-1")  # nothing listens at its address
    qtbot.keyClicks(window.scan, SERIAL)
    ctrl = Qt.KeyboardModifier.ControlModifier
    failed = run_unit(qtbot, window, lambda: qtbot.keyClick(window, Qt.Key.Key_Return, ctrl), timeout_s=60)
    assert failed.kind == "failed" and failed.failed_step == "identify"
    assert window.result.verdict.text() == "FAIL"
    assert "cannot connect to the device at 127.0.0.1:9" in window.result.detail.text()
    assert window.focusWidget() is window.scan  # ready for the next scan

    again = run_unit(qtbot, window, lambda: qtbot.keyClick(window, Qt.Key.Key_F5), timeout_s=60)
    assert again.kind == "failed" and again.unit_id == failed.unit_id
    assert home_audit(window).find_unit(SERIAL).attempt == 2

    # The core masks device output; the log masks the profile's PINs again, should one ever slip through.
    window.runner.flow_event.emit(
        FlowEvent(kind="output", serial=SERIAL, step="init_pin", message="--so-pin 00000000 --pin 0000")
    )
    assert window.log.toPlainText().splitlines()[-1] == "--so-pin **** --pin ****"


def test_escape_does_nothing_when_no_unit_runs(qtbot, sim_home, station_ca, fixtures_file, open_window):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert window.result.verdict.text() == "READY"


def test_closing_as_a_unit_ends_waits_for_its_thread_without_asking(
    qtbot, sim_home, station_ca, fixtures_file, open_window, monkeypatch
):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    window.select_fixture("bench-1")
    monkeypatch.setattr(
        "PySide6.QtWidgets.QMessageBox.question",
        lambda *args: pytest.fail("asked although the unit had ended"),
    )
    window.unit_finished.connect(lambda outcome: window.close())  # the thread is still winding down
    qtbot.keyClicks(window.scan, SERIAL)
    with qtbot.waitSignal(window.runner.idle, timeout=60_000):
        qtbot.keyClick(window.scan, Qt.Key.Key_Return)
        qtbot.keyClick(window.scan, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
