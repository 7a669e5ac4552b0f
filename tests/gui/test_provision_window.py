"""The technician's window against real simulated Welma boards: sign in, scan, Provision, watch the
steps, PASS with a label that scans back — and a failing board, whose reason is shown, resumed
with Retry; closing or aborting during a unit stops it cleanly."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from station.admin import StationSettings, save_settings
from station.label import short_fingerprint
from tests.gui.conftest import SERIAL, home_audit
from tests.helpers.technician import read_barcodes, run_unit, scan, sign_in
from ui.label import label_png

pytestmark = [pytest.mark.gui, pytest.mark.integration]

SECOND_SERIAL = "202600000000002"


def step_words(window):
    return {step.name: window.steps._items[step.name].text(1) for step in window.progress.steps}


def test_a_signed_in_technician_scans_a_board_and_provisions_it_to_pass(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window, tmp_path
):
    start_farm(count=2)
    window = open_window(sim_home)  # the service's CA unlocked as from the window's dialog

    # Nothing can be provisioned before someone signs in.
    assert window.pages.currentWidget() is window.sign_in_page
    assert not window.provision()
    sign_in(qtbot, window, "alice")
    assert window.operator == "alice"
    assert window.scan.hasFocus() and window.focusWidget() is window.scan

    # The simulator's fixtures are offered, with whether each board answers.
    assert [fixture.name for fixture in window.session.fixtures.fixtures] == ["sim-01", "sim-02"]
    qtbot.waitUntil(lambda: window.fixtures.status_word("sim-01") == "answers", timeout=15_000)

    # Auto-start is off: the scan is checked and shown, Enter a second time starts.
    scan(qtbot, window, SERIAL)
    assert not window.runner.running
    assert "press Enter again" in window.scan_feedback.text()
    outcome = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))

    assert outcome.kind == "passed", outcome.message
    assert window.result.verdict.text() == "PASS"
    assert "enrolled" in window.result.detail.text()
    assert set(step_words(window).values()) == {"passed"}
    assert all(window.steps._items[step.name].text(2).endswith(" s") for step in window.progress.steps)
    assert window.progress_bar.value() == 1000
    log = window.log.toPlainText()
    assert "Generate key" in log and "--pin ****" in log and "--pin 0000" not in log

    # The operator and the fixture go to the unit; the label carries the issued certificate.
    unit = home_audit(window).find_unit(SERIAL)
    assert unit is not None and unit.state == "passed"
    assert (unit.operator, unit.fixture) == ("alice", "sim-01")
    record = home_audit(window).certificate_for_unit(unit.id)
    assert window.sheet is not None
    assert window.sheet.content.lines[1].endswith(short_fingerprint(record.fingerprint_sha256))
    png = tmp_path / "label.png"
    png.write_bytes(label_png(window.sheet))
    assert read_barcodes(png) == [SERIAL]

    # The next board: the audit history now gives every step an expected time, and the time left.
    window.select_fixture("sim-02")
    plans, time_left = [], []
    window.runner.planned.connect(plans.append)
    window.runner.flow_event.connect(lambda event: time_left.append(window.eta_label.text()))
    scan(qtbot, window, SECOND_SERIAL)
    second = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))
    assert second.kind == "passed", second.message
    assert plans and all(eta is not None for eta in plans[0].eta_s.values())
    assert any(text.startswith("About ") and text.endswith(" left") for text in time_left)


def test_a_board_without_its_pkcs11_module_fails_with_the_reason_and_retry_passes_once_fixed(
    qtbot, start_farm, sim_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=1, faults={"sim-01": "no-module"})
    save_settings(sim_home, StationSettings(auto_start=True))
    window = open_window(sim_home)
    sign_in(qtbot, window, "bob")

    # Auto-start: the scanner's burst and Enter start the unit at once.
    failed = run_unit(qtbot, window, lambda: scan(qtbot, window, SERIAL))
    assert failed.kind == "failed" and failed.failed_step == "identify"
    assert window.result.verdict.text() == "FAIL"
    detail = window.result.detail.text()
    assert "Identify board" in detail and "PKCS#11 module" in detail and "/usr/lib/libckteec.so.0" in detail
    assert "Retry (F5)" in window.result.next_step.text()
    assert step_words(window)["identify"] == "FAILED"
    assert window.retry_button.isEnabled()

    sim_farm.set_fault("sim-01", None)  # the right image is flashed
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    passed = run_unit(qtbot, window, lambda: qtbot.keyClick(window, Qt.Key.Key_F5))
    assert passed.kind == "passed", passed.message
    assert window.result.verdict.text() == "PASS"
    unit = home_audit(window).find_unit(SERIAL)
    assert unit.id == failed.unit_id and unit.attempt == 2 and unit.operator == "bob"


def test_a_dropped_connection_in_keygen_is_resumed_by_retry_from_the_token_not_from_the_wipe(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=1, faults={"sim-01": "drop-ssh"})
    window = open_window(sim_home)
    sign_in(qtbot, window, "carol")
    scan(qtbot, window, SERIAL)
    failed = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))
    assert failed.kind == "failed" and failed.failed_step == "keygen"
    assert "Generate key" in window.result.detail.text()
    assert "“Initialise token”" in window.result.next_step.text()

    started = []
    window.runner.flow_event.connect(
        lambda event: started.append(event.step) if event.kind == "step_started" else None
    )
    passed = run_unit(qtbot, window, window.retry_button.click)
    assert passed.kind == "passed", passed.message
    assert started[:2] == ["identify", "guard"] and "init_token" in started
    assert "wipe" not in started and "reboot" not in started
    assert step_words(window)["wipe"] == "passed"  # done in the first attempt, still shown as done


def test_escape_aborts_the_running_unit_which_ends_failed_and_resumable(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=1, keygen_delay=60)
    window = open_window(sim_home)
    sign_in(qtbot, window, "dave")
    scan(qtbot, window, SERIAL)
    with qtbot.waitSignal(
        window.runner.flow_event,
        timeout=60_000,
        check_params_cb=lambda e: e.kind == "step_started" and e.step == "keygen",
    ):
        qtbot.keyClick(window.scan, Qt.Key.Key_Return)
    assert window.abort_button.isEnabled() and not window.provision_button.isEnabled()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    outcome = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Escape), timeout_s=30)
    assert outcome.kind == "failed" and outcome.failed_step == "keygen"
    assert "cancelled" in outcome.message
    assert window.result.verdict.text() == "FAIL"
    assert window.retry_button.isEnabled()
    assert home_audit(window).find_unit(SERIAL).state == "failed"


def test_closing_during_a_unit_asks_then_cancels_it_and_waits_for_the_worker(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window, monkeypatch
):
    start_farm(count=1, keygen_delay=60)
    window = open_window(sim_home)
    sign_in(qtbot, window, "erin")
    scan(qtbot, window, SERIAL)
    with qtbot.waitSignal(
        window.runner.flow_event,
        timeout=60_000,
        check_params_cb=lambda e: e.kind == "step_started" and e.step == "keygen",
    ):
        qtbot.keyClick(window.scan, Qt.Key.Key_Return)

    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    asked = []

    def question(parent, title, text, *args):
        asked.append(text)
        return answers.pop(0)

    monkeypatch.setattr(QMessageBox, "question", question)
    window.close()  # "No": the unit goes on
    assert len(asked) == 1 and SERIAL in asked[0]
    assert window.isVisible() and window.runner.running

    with qtbot.waitSignal(window.runner.idle, timeout=30_000):
        window.close()  # "Yes": cancel, wait for the worker, then close
        assert window.isVisible()  # not before the worker has ended
        assert window.result.verdict.text() == "STOPPING"
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert len(asked) == 2
    assert not window.runner.running
    assert not window._tick.isActive() and not window.prober._timer.isActive()
    unit = home_audit(window).find_unit(SERIAL)
    assert unit.state == "failed" and unit.failed_step == "keygen" and "cancelled" in (unit.message or "")
