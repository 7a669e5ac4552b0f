"""The window as a quality lead's account runs it on a line PC: ``python -m tests.gui.quality_window PERSON
[DIR]`` opens `station-gui`'s window (offscreen) on the station service named by $STATION_SOCKET, signs PERSON in
as quality lead, opens the Audit tab's "Whole fleet" scope and prints one JSON line: the login the scope used
(role, account; the DSN without any password), what the scope said, and the fleet units it loaded.  With DIR, it
saves a picture of the scope there (``fleet-scope.png``), to look at.

The sign-in is the window's own ``sign_in(…, role=QUALITY_LEAD)`` (the credential check is the service's and
has its own tests): what is tried here is whose login reads the fleet."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from station.fleet.connection import redact  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.session import Session  # noqa: E402
from ui.window_sign_in import QUALITY_LEAD  # noqa: E402

DEADLINE_MS = 120_000


def main(argv: list[str]) -> int:
    person, *pictures = argv
    app = QApplication([sys.argv[0]])
    session = Session.open(None)  # $STATION_SOCKET: the line PC's station service (another account's)
    window = MainWindow(session)
    window.resize(1280, 800)
    window.show()
    report: dict[str, object] = {"home": str(session.home.root)}
    login = session.fleet_for_view()
    report["login"] = (
        None
        if login is None
        else {
            "role": login.role,
            "account": login.account,
            "dsn": redact(login.dsn),
            "passfile": str(login.passfile) if login.passfile else None,
        }
    )
    assert window.sign_in(person, role=QUALITY_LEAD), window.sign_in_problem.text()
    window.show_mode("audit")
    scope = window.fleet_scope
    if scope is None:
        print(json.dumps({**report, "scope": False}), flush=True)
        return 1
    scope.scope.setCurrentIndex(1)  # "Whole fleet"

    def settled() -> None:
        view = scope.fleet_view
        if view is None:
            return
        text = view.message.text()
        loaded = "units across the fleet loaded" in text and not view.model.loading
        if not loaded and "grant-quality" not in text:
            return
        poll.stop()
        if pictures:
            window.grab().save(str(Path(pictures[0]) / "fleet-scope.png"))
        units = [view.model.unit_at(row) for row in range(view.model.rowCount())]
        report.update(
            scope=True,
            message=text,
            red="color" in view.message.styleSheet(),
            serials=sorted(unit["serial"] for unit in units if unit is not None),
            stations=sorted({unit["station"] for unit in units if unit is not None}),
        )
        window.close()
        app.quit()

    poll = QTimer()
    poll.setInterval(50)
    poll.timeout.connect(settled)
    poll.start()
    QTimer.singleShot(DEADLINE_MS, app.quit)
    app.exec()
    session.close()
    print(json.dumps(report), flush=True)
    return 0 if "message" in report else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
