"""A quality lead at the kiosk signs in with their OWN name and credential (station/people.py), gets a
session that ends by itself and can sign out; wrong credentials lock that person out, the window says
until when, and a new window on the same station still refuses them.  The shared admin PIN is no way in
unless a demo station asks for it."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from station.admin import set_pin
from station.audit import AuditLog
from station.audit.people import people_events
from station.people import Actor, People
from station.roles import Role
from tests.helpers.technician import sign_in

pytestmark = pytest.mark.gui

QUINN_PIN = "482916"
ROOT = Actor(name="root", account="root", administrator=True)


def enrol(home, name: str, role: Role, secret: str, **settings) -> None:
    if settings:
        home.config_file.write_text("[people]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    with AuditLog(home.audit_db) as audit:
        People(home, audit).enrol(name, role, secret, by=ROOT)


def open_credential_dialog(qtbot, window, name: str):
    window.operator_field.setText(name)
    window.quality_lead_button.click()
    dialog = window.person_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5000)
    return dialog


def type_credential(qtbot, dialog, secret: str) -> None:
    qtbot.keyClicks(dialog.field, secret)
    qtbot.keyClick(dialog.field, Qt.Key.Key_Return)


def test_a_quality_lead_signs_in_with_their_own_credential_for_a_limited_time_and_signs_out(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    enrol(sim_home, "Quinn Lee", Role.QUALITY, QUINN_PIN, session_minutes=30)
    set_pin(sim_home, "2468")  # the shared admin PIN is no way in here (not a demo with shared_admin_pin)
    window = open_window(sim_home, station_ca, fixtures_file)

    dialog = open_credential_dialog(qtbot, window, "quinn lee")
    assert dialog.windowTitle() == "Quality lead sign-in" and not hasattr(window, "pin_dialog")
    type_credential(qtbot, dialog, "2468")
    qtbot.waitUntil(lambda: "wrong" in dialog.problem.text(), timeout=15_000)
    assert "4 tries left" in dialog.problem.text() and window.operator is None

    with qtbot.waitSignal(dialog.signed_in, timeout=15_000):
        type_credential(qtbot, dialog, QUINN_PIN)
    assert (window.operator, window.role) == ("Quinn Lee", "quality_lead")
    session = window.elevated
    assert session.role is Role.QUALITY and 29 * 60 < session.remaining_s() <= 30 * 60
    assert "quality lead until" in window.operator_label.text()
    assert window._elevated_ends.isActive() and window._elevated_ends.remainingTime() > 29 * 60 * 1000
    window.show_mode("audit")
    assert window.audit_view.role == "quality_lead" and window.audit_view.user == "Quinn Lee"

    window.sign_out()
    assert window.elevated is None and window.operator is None and not window._elevated_ends.isActive()
    qtbot.waitUntil(lambda: window.pool.active() == 0, timeout=10_000)
    with AuditLog(sim_home.audit_db) as audit:
        actions = [e.action for e in people_events(audit, person="Quinn Lee")]
    assert actions[:3] == ["signed_out", "signed_in", "sign_in_failed"]


def test_the_session_ends_by_itself_and_the_window_says_so(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    enrol(sim_home, "Quinn", Role.QUALITY, QUINN_PIN, session_minutes=0.05)  # 3 s
    window = open_window(sim_home, station_ca, fixtures_file)
    dialog = open_credential_dialog(qtbot, window, "Quinn")
    with qtbot.waitSignal(dialog.signed_in, timeout=15_000):
        type_credential(qtbot, dialog, QUINN_PIN)
    assert window.role == "quality_lead"
    qtbot.waitUntil(lambda: window.operator is None, timeout=15_000)  # the session's time is up
    assert window.elevated is None and window.role == "technician"
    assert "Quinn's quality lead session ended at" in window.sign_in_problem.text()
    qtbot.waitUntil(lambda: window.pool.active() == 0, timeout=10_000)
    with AuditLog(sim_home.audit_db) as audit:
        assert people_events(audit, person="Quinn")[0].detail == "session expired"


def test_wrong_credentials_lock_the_person_out_and_a_new_window_still_refuses_them(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    enrol(sim_home, "Quinn", Role.QUALITY, QUINN_PIN, max_failed_attempts=3, lockout_minutes=10)
    window = open_window(sim_home, station_ca, fixtures_file)
    dialog = open_credential_dialog(qtbot, window, "Quinn")
    for _ in range(3):
        type_credential(qtbot, dialog, "111222")
        qtbot.waitUntil(dialog.field.isEnabled, timeout=15_000)
    assert "3 times in a row — Quinn is locked out until" in dialog.problem.text()
    assert "station people unlock Quinn" in dialog.problem.text()
    type_credential(qtbot, dialog, QUINN_PIN)  # even the right one, now
    qtbot.waitUntil(dialog.field.isEnabled, timeout=15_000)
    assert "locked out" in dialog.problem.text() and window.operator is None
    dialog.reject()
    window.close()

    reopened = open_window(sim_home, station_ca, fixtures_file)
    again = open_credential_dialog(qtbot, reopened, "Quinn")
    type_credential(qtbot, again, QUINN_PIN)
    qtbot.waitUntil(again.field.isEnabled, timeout=15_000)
    assert "Quinn is locked out after 3 wrong credentials, until" in again.problem.text()
    assert reopened.operator is None
    again.reject()


def test_an_administrator_signed_in_opens_the_settings_without_the_shared_pin(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    enrol(sim_home, "Ada", Role.ADMIN, "864209")
    window = open_window(sim_home, station_ca, fixtures_file)
    dialog = open_credential_dialog(qtbot, window, "Ada")
    with qtbot.waitSignal(dialog.signed_in, timeout=15_000):
        type_credential(qtbot, dialog, "864209")
    assert "administrator until" in window.operator_label.text()
    window.open_settings()
    settings = window.settings_dialog
    qtbot.waitUntil(settings.isVisible, timeout=5000)
    assert not hasattr(window, "pin_dialog")
    settings.reject()


def test_a_technician_enrolled_gets_no_elevated_session(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    enrol(sim_home, "Tom", Role.TECHNICIAN, "135792")
    window = open_window(sim_home, station_ca, fixtures_file)
    dialog = open_credential_dialog(qtbot, window, "Tom")
    with qtbot.waitSignal(dialog.signed_in, timeout=15_000):
        type_credential(qtbot, dialog, "135792")
    assert window.operator is None and window.elevated is None
    assert "enrolled as technician" in window.sign_in_problem.text()
    sign_in(qtbot, window, "Tom")
    assert window.role == "technician"
