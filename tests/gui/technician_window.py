"""The window as a technician's account runs it on a line PC: ``python -m tests.gui.technician_window OPERATOR
FIXTURE SERIAL`` opens `station-gui`'s window (offscreen) on the station service named by $STATION_SOCKET, signs
OPERATOR in, provisions SERIAL on FIXTURE from the single-board page, opens the Audit tab, and prints one JSON
line: the outcome, what the window showed, and every file it held open while the unit ran (from /proc/self).
With a fourth argument DIR, it also saves pictures of the single-board page (``line-pc-pass.png``) and of the
Audit tab (``line-pc-audit.png``) there, to look at.  With a label printer ([label] printer), it then selects the
unit in the Audit tab, reports the label history the "Reprint label" tooltip shows (read through the service),
reprints, and reports the history read again."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from ui.line import ReprintButton  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.session import Session  # noqa: E402

DEADLINE_MS = 240_000


def open_files() -> set[str]:
    """What this process has open (descriptors) or mapped (memory maps), by path."""
    held = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            held.add(os.readlink(fd))
        except OSError:
            continue
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            held.add(parts[5])
    return held


def main(argv: list[str]) -> int:
    operator, fixture, serial, *pictures = argv
    app = QApplication([sys.argv[0]])
    session = Session.open(None)  # $STATION_SOCKET: the line PC's station service (another account's)
    window = MainWindow(session)
    window.show()
    seen: set[str] = set()
    report: dict[str, object] = {"home": str(session.home.root), "ca_unlocked": session.view.ca_unlocked}
    sample = QTimer()
    sample.setInterval(50)
    sample.timeout.connect(lambda: seen.update(open_files()))
    sample.start()

    def finished(outcome: object) -> None:
        seen.update(open_files())
        if pictures:
            window.grab().save(str(Path(pictures[0]) / "line-pc-pass.png"))
        report.update(
            kind=str(getattr(outcome, "kind", "")),
            message=str(getattr(outcome, "message", "")),
            unit_id=getattr(outcome, "unit_id", None),
            verdict=window.result.verdict.text(),
            label=window.sheet.content.serial if window.sheet is not None else None,
            service=window.service_status.toolTip(),
        )
        window.show_mode(
            "audit"
        )  # the audit tab, read through the service by an account that cannot read the home
        audit_loaded.start()

    def audit_shown() -> None:
        view = window.audit_view
        if view is None or view.busy():
            return
        audit_loaded.stop()
        seen.update(open_files())
        if pictures:
            window.grab().save(str(Path(pictures[0]) / "line-pc-audit.png"))
        report.update(audit_rows=view.model.rowCount())
        button = view.findChild(ReprintButton)
        if button is None:  # no [label] printer: no label history to read
            done()
            return
        # The unit's label history beside "Reprint label", read through the service; then a reprint, and the
        # history read again (each step polled on the event loop: the window never waits).
        view.table.selectRow(0)

        def history_read() -> None:
            if not button.isEnabled() or button.reading:
                return
            report.update(history=button.toolTip())
            window.line_status.clear()
            follow(reprinted)
            button.click()

        def reprinted() -> None:
            if not window.line_status.text().startswith(("🖨", "✗")) or button.reading:
                return
            report.update(reprinted=window.line_status.text(), history_after=button.toolTip())
            history.stop()
            done()

        def follow(step: object) -> None:
            history.timeout.disconnect()
            history.timeout.connect(step)

        history.timeout.connect(history_read)
        history.start()

    def done() -> None:
        seen.update(open_files())
        report.update(files=sorted(seen))
        sample.stop()
        window.close()
        app.quit()

    audit_loaded = QTimer()
    history = QTimer()
    history.setInterval(50)
    audit_loaded.setInterval(50)
    audit_loaded.timeout.connect(audit_shown)
    window.unit_finished.connect(finished)
    assert window.sign_in(operator), window.sign_in_problem.text()
    window.select_fixture(fixture)
    window.scan.setText(
        serial
    )  # as a scanner types it (tests/helpers/technician.py drives the keys themselves)
    assert window.provision(), window.scan_feedback.text()
    QTimer.singleShot(DEADLINE_MS, app.quit)
    app.exec()
    session.close()
    print(json.dumps(report), flush=True)
    return 0 if "files" in report else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
