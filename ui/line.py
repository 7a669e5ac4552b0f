"""The line's parts in the window: the serial scanner's reads as a signal (the scanner is a peripheral of the
line PC, read by the window), and the "Reprint label" button of a unit's detail.

The label printer and the MES sender are the station service's (one sender per station): the window asks the
service to print (``labels``) and shows what it answered; the scanner thread lives in :mod:`station.line`, its
callbacks reach the GUI thread as queued signals.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QPushButton, QWidget

from station.audit import Unit
from station.audit.records import LabelPrint
from station.config import ScannerSettings
from station.line.labels import PrintOutcome
from station.line.scanner import SerialScanner
from station.states import UnitState


class LineEvents(QObject):
    """What the line PC's serial scanner says, delivered on the GUI thread; ``printed`` when the station service
    answered a label print the window asked for (its answer: ``message``, ``printed``)."""

    scanned = Signal(str)  # a code read by the serial scanner
    scanner_state = Signal(bool, str)  # connected?, words for the status bar
    printed = Signal(object)  # the service's answer to ``labels``

    def __init__(self, scanner: ScannerSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.scanner: SerialScanner | None = None
        if scanner.device:
            self.scanner = SerialScanner(scanner, on_scan=self.scanned.emit, on_state=self.scanner_state.emit)

    def start(self) -> None:
        if self.scanner is not None:
            self.scanner.start()

    def stop(self) -> None:
        if self.scanner is not None:
            self.scanner.stop()


class ReprintButton(QPushButton):
    """Reprints the shown unit's label on the line's label printer, through the station service (``labels``:
    it prints and records the reprint and who asked)."""

    def __init__(
        self,
        printer: str,
        print_serial: Callable[[str], None],
        prints: Callable[[int], list[LabelPrint]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Reprint &label", parent)
        self.printer = printer
        self._print_serial = print_serial
        self._prints = prints
        self.unit: Unit | None = None
        self.setToolTip(f"Print this board's label again on {printer} (recorded)")
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
        printer = self.printer
        if self.unit is None:
            return f"Print the selected board's label again on {printer} (recorded)"
        prints = self._prints(self.unit.id)
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
            self._print_serial(self.unit.serial)

    def refresh(self, _outcome: object = None) -> None:
        """A label was printed (or refused): the history in the tooltip is out of date."""
        self.setToolTip(self.history())


def outcome_text(outcome: PrintOutcome) -> str:
    return ("🖨 " if outcome.printed else "✗ ") + outcome.message
