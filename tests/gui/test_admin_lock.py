"""Settings belong to the administrator: technicians cannot change them, a wrong PIN is refused,
the right one opens them, and what is saved takes effect at once."""

from __future__ import annotations

import stat

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QMessageBox

from station.admin import load_settings, pin_path, set_pin
from tests.helpers.technician import sign_in

pytestmark = pytest.mark.gui

PIN = "2468"


def editable_setting_widgets(window):
    """Inputs in the main window other than the scan and sign-in fields and the work order the technician
    picks (there must be none)."""
    inputs = [
        *window.findChildren(QCheckBox),
        *window.findChildren(QComboBox),
        *window.findChildren(QLineEdit),
    ]
    return [
        w
        for w in inputs
        if w.isVisible()
        and w not in (window.scan, window.operator_field, window.orders.picker)
        and w.window() is window
    ]


def test_without_an_admin_pin_the_settings_stay_locked_and_say_how_to_set_one(
    qtbot, sim_home, station_ca, fixtures_file, open_window, monkeypatch
):
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    assert editable_setting_widgets(window) == []
    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda parent, title, text, *rest: shown.append(text))
    window.settings_button.click()  # the window asks the service whether a PIN is set now
    qtbot.waitUntil(lambda: len(shown) == 1, timeout=10_000)
    assert "admin set-pin" in shown[0]
    assert not hasattr(window, "settings_dialog")


def test_a_wrong_pin_is_refused_and_the_right_one_opens_the_settings(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    set_pin(sim_home, PIN)
    assert stat.S_IMODE(pin_path(sim_home).stat().st_mode) == 0o600
    assert PIN not in pin_path(sim_home).read_text()
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")

    qtbot.keyClick(window, Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)  # Ctrl+,
    qtbot.waitUntil(lambda: hasattr(window, "pin_dialog"), timeout=10_000)
    dialog = window.pin_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5000)
    qtbot.keyClicks(dialog.field, "1357")
    qtbot.keyClick(dialog.field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "Refused" in dialog.problem.text(), timeout=10_000)
    assert "wrong PIN" in dialog.problem.text()
    assert dialog.isVisible() and not hasattr(window, "settings_dialog")
    assert dialog.field.text() == "" and dialog.field.isEnabled()

    with qtbot.waitSignal(dialog.unlocked, timeout=10_000):
        qtbot.keyClicks(dialog.field, PIN)
        qtbot.keyClick(dialog.field, Qt.Key.Key_Return)
    settings = window.settings_dialog
    qtbot.waitUntil(settings.isVisible, timeout=5000)
    settings.auto_start.setChecked(True)
    settings.large_font.setChecked(True)
    settings.label_layout.setCurrentIndex(settings.label_layout.findData("50x25"))
    with qtbot.waitSignal(settings.accepted, timeout=5000):
        settings.save()

    saved = load_settings(sim_home)
    assert (saved.auto_start, saved.large_font, saved.label_layout) == (True, True, "50x25")
    assert "Auto-start on scan: <b>on</b>" in window.mode_label.text()
    assert window.font().pointSizeF() > 13
    assert "50 × 25 mm" in window.status.text()


def test_a_settings_change_that_cannot_work_is_not_saved(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    set_pin(sim_home, PIN)
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    window.open_settings()
    qtbot.waitUntil(lambda: hasattr(window, "pin_dialog"), timeout=10_000)
    with qtbot.waitSignal(window.pin_dialog.unlocked, timeout=10_000):
        window.pin_dialog.field.setText(PIN)
        window.pin_dialog.check()
    settings = window.settings_dialog
    settings.fixtures.setText(str(sim_home.root / "missing.toml"))
    settings.save()  # checked by the station service, which refuses it
    qtbot.waitUntil(lambda: "does not exist" in settings.problem.text(), timeout=10_000)
    assert settings.isVisible() and "Not saved" in settings.problem.text()
    assert load_settings(sim_home).fixtures_file is None
    settings.reject()


def test_repeated_wrong_pins_lock_the_settings_for_a_while(
    qtbot, sim_home, station_ca, fixtures_file, open_window
):
    set_pin(sim_home, PIN)
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    window.open_settings()
    qtbot.waitUntil(lambda: hasattr(window, "pin_dialog"), timeout=10_000)
    dialog = window.pin_dialog
    for _ in range(5):
        dialog.field.setText("0001")
        dialog.check()
        qtbot.waitUntil(dialog.field.isEnabled, timeout=10_000)
    assert "locked for 60 s" in dialog.problem.text()
    dialog.field.setText(PIN)
    dialog.check()
    qtbot.waitUntil(dialog.field.isEnabled, timeout=10_000)
    assert "too many wrong PINs" in dialog.problem.text()
    assert not hasattr(window, "settings_dialog")
    dialog.reject()
