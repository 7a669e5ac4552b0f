"""Starting the station: no display is explained (exit 2), a missing CA is explained, a wrong CA
passphrase is said to be wrong and asked again, and a real process reaches "ready to scan"."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from argparse import Namespace

import pytest
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLineEdit, QMessageBox, QWidget

from station.cli.gui import display_available, gui_argv
from tests.gui.conftest import PASSPHRASE, stop_service
from tests.helpers.modal import answering_modal
from ui.app import _probe_startup, unlock_service_ca
from ui.bridge import TaskPool
from ui.dialogs import CaUnlockDialog
from ui.session import Session

pytestmark = pytest.mark.gui

PROCESS_TIMEOUT_S = 60


def without_display() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}


@pytest.mark.parametrize("command", [["station", "--home", "{home}", "gui"], ["ui.app", "--home", "{home}"]])
def test_without_a_display_the_gui_explains_how_to_run_headless_and_exits_2(tmp_path, command):
    argv = [sys.executable, "-m", *(word.format(home=tmp_path) for word in command)]
    done = subprocess.run(
        argv, env=without_display(), capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S
    )
    assert done.returncode == 2, done.stderr
    assert "xvfb-run -a station-gui" in done.stderr and "QT_QPA_PLATFORM=offscreen" in done.stderr


def test_station_gui_starts_the_window_with_the_same_home_and_never_imports_qt(tmp_path):
    argv = gui_argv(Namespace(home=str(tmp_path), fixtures="/etc/fx.toml"))
    assert argv == [sys.executable, "-m", "ui.app", "--home", str(tmp_path), "--fixtures", "/etc/fx.toml"]
    assert display_available({"QT_QPA_PLATFORM": "offscreen"}) and display_available({"DISPLAY": ":99"})
    assert not display_available({}) and not display_available({"QT_QPA_PLATFORM": "xcb"})
    assert not display_available({"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":99"})
    probe = (
        "import sys, station.cli.gui; "
        "sys.exit(any(m.split('.')[0] in ('PySide6', 'shiboken6', 'ui') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", probe], timeout=PROCESS_TIMEOUT_S).returncode == 0


@pytest.fixture
def session(sim_home):
    """A window's session on ``sim_home``: the station service started for this account (its CA locked)."""
    opened = Session.open(str(sim_home.root))
    yield opened
    opened.close()
    stop_service(sim_home)


def test_a_wrong_passphrase_is_said_to_be_wrong_and_asked_again(qtbot, sim_home, station_ca, session):
    assert session.view.ca == {"exists": True, "kind": "file"} and not session.view.ca_unlocked
    pool = TaskPool()
    dialog = CaUnlockDialog(
        lambda secret: session.client.call("ca_unlock", {"secret": secret}), pool, session.view.ca
    )
    qtbot.addWidget(dialog)
    dialog.open()
    qtbot.keyClicks(dialog.field, "not the passphrase")
    dialog.unlock_button.click()
    assert dialog.field.text() == ""  # never left lying in the field
    qtbot.waitUntil(lambda: "Not unlocked" in dialog.problem.text(), timeout=20_000)
    assert dialog.isVisible() and "passphrase is wrong" in dialog.problem.text()
    with qtbot.waitSignal(dialog.accepted, timeout=20_000):
        qtbot.keyClicks(dialog.field, PASSPHRASE)
        dialog.unlock_button.click()
    assert session.read_view().ca_unlocked  # the service holds the key now; the window never did
    pool.shutdown(2000)


def test_a_wrong_passphrase_in_the_environment_falls_back_to_the_dialog(
    qtbot, sim_home, station_ca, session, monkeypatch
):
    monkeypatch.setenv("STATION_CA_PASSPHRASE", "stale passphrase")
    seen = []

    def answer(dialog: CaUnlockDialog) -> None:
        seen.append(dialog.problem.text())
        dialog.field.setText(PASSPHRASE)
        dialog.unlock_button.click()

    with answering_modal(CaUnlockDialog, answer) as problems:
        assert unlock_service_ca(session)
    assert problems == []
    assert "STATION_CA_PASSPHRASE was not accepted" in seen[0]
    assert session.read_view().ca_unlocked


def test_a_station_without_a_ca_explains_station_ca_init(qtbot, sim_home, session):
    seen = []

    def answer(box: QMessageBox) -> None:
        seen.append(box.informativeText())
        quit_button = next(b for b in box.buttons() if "Quit" in b.text())
        quit_button.click()

    with answering_modal(QMessageBox, answer) as problems:
        assert unlock_service_ca(session) is False
    assert problems == []
    assert f"station --home {sim_home.root} ca init" in seen[0]


def test_a_real_process_starts_signs_in_and_is_ready_to_scan(sim_home, station_ca):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", STATION_CA_PASSPHRASE=PASSPHRASE)
    done = subprocess.run(
        [sys.executable, "-m", "ui.app", "--home", str(sim_home.root), "--probe-startup", "alice"],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert "ready-to-scan" in done.stdout and "scan-focused=True" in done.stdout


class _WindowNotYetActive(QWidget):
    """Stands in for MainWindow in --probe-startup: ready is emitted while another window has the keyboard (as
    under X without a window manager, before the display server has activated the new window)."""

    ready = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.scan = QLineEdit(self)
        self.scan.setFocus()

    def sign_in(self, operator: str) -> None:
        self.ready.emit()


def test_the_startup_probe_waits_until_the_window_has_the_keyboard(qtbot, capsys):
    other = QWidget()
    qtbot.addWidget(other)
    other.show()
    other.activateWindow()
    qtbot.waitUntil(other.isActiveWindow)
    window = _WindowNotYetActive()
    qtbot.addWidget(window)
    window.show()
    # The new window is shown but not active: its scan field does not have focus yet.
    other.activateWindow()
    qtbot.waitUntil(other.isActiveWindow)
    assert not window.scan.hasFocus()

    _probe_startup(window, "alice", time.monotonic())
    qtbot.wait(100)
    # Not reported while another window has the keyboard.
    assert "ready-to-scan" not in capsys.readouterr().out
    window.activateWindow()
    # The probe closes the window once it reports.
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert "scan-focused=True" in capsys.readouterr().out
