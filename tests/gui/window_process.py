"""A window in a process of its own, for tests that kill it: ``python -m tests.gui.window_process HOME OPERATOR
SERIAL…`` opens the station's window on HOME (offscreen; it starts the station service), has the service's CA
unlocked with $STATION_CA_PASSPHRASE (sent over the socket, as the window's unlock dialog does), signs OPERATOR
in, scans each SERIAL onto the next free fixture of the Batch tab, presses Start all, and prints ``running <n>``
once every board is at key generation — then waits to be killed."""

from __future__ import annotations

import os
import sys

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from PySide6.QtWidgets import QApplication  # noqa: E402

from ui.app import unlock_service_ca  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.session import Session  # noqa: E402


def main(argv: list[str]) -> int:
    home, operator, *serials = argv
    app = QApplication([sys.argv[0]])
    session = Session.open(home)
    assert unlock_service_ca(session)  # $STATION_CA_PASSPHRASE, sent to the service: no dialog
    window = MainWindow(session)
    window.show()
    assert window.sign_in(operator)
    window.show_mode("batch")
    for serial in serials:
        outcome = window.batch.handle_scan(serial)
        assert outcome.accepted, outcome.message
    assert window.batch.start_all() == len(serials)
    said = False

    def report(_event: object) -> None:
        nonlocal said
        slots = [slot for slot in window.batch.board.slots.values() if slot.serial in serials]
        if not said and len(slots) == len(serials) and all(slot.step == "keygen" for slot in slots):
            said = True
            print(f"running {len(slots)} service {window.engine.service_text}", flush=True)

    window.engine.delivered.connect(report)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
