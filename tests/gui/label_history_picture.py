"""A picture of the "Reprint label" tooltip, to look at (not a test): the label history of a unit read through
the station service, with a print the printer refused and two reprints —
``xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python -m tests.gui.label_history_picture OUT_DIR`` writes
``label-history.png`` there."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QApplication, QToolTip

from station.audit import AuditLog
from station.home import StationHome
from station.pki import CertificateAuthority
from tests.gui.client_pictures import screen, stop_service, wait
from tests.helpers.audit import make_certificate, start
from tests.helpers.line_servers import FakeZplPrinter
from ui.line import ReprintButton
from ui.main_window import MainWindow
from ui.session import Session

SERIAL = "202600000000042"


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication([sys.argv[0]])
    printer = FakeZplPrinter()
    with tempfile.TemporaryDirectory(prefix="welma-label-history-") as base:
        home = StationHome(Path(base) / "home").create()
        CertificateAuthority.init(home.ca_dir, passphrase=b"picture passphrase")
        home.config_file.write_text(f'[station]\nname = "line-1"\n\n[label]\nprinter = "{printer.url}"\n')
        with AuditLog(home.audit_db) as log:
            unit = start(log, SERIAL, operator="alice")
            log.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{SERIAL}"))
            log.finish_unit(unit.id, result="passed")
            log.record_label_print(
                unit.id,
                by="alice",
                printer=printer.url,
                reprint=False,
                printed=False,
                message=f"printer {printer.url} is out of labels — load a new roll and close the print head",
            )
            log.record_label_print(
                unit.id, by="alice", printer=printer.url, reprint=True, printed=True, message="sent"
            )
        session = Session.open(str(home.root))
        window = MainWindow(session)
        try:
            window.resize(1280, 800)
            window.show()
            window.sign_in("bob")
            window.show_mode("audit")
            wait(app, lambda: window.audit_view is not None and window.audit_view.model.rowCount() == 1)
            view = window.audit_view
            assert view is not None
            view.table.selectRow(0)
            button = view.findChild(ReprintButton)
            assert button is not None
            wait(app, lambda: button.isEnabled() and not button.reading)
            button.click()  # a reprint through the service: the tooltip reads the history again
            wait(app, lambda: "reprint by bob" in button.toolTip() and not button.reading)
            QToolTip.showText(button.mapToGlobal(QPoint(10, button.height())), button.toolTip(), button)
            screen(app, out / "label-history.png")
        finally:
            window.close()
            session.close()
            stop_service(home)
            printer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
