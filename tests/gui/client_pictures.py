"""Pictures of the window as a client of the station service, to look at (not a test):
``xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python -m tests.gui.client_pictures OUT_DIR``.

* ``ca-locked.png``: a board started while the service's CA is locked — the unlock dialog over the window, with
  the service's refusal of a wrong passphrase;
* ``reattached.png``: a second window opened while a unit runs in the service: the single-board page follows it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from PySide6.QtWidgets import QApplication

from bench.demo_station import DEMO_PASSPHRASE, demo_station
from station.home import StationHome
from station.service.client import home_socket
from tests.helpers.service import service_pid
from ui.main_window import MainWindow
from ui.session import Session

WAIT_S = 120.0


def wait(app: QApplication, done, timeout_s: float = WAIT_S) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.02)


def screen(app: QApplication, path: Path) -> None:
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    if not app.primaryScreen().grabWindow(0).save(str(path)):
        raise RuntimeError(f"could not write {path}")
    print(f"wrote {path}", flush=True)


def ca_locked(app: QApplication, out: Path) -> None:
    with demo_station(1, keygen_delay=1, boot_delay=0.5) as demo:
        session = Session.open(str(demo.home.root))  # its CA stays locked: nobody typed the passphrase
        window = MainWindow(session)
        try:
            window.resize(1280, 800)
            window.show()
            window.sign_in("alice")
            window.scan.setText("202600000000091")
            window.provision()
            wait(app, lambda: window.ca_dialog is not None and window.ca_dialog.isVisible())
            dialog = window.ca_dialog
            dialog.field.setText("not the passphrase")
            dialog.check()
            wait(app, lambda: "Not unlocked" in dialog.problem.text())
            screen(app, out / "ca-locked.png")
            dialog.field.setText(DEMO_PASSPHRASE)
            dialog.check()
            wait(app, lambda: window.outcome is not None)
        finally:
            window.close()
            session.close()
            stop_service(demo.home)


def reattached(app: QApplication, out: Path) -> None:
    with demo_station(1, keygen_delay=20, boot_delay=0.5) as demo:
        first_session = Session.open(str(demo.home.root))
        first_session.client.call("ca_unlock", {"secret": DEMO_PASSPHRASE})
        first = MainWindow(first_session)
        second_session = second = None
        try:
            first.show()
            first.sign_in("gina")
            first.scan.setText("202600000000092")
            first.provision()
            wait(
                app,
                lambda: (
                    first.progress is not None
                    and first.progress.current is not None
                    and first.progress.current.name == "keygen"
                ),
            )
            first._leave_running()  # closed with Close: the unit goes on in the service
            first.close()
            second_session = Session.open(str(demo.home.root))
            second = MainWindow(second_session)
            second.resize(1280, 800)
            second.show()
            second.sign_in("hugo")
            wait(app, lambda: second.result.state == "running" and second.progress is not None)
            wait(app, lambda: second.progress.current is not None, 30)
            screen(app, out / "reattached.png")
            wait(app, lambda: second.outcome is not None)
            screen(app, out / "reattached-passed.png")
        finally:
            for window, session in ((second, second_session), (first, first_session)):
                if window is not None:
                    window.close()
                if session is not None:
                    session.close()
            stop_service(demo.home)


def stop_service(home: StationHome) -> None:
    """The per-user service the windows started ends by itself once idle; stopped if it does not."""
    pid = service_pid(home_socket(home))
    end = time.monotonic() + 30
    while pid is not None and Path(f"/proc/{pid}").exists() and time.monotonic() < end:
        try:
            os.waitpid(pid, os.WNOHANG)  # a service this process started: reaped here
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if pid is not None and Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGTERM)


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication([sys.argv[0]])
    ca_locked(app, out)
    reattached(app, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
