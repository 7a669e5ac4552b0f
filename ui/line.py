"""The line's parts in the window: the serial scanner's reads as a signal, the label printer's and the MES'
words in the status bar, and the "Reprint label" button of a unit's detail.

Everything here only relays: the scanner thread, the label-printer thread and the MES outboxes live in
:mod:`station.line`; their callbacks run on those threads and reach the GUI thread as queued signals.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QPushButton, QWidget

from station.audit import Unit
from station.config import ScannerSettings
from station.line.handoff import LineHandOff
from station.line.labels import PrintOutcome
from station.line.scanner import SerialScanner
from station.states import UnitState


class LineEvents(QObject):
    """What the line's threads say, delivered on the GUI thread."""

    scanned = Signal(str)  # a code read by the serial scanner
    scanner_state = Signal(bool, str)  # connected?, words for the status bar
    message = Signal(str)  # label printer / MES, in words
    printed = Signal(object)  # PrintOutcome

    def __init__(
        self, handoff: LineHandOff | None, scanner: ScannerSettings, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.handoff = handoff
        if handoff is not None:
            handoff.notify = self.message.emit
            handoff.printed = self.printed.emit
        self.scanner: SerialScanner | None = None
        if scanner.device:
            self.scanner = SerialScanner(scanner, on_scan=self.scanned.emit, on_state=self.scanner_state.emit)

    def start(self) -> None:
        if self.scanner is not None:
            self.scanner.start()

    def stop(self) -> None:
        if self.scanner is not None:
            self.scanner.stop()
        if self.handoff is not None:
            self.handoff.notify = lambda message: None
            self.handoff.printed = lambda outcome: None


class ReprintButton(QPushButton):
    """Reprints the shown unit's label on the line's label printer; the reprint is recorded in the audit log."""

    def __init__(self, handoff: LineHandOff, user: str, parent: QWidget | None = None) -> None:
        super().__init__("Reprint &label", parent)
        self.handoff = handoff
        self.user = user
        self.unit: Unit | None = None
        self.setToolTip(f"Print this board's label again on {handoff.config.label.printer} (recorded)")
        self.setEnabled(False)
        self.clicked.connect(self.reprint)

    def show_unit(self, unit: object) -> None:
        self.unit = unit if isinstance(unit, Unit) else None
        self.setEnabled(
            self.unit is not None
            and self.unit.state == UnitState.PASSED
            and bool(self.unit.certificate_fingerprint)
        )
        self.setToolTip(self.history())

    def history(self) -> str:
        """The shown unit's label prints, as the audit log recorded them (newest last)."""
        printer = self.handoff.config.label.printer
        if self.unit is None:
            return f"Print the selected board's label again on {printer} (recorded)"
        prints = self.handoff.labels.audit.label_prints(self.unit.id)
        if not prints:
            return f"No label printed yet for {self.unit.serial} — print it on {printer} (recorded)"
        lines = [
            f"{p.at.astimezone():%Y-%m-%d %H:%M:%S}  {'reprint' if p.reprint else 'print'} by {p.by}: "
            f"{'printed' if p.printed else 'not printed'}"
            for p in prints[-10:]
        ]
        return f"Labels of {self.unit.serial}:\n" + "\n".join(lines)

    def reprint(self) -> None:
        if self.unit is not None:
            self.handoff.request_print(self.unit.id, by=self.user, reprint=True)

    def refresh(self, _outcome: object = None) -> None:
        """A label was printed (or refused): the history in the tooltip is out of date."""
        self.setToolTip(self.history())


def outcome_text(outcome: PrintOutcome) -> str:
    return ("🖨 " if outcome.printed else "✗ ") + outcome.message
