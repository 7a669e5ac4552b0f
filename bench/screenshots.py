"""`python -m bench.screenshots`: pictures of the window in its idle, running, PASS and FAIL states,
taken while it provisions real simulated boards, plus the label (needs root for the simulator).
With ``--batch``: the Batch tab's grid (idle, running, finished with a failure) and the quality
lead's audit log instead. With ``--orders``: the window building a work order (order-running).

Run it under a virtual X display so the real platform plugin draws the window::

    xvfb-run -a -s "-screen 0 1280x800x24" env QT_QPA_PLATFORM=xcb .venv/bin/python -m bench.screenshots
    xvfb-run -a -s "-screen 0 1280x800x24" env QT_QPA_PLATFORM=xcb .venv/bin/python -m bench.screenshots --batch
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtWidgets import QApplication

from bench.demo_station import DEMO_PASSPHRASE, demo_station, ensure_display, pause, wait_for
from station.admin import StationSettings, save_settings
from station.audit import AuditLog
from station.flow import FlowEvent
from station.orders import read_order_file
from station.profiles import load_profile
from station.states import UnitState
from ui.audit_view import AuditView
from ui.label import label_png
from ui.main_window import MainWindow
from ui.session import Session

SERIALS = ("202600000000041", "202600000000042", "202600000000043")
BATCH_FIXTURES = 8
# The board whose SSH connection drops during key generation in the batch pictures.
BATCH_FAULTY = "sim-06"
UNIT_TIMEOUT_S = 180


def take(window: MainWindow, out: Path, name: str, suffix: str) -> Path:
    pause(0.3)  # let the last repaint land
    path = out / f"{name}{suffix}.png"
    if not window.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    print(f"wrote {path}", flush=True)
    return path


def settle(view: AuditView, timeout_s: float = 60) -> None:
    """Until the audit view's reads (pages, the unit's detail, the certificate's text) have come back."""
    end = time.monotonic() + timeout_s
    while view.busy() and time.monotonic() < end:
        pause(0.1)


def provision(window: MainWindow, fixture: str, serial: str) -> None:
    window.select_fixture(fixture)
    window.scan.setText(serial)
    window.accept_scan(serial)
    window.provision()


def batch_pictures(out: Path, suffix: str, keygen_delay: float, large_font: bool) -> int:
    """The Batch tab while eight simulated boards go through it (one drops its connection in key
    generation), then the quality lead's audit log on that batch's failed unit."""
    with demo_station(
        BATCH_FIXTURES, keygen_delay=keygen_delay, boot_delay=0.5, faults={BATCH_FAULTY: "drop-ssh"}
    ) as demo:
        if large_font:
            save_settings(demo.home, StationSettings(large_font=True))
        session = Session.open(str(demo.home.root))
        session.client.call(
            "ca_unlock", {"secret": DEMO_PASSPHRASE}
        )  # as typed in the window's unlock dialog
        window = MainWindow(session)
        view = window.batch
        try:
            window.resize(1280, 800)
            window.show()
            # The picture of the audit log is a quality lead's (the window asks the admin PIN for that
            # role; here nobody types it).
            window.sign_in("Alice Martin", role="quality_lead")
            window.show_mode("batch")
            # A first board, so the audit history knows how long each step takes (the time left).
            view.handle_scan(f"FIXTURE:sim-0{BATCH_FIXTURES}")
            view.handle_scan("202600000000100")
            view.start_all()
            wait_for(view.idle, UNIT_TIMEOUT_S)
            view.new_batch()

            for n in range(1, BATCH_FIXTURES):  # every fixture but the last, which is highlighted next
                view.handle_scan(f"2026000000001{n:02d}")
            view.handle_scan("202600000000101")  # scanned twice: refused, shown under the scan field
            take(window, out, "batch-idle", suffix)

            view.start_all()
            started = time.monotonic()
            while time.monotonic() - started < UNIT_TIMEOUT_S and not all(
                slot.step == "keygen" for slot in view.board.slots.values() if slot.active
            ):
                pause(0.2)
            pause(keygen_delay / 2)
            take(window, out, "batch-running", suffix)
            wait_for(view.idle, UNIT_TIMEOUT_S)
            take(window, out, "batch-finished", suffix)
            passed = view.board.counts().passed

            window.show_mode("audit")
            audit = window.audit_view
            assert audit is not None
            settle(audit)  # read through the station service, off the GUI thread
            for row in range(audit.model.rowCount()):
                unit = audit.model.unit_at(row)
                if unit is not None and unit.state == UnitState.FAILED:
                    audit.select_row(row)
                    break
            settle(audit)
            pause(1.0)
            take(window, out, "audit", suffix)
        finally:
            window.close()
            pause(0.2)
            session.close()
    return 0 if passed == BATCH_FIXTURES - 1 else 1


def order_pictures(out: Path, suffix: str, keygen_delay: float) -> int:
    """The window while the third board of a five-board work order runs (two other orders open)."""
    with demo_station(3, keygen_delay=keygen_delay, boot_delay=0.5) as demo:
        demo.home.config_file.write_text('[station]\nname = "line-1"\n\n[orders]\nrequired = true\n')
        orders = demo.home.root / "orders.csv"
        orders.write_text(
            "order,profile,quantity,serials,due\n"
            "WO-2026-0142,welma-optee,5,202600000000041-202600000000045,2026-12-18\n"
            "WO-2026-0143,welma-optee,3,202600000000201-202600000000203,2026-12-22\n"
        )
        with AuditLog(demo.home.audit_db) as log:
            log.orders.import_orders(
                read_order_file(orders, profiles=lambda name: load_profile(name)), by="Q. Lead"
            )
        session = Session.open(str(demo.home.root))
        session.client.call(
            "ca_unlock", {"secret": DEMO_PASSPHRASE}
        )  # as typed in the window's unlock dialog
        window = MainWindow(session)
        try:
            window.resize(1280, 800)
            window.show()
            window.sign_in("Alice Martin")
            wait_for(window.orders.changed, 10, lambda: len(window.orders.open_orders) == 2)
            window.orders.pick("WO-2026-0142")
            for fixture, serial in (("sim-01", "202600000000041"), ("sim-02", "202600000000042")):
                provision(window, fixture, serial)
                wait_for(window.unit_finished, UNIT_TIMEOUT_S)
                while window.runner.running:  # the unit's thread ends just after its outcome
                    pause(0.1)
            pause(1.0)
            provision(window, "sim-03", "202600000000043")
            wait_for(
                window.runner.flow_event,
                UNIT_TIMEOUT_S,
                lambda event: (
                    isinstance(event, FlowEvent) and event.kind == "step_started" and event.step == "keygen"
                ),
            )
            pause(keygen_delay / 2)
            take(window, out, "order-running", suffix)
            (outcome,) = wait_for(window.unit_finished, UNIT_TIMEOUT_S)
            pause(1.0)
        finally:
            window.close()
            pause(0.2)
            session.close()
    return 0 if outcome.kind == "passed" else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("assets/screenshots"), help="where to write the PNGs"
    )
    parser.add_argument(
        "--large-font", action="store_true", help="use the large-font setting (files are named *-large.png)"
    )
    parser.add_argument(
        "--keygen-delay",
        type=float,
        default=6.0,
        help="seconds a simulated key generation takes (a real OP-TEE board: 6–65 s)",
    )
    parser.add_argument(
        "--batch",
        action="store_true",
        help="the Batch tab (batch-idle, batch-running, batch-finished) and the audit log (audit)",
    )
    parser.add_argument(
        "--orders", action="store_true", help="the window building a work order (order-running)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-large" if args.large_font else ""
    ensure_display()
    app = QApplication.instance() or QApplication(["station-gui"])
    if args.batch:
        status = batch_pictures(args.out, suffix, args.keygen_delay, args.large_font)
        app.processEvents()
        return status
    if args.orders:
        status = order_pictures(args.out, suffix, args.keygen_delay)
        app.processEvents()
        return status
    with demo_station(
        3, keygen_delay=args.keygen_delay, boot_delay=0.5, faults={"sim-03": "drop-ssh"}
    ) as demo:
        if args.large_font:
            save_settings(demo.home, StationSettings(large_font=True))
        session = Session.open(str(demo.home.root))
        session.client.call(
            "ca_unlock", {"secret": DEMO_PASSPHRASE}
        )  # as typed in the window's unlock dialog
        window = MainWindow(session)
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
            wait_for(
                window.runner.flow_event,
                UNIT_TIMEOUT_S,
                lambda event: (
                    isinstance(event, FlowEvent) and event.kind == "step_started" and event.step == "keygen"
                ),
            )
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
