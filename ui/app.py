"""`station-gui` / `python -m ui.app`: open the station home, unlock the CA, show the window.

Without a display (no DISPLAY / WAYLAND_DISPLAY and no QT_QPA_PLATFORM) it says how to run headless
and exits 2, instead of letting Qt abort the process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from station import __version__
from station.cli.ca import PASSPHRASE_ENV, load_station_ca
from station.cli.gui import HEADLESS_HELP, display_available
from station.config import load_ca_settings
from station.errors import StationError
from station.home import StationHome
from station.pki import CertificateAuthority
from station.pki.token import TOKEN_FILE
from ui.dialogs import PassphraseDialog, ca_exists, explain_missing_ca
from ui.main_window import MainWindow
from ui.session import Session

APP_NAME = "Welma provisioning station"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="station-gui", description="The provisioning station's window.")
    parser.add_argument("--version", action="version", version=f"station-gui {__version__}")
    parser.add_argument(
        "--home", help="station home (default: $STATION_HOME or ~/.local/share/welma-station)"
    )
    parser.add_argument(
        "--fixtures",
        metavar="FILE",
        help="fixtures file with [[fixture]] tables (default: station.toml's, else HOME/sim/fixtures.toml)",
    )
    # For measurements (python -m bench.measure): sign in as this operator, report "ready to scan", quit.
    parser.add_argument("--probe-startup", metavar="OPERATOR", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def prepare_qt_environment() -> None:
    """Settings Qt reads once, before the first window is painted.

    QT_NO_GUI_THREADPOOL: Qt 6 splits large raster fills across a thread pool and the GUI thread waits
    for those helpers; with a batch of 64 units running, the helpers wait for a CPU and the window
    froze while they did (seen as the GUI thread blocked in QLatch::waitInternal).  The window's fills
    are small enough for the GUI thread alone.
    """
    os.environ.setdefault("QT_NO_GUI_THREADPOOL", "1")


def pyside_drops_none() -> bool:
    """Whether this PySide build loses a reference to None on every void call (PySide6 6.12.0 on
    Python 3.11 does: the process then dies with "deallocating None" after a few thousand calls)."""
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(200):
        probe.setObjectName("probe")
    return sys.getrefcount(None) < before - 100


def unlock_ca(home: StationHome) -> CertificateAuthority | None:
    """The CA, from STATION_CA_PASSPHRASE or the passphrase dialog; None if the technician quits."""
    return unlock_ca_with_secret(home)[0]


def unlock_ca_with_secret(home: StationHome) -> tuple[CertificateAuthority | None, str | None]:
    """The CA and, when the technician typed it in the dialog, what they typed (the window sends it once to a
    station service whose CA is locked; from the environment or a PIN file the service is told otherwise)."""
    while not ca_exists(home.ca_dir):
        if not explain_missing_ca(home.root):
            return None, None
    problem = None
    if (home.ca_dir / TOKEN_FILE).exists():
        # A CA in a token: the PIN comes from [ca] pin_file or the dialog, never from the environment.
        if load_ca_settings(home.config_file).pin_file is not None:
            try:
                return load_station_ca(home), None
            except StationError as exc:
                problem = f"the token could not be unlocked with [ca] pin_file: {exc}"
        dialog = PassphraseDialog(home.ca_dir, problem=problem)
        dialog.exec()
        return dialog.ca, dialog.secret
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        try:
            return CertificateAuthority.load(home.ca_dir, passphrase=from_env.encode()), None
        except StationError as exc:
            problem = f"the passphrase in {PASSPHRASE_ENV} was not accepted: {exc}"
    dialog = PassphraseDialog(home.ca_dir, problem=problem)
    dialog.exec()
    return dialog.ca, dialog.secret


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    if not display_available():
        print(HEADLESS_HELP, file=sys.stderr)
        return 2
    prepare_qt_environment()
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "station-gui"])
    assert isinstance(app, QApplication)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    if pyside_drops_none():
        message = (
            "This PySide6 build drops references to None (PySide6-Essentials 6.12.0 on Python 3.11) and "
            "would crash within minutes — install another version: pip install 'PySide6-Essentials!=6.12.0'"
        )
        print(f"error: {message}", file=sys.stderr)
        return 1
    try:
        session = Session.open(args.home, args.fixtures)
    except StationError as exc:
        QMessageBox.critical(None, APP_NAME, f"The station cannot start:\n\n{exc}")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        ca, secret = unlock_ca_with_secret(session.home)
        if ca is None:
            return 1
        window = MainWindow(session, ca, ca_secret=secret)
        del secret
        window.show()
        window.raise_()
        window.activateWindow()
        if args.probe_startup:
            _probe_startup(window, args.probe_startup, started)
        # The units run in the station service (started for this user when none answered): closing or killing
        # the window leaves them running; a window opened later shows them.
        return app.exec()
    finally:
        session.close()


def _probe_startup(window: MainWindow, operator: str, started: float) -> None:
    """Sign in as ``operator`` and quit once the scan field has focus, printing when that was."""

    def report() -> None:
        focused = window.scan.hasFocus()
        print(
            f"ready-to-scan wall={time.time():.6f} in-process={time.monotonic() - started:.3f}s "
            f"scan-focused={focused}",
            flush=True,
        )
        window.close()

    window.ready.connect(lambda: QTimer.singleShot(0, report))
    window.sign_in(operator)


if __name__ == "__main__":
    import multiprocessing

    multiprocessing.freeze_support()  # units run in worker processes (see packaging/bundle_entry.py)
    sys.exit(main())
