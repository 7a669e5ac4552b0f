"""The window with a serial barcode scanner ([scanner] device, here a pty): its scans go through the same scan
field logic as a keyboard wedge — validation, auto-start, batch scan-to-slot — and unplugging it is shown in the
status bar until it is back; the line's label printer is reached from the unit detail's "Reprint label"."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from station.admin import StationSettings, save_settings
from tests.gui.conftest import SERIAL, home_audit
from tests.helpers.audit import make_certificate, start
from tests.helpers.line_servers import FakeZplPrinter
from tests.helpers.pty_scanner import PtyScanner
from tests.helpers.technician import run_unit, sign_in
from ui.line import ReprintButton

pytestmark = pytest.mark.gui

CTRL = Qt.KeyboardModifier.ControlModifier
WAIT_MS = 10_000


@pytest.fixture
def scanner(sim_home, tmp_path: Path):
    device = PtyScanner(tmp_path / "ttyACM0")
    sim_home.config_file.write_text(f'[scanner]\ndevice = "{device.path}"\nbaud = 115200\n', encoding="utf-8")
    yield device
    device.close()


def test_a_serial_scan_starts_a_unit_exactly_like_a_wedge_scan(
    qtbot, sim_home, station_ca, fixtures_file, open_window, scanner
):
    save_settings(sim_home, StationSettings(auto_start=True))
    window = open_window(sim_home, station_ca, fixtures_file)
    qtbot.waitUntil(lambda: "connected" in window.line_status.text(), timeout=WAIT_MS)
    sign_in(qtbot, window, "alice")

    scanner.scan("12-AB")  # not a serial of the profile: refused on the spot, with the reason
    qtbot.waitUntil(lambda: "Refused" in window.scan_feedback.text(), timeout=WAIT_MS)
    assert not window.runner.running

    outcome = run_unit(qtbot, window, lambda: scanner.scan(SERIAL), timeout_s=60)  # auto-start, as a burst
    assert outcome.serial == SERIAL
    assert outcome.kind == "failed" and outcome.failed_step == "identify"  # nothing answers at bench-1


def test_serial_scans_go_to_the_batch_grid_slot_by_slot(
    qtbot, sim_home, station_ca, fixtures_file, open_window, scanner
):
    window = open_window(sim_home, station_ca, fixtures_file)
    qtbot.waitUntil(lambda: "connected" in window.line_status.text(), timeout=WAIT_MS)
    sign_in(qtbot, window, "alice")
    qtbot.keyClick(window, Qt.Key.Key_2, CTRL)
    view = window.batch
    scanner.scan("FIXTURE:bench-2")
    scanner.scan(SERIAL)
    qtbot.waitUntil(lambda: view.board.slots["bench-2"].serial == SERIAL, timeout=WAIT_MS)
    scanner.scan(SERIAL)  # the same board again: refused by the grid, as a wedge scan is
    qtbot.waitUntil(lambda: "already on fixture bench-2" in view.feedback.text(), timeout=WAIT_MS)
    assert view.board.slots["bench-1"].serial is None


def test_unplugging_the_scanner_is_shown_and_it_works_again_once_plugged_back(
    qtbot, sim_home, station_ca, fixtures_file, open_window, scanner
):
    window = open_window(sim_home, station_ca, fixtures_file)
    qtbot.waitUntil(lambda: "connected" in window.line_status.text(), timeout=WAIT_MS)
    sign_in(qtbot, window, "alice")
    scanner.unplug()
    qtbot.waitUntil(lambda: "unplugged" in window.line_status.text(), timeout=WAIT_MS)
    assert "plug it in again" in window.line_status.text()
    scanner.plug()
    qtbot.waitUntil(lambda: window.line_status.text().endswith("connected"), timeout=WAIT_MS)
    scanner.scan(SERIAL)
    qtbot.waitUntil(lambda: window.serial == SERIAL, timeout=WAIT_MS)


def test_reprint_from_the_unit_detail_reaches_the_printer_and_is_recorded(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    printer = FakeZplPrinter()
    try:
        sim_home.config_file.write_text(
            f'[label]\nprinter = "{printer.url}"\ntimeout_s = 2\n', encoding="utf-8"
        )
        window = open_window(sim_home, station_ca, fixtures_file)
        audit = home_audit(window)
        unit = start(audit, SERIAL, station=window.session.config.name)
        audit.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{SERIAL}"))
        audit.finish_unit(unit.id, result="passed")
        sign_in(qtbot, window, "alice")
        qtbot.keyClick(window, Qt.Key.Key_3, CTRL)
        qtbot.waitUntil(
            lambda: window.audit_view is not None and window.audit_view.model.rowCount() == 1, timeout=WAIT_MS
        )
        view = window.audit_view
        view.table.selectRow(0)
        button = view.findChild(ReprintButton)
        assert button is not None and button.text() == "Reprint &label"
        qtbot.waitUntil(lambda: button.isEnabled(), timeout=WAIT_MS)
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "sent to" in window.line_status.text(), timeout=WAIT_MS)
        assert len(printer.jobs(expect=1)) == 1
        [record] = audit.label_prints(unit.id)
        # Printed by the station service, recorded with who asked; the first print of this unit's label (the
        # service decides whether it is a reprint from the unit's history).
        assert not record.reprint and record.by == "alice" and record.printed
        qtbot.waitUntil(lambda: "print by alice: printed" in button.toolTip(), timeout=WAIT_MS)
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "reprint by alice: printed" in button.toolTip(), timeout=WAIT_MS)
        assert len(printer.jobs(expect=2)) == 2 and audit.label_prints(unit.id)[-1].reprint
    finally:
        printer.close()
