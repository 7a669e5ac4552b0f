"""`python -m ui.screenshots`: pictures of the window in its idle, running, PASS and FAIL states,
taken while it provisions real simulated boards, plus the label (needs root for the simulator).

Run it under a virtual X display so the real platform plugin draws the window::

    xvfb-run -a -s "-screen 0 1280x800x24" env QT_QPA_PLATFORM=xcb .venv/bin/python -m ui.screenshots
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtWidgets import QApplication

from station.admin import StationSettings, save_settings
from station.flow import FlowEvent
from ui.demo_station import demo_station, ensure_display, pause, wait_for
from ui.label import label_png
from ui.main_window import MainWindow
from ui.session import Session

SERIALS = ("202600000000041", "202600000000042", "202600000000043")
UNIT_TIMEOUT_S = 180


def take(window: MainWindow, out: Path, name: str, suffix: str) -> Path:
    pause(0.3)  # let the last repaint land
    path = out / f"{name}{suffix}.png"
    if not window.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    print(f"wrote {path}", flush=True)
    return path


def provision(window: MainWindow, fixture: str, serial: str) -> None:
    window.select_fixture(fixture)
    window.scan.setText(serial)
    window.accept_scan(serial)
    window.provision()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("assets/screenshots"), help="where to write the PNGs")
    parser.add_argument("--large-font", action="store_true",
                        help="use the large-font setting (files are named *-large.png)")
    parser.add_argument("--keygen-delay", type=float, default=6.0,
                        help="seconds a simulated key generation takes (a real OP-TEE board: 6–65 s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-large" if args.large_font else ""
    ensure_display()
    app = QApplication.instance() or QApplication(["station-gui"])
    with demo_station(3, keygen_delay=args.keygen_delay, boot_delay=0.5, faults={"sim-03": "drop-ssh"}) as demo:
        if args.large_font:
            save_settings(demo.home, StationSettings(large_font=True))
        session = Session.open(str(demo.home.root))
        window = MainWindow(session, demo.ca)
        try:
            window.resize(1280, 800)
            window.show()
            window.sign_in("Alice Martin")
            # A first board, so the audit history knows how long each step takes (the ETA).
            provision(window, "sim-02", SERIALS[1])
            wait_for(window.unit_finished, UNIT_TIMEOUT_S)
            pause(1.0)

            window.select_fixture("sim-01")
            window.scan.setText(SERIALS[0])
            window.accept_scan(SERIALS[0])
            take(window, args.out, "idle", suffix)

            window.provision()
            wait_for(window.runner.flow_event, UNIT_TIMEOUT_S,
                     lambda event: isinstance(event, FlowEvent) and event.kind == "step_started"
                     and event.step == "keygen")
            pause(args.keygen_delay / 2)
            take(window, args.out, "running", suffix)
            (outcome,) = wait_for(window.unit_finished, UNIT_TIMEOUT_S)
            take(window, args.out, "pass", suffix)
            if window.sheet is not None:
                label = args.out / f"label{suffix}.png"
                label.write_bytes(label_png(window.sheet))
                print(f"wrote {label}", flush=True)

            provision(window, "sim-03", SERIALS[2])  # its SSH connection drops during key generation
            wait_for(window.unit_finished, UNIT_TIMEOUT_S)
            take(window, args.out, "fail", suffix)
        finally:
            window.close()
            pause(0.2)
            session.close()
    app.processEvents()
    return 0 if outcome.kind == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
