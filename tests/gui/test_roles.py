"""Who sees what of the audit log in the window: a technician sees the station's recent units and
cannot reach export or revoke; a quality lead signs in (with their own credential — tests/gui/
test_people_sign_in.py — or, in demo mode, with the shared admin PIN) and can."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton

from station.admin import set_pin
from station.audit import AuditLog
from tests.helpers.technician import sign_in

pytestmark = pytest.mark.gui

PIN = "2468"
CTRL = Qt.KeyboardModifier.ControlModifier


def buttons_saying(window, *words: str) -> list[QPushButton]:
    return [
        button for button in window.findChildren(QPushButton) if any(word in button.text() for word in words)
    ]


def record_units(home, station: str) -> None:
    with AuditLog(home.audit_db) as log:
        for n in range(3):
            unit = log.start_unit(
                serial=f"20260000000090{n}",
                profile="welma-optee",
                device="ssh://root@127.0.0.2:22",
                operator="zoe",
                station=station,
            )
            log.finish_unit(unit.id, result="failed", failed_step="identify", message="no answer")


def test_a_technician_sees_the_station_s_recent_units_and_cannot_reach_export_or_revoke(
    qtbot, sim_home, station_ca, fixtures_file, open_window, tmp_path
):
    window = open_window(sim_home, station_ca, fixtures_file)
    record_units(sim_home, window.session.config.name)
    sign_in(qtbot, window, "alice")
    assert window.role == "technician" and window.audit_view is None  # built when first shown

    qtbot.keyClick(window, Qt.Key.Key_3, CTRL)  # Ctrl+3: the audit log
    view = window.audit_view
    assert window.mode() == "audit" and view is not None and view.isVisible()
    assert view.role == "technician" and view.station == window.session.config.name
    qtbot.waitUntil(lambda: not view.busy(), timeout=10_000)
    assert view.count_label.text() == f"the last 3 units at {window.session.config.name}"
    assert view.model.rowCount() == 3
    # Nothing in the whole window exports or revokes, and the actions refuse if called anyway.
    assert buttons_saying(window, "Export", "PDF report", "Revoke") == []
    assert view.export_buttons == {} and view.revoke_button is None
    assert view.export("csv", tmp_path / "units.csv") is False
    assert view.revoke_selected("keyCompromise") is False
    assert not (tmp_path / "units.csv").exists()


def test_in_demo_mode_quality_lead_sign_in_may_use_the_shared_admin_pin_and_then_exports(
    qtbot, sim_home, station_ca, fixtures_file, open_window, tmp_path
):
    out = tmp_path / "out"  # exports go into the output folder only
    # The explicit demo-mode option (the shared admin PIN), and the output folder exports go to.
    sim_home.config_file.write_text(f'[people]\nshared_admin_pin = true\n\n[output]\nfolder = "{out}"\n')
    window = open_window(sim_home, station_ca, fixtures_file)
    record_units(sim_home, "line-2")  # another station's units too: a quality lead sees the whole log

    # Without an admin PIN on the station nobody becomes quality lead.
    qtbot.keyClicks(window.operator_field, "Quinn")
    window.quality_lead_button.click()  # the window asks the service whether an admin PIN is set now
    qtbot.waitUntil(lambda: "No admin PIN is set" in window.sign_in_problem.text(), timeout=10_000)
    assert window.operator is None and not hasattr(window, "pin_dialog")

    set_pin(sim_home, PIN)  # in a terminal, while the window is open
    window.quality_lead_button.click()
    qtbot.waitUntil(lambda: hasattr(window, "pin_dialog"), timeout=10_000)
    dialog = window.pin_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5000)
    assert dialog.windowTitle() == "Quality lead sign-in"
    qtbot.keyClicks(dialog.field, "1357")
    qtbot.keyClick(dialog.field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "Refused" in dialog.problem.text(), timeout=10_000)
    assert window.operator is None

    with qtbot.waitSignal(dialog.unlocked, timeout=10_000):
        qtbot.keyClicks(dialog.field, PIN)
        qtbot.keyClick(dialog.field, Qt.Key.Key_Return)
    assert (window.operator, window.role) == ("Quinn", "quality_lead")
    assert "(quality lead)" in window.operator_label.text()

    window.show_mode("audit")
    view = window.audit_view
    assert view.role == "quality_lead" and view.user == "Quinn"
    assert set(view.export_buttons) == {"csv", "jsonl", "pdf"} and view.revoke_button is not None
    qtbot.waitUntil(lambda: not view.busy(), timeout=10_000)
    assert view.model.rowCount() == 3
    with qtbot.waitSignal(view.job_finished, timeout=20_000):
        assert view.export("csv", out / "units.csv")
    assert (out / "units.csv").read_text().count("\n") == 4  # header and three units

    # Signing out and in as a technician takes the quality lead's view away.
    window.sign_out()
    assert window.audit_view is None
    sign_in(qtbot, window, "alice")
    window.show_mode("audit")
    assert window.audit_view.role == "technician" and buttons_saying(window, "Export", "Revoke") == []
