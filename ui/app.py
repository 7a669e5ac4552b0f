"""`station-gui` / `python -m ui.app`: reach the station service (it owns the home, the CA and the audit log),
have its CA unlocked if it is locked, show the window.

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
from station.cli.ca import PASSPHRASE_ENV
from station.cli.gui import HEADLESS_HELP, display_available
from station.errors import StationError
from ui.bridge import TaskPool
from ui.dialogs import CaUnlockDialog, explain_missing_ca
from ui.main_window import MainWindow
from ui.session import Session

APP_NAME = "Welma provisioning station"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="station-gui", description="The provisioning station's window.")
    parser.add_argument("--version", action="version", version=f"station-gui {__version__}")
    parser.add_argument(
        "--home",
        help="station home whose per-user service to use (default: the system service's "
        "/run/welma-station/station.sock when present, else $STATION_HOME or ~/.local/share/welma-station)",
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


def unlock_service_ca(session: Session) -> bool:
    """Before the window shows: a station without a CA is explained (an administrator makes one); a CA locked in
    the station service is unlocked from the window — outside production mode with $STATION_CA_PASSPHRASE (sent
    over the socket, never to a child's environment) or else the unlock dialog, which an administrator answers
    (a technician's account is refused by the service, and may open the window anyway: units then wait).
    False only if the technician chose Quit at "no CA yet"."""
    while not session.view.ca.get("exists", True):
        if not explain_missing_ca(session.home.root):
            return False
        session.use_view(session.read_view())
    if session.view.ca_unlocked:
        return True
    problem = None
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env and session.view.ca.get("kind") == "file" and not session.config.production:
        try:
            session.client.call("ca_unlock", {"secret": from_env})
            return True
        except StationError as exc:
            problem = f"the passphrase in {PASSPHRASE_ENV} was not accepted: {exc}"
    pool = TaskPool()
    client = session.client
    dialog = CaUnlockDialog(
        lambda secret: client.call("ca_unlock", {"secret": secret}),
        pool,
        session.view.ca,
        problem=problem,
        cancel_text="&Later",  # the window opens; units wait for the CA (the dialog comes back when one is asked)
    )
    dialog.exec()
    pool.shutdown(2000)
    return True


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
        if not unlock_service_ca(session):
            return 1
        window = MainWindow(session)
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
    """Sign in as ``operator`` and quit once the scan field has focus, printing when that was.

    The scan field is made the focus widget when the window is ready, but it *has* focus only once the display
    server has activated the window — under X without a window manager, on a loaded machine, that can come a little
    after ``ready``. So the probe looks every 10 ms and reports the first time the field has focus, or after 10 s
    with ``scan-focused=False`` (the window never took the keyboard: a scanner's keystrokes would go elsewhere)."""
    deadline = time.monotonic() + 10.0

    def report() -> None:
        focused = window.scan.hasFocus()
        if not focused and time.monotonic() < deadline:
            QTimer.singleShot(10, report)
            return
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
