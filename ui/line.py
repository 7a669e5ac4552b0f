"""The line's parts in the window: the serial scanner's reads as a signal (the scanner is a peripheral of the
line PC, read by the window), and the "Reprint label" button of a unit's detail.

The label printer and the MES sender are the station service's (one sender per station): the window asks the
service to print (``labels``) and shows what it answered; the scanner thread lives in :mod:`station.line`, its
callbacks reach the GUI thread as queued signals.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QPushButton, QToolTip, QWidget
from shiboken6 import isValid

from station.audit import Unit
from station.config import ScannerSettings
from station.errors import StationError
from station.line.labels import PrintOutcome
from station.line.scanner import SerialScanner
from station.states import UnitState
from ui.bridge import LabelHistory

# The widest line of the label history's tooltip, in characters.
TOOLTIP_WIDTH = 110
# The window's task pool's submit (ui.bridge.TaskPool.submit): work, on_done, on_failed → False once closed.
Submit = Callable[[Callable[[], object], Callable[[Any], None], Callable[[BaseException], None]], bool]


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
    it prints and records the reprint and who asked).

    Its tooltip is the unit's label-print history, read through the service too (``label_prints``, the audit tab's
    scope) with ``read_history`` on the window's task pool (``submit``) — never on the GUI thread: "reading the
    label history…" meanwhile, an answer for a unit no longer shown dropped, read again after a print, and a
    service that could not answer said plainly (the reprint itself still works)."""

    def __init__(
        self,
        printer: str,
        print_serial: Callable[[str], None],
        read_history: Callable[[int], LabelHistory],
        submit: Submit,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Reprint &label", parent)
        self.printer = printer
        self._print_serial = print_serial
        self._read_history = read_history
        self._submit = submit
        self.unit: Unit | None = None
        # Which read the tooltip waits for: an answer to any earlier one (another unit, or before a print) is dropped.
        self._asked = 0
        self.reading = False
        self._say(self._idle_words())
        self.setEnabled(False)
        self.clicked.connect(self.reprint)

    def show_unit(self, unit: object) -> None:
        self.unit = unit if isinstance(unit, Unit) else None
        self.setEnabled(
            self.unit is not None
            and self.unit.state == UnitState.PASSED
            and bool(self.unit.certificate_fingerprint)
        )
        self._read()

    def reprint(self) -> None:
        if self.unit is not None:
            self._print_serial(self.unit.serial)

    def refresh(self, _outcome: object = None) -> None:
        """A label was printed (or refused): the history in the tooltip is out of date — read it again."""
        self._read()

    # -- the history, read off the GUI thread -------------------------------------------------------------

    def _idle_words(self) -> str:
        return f"Print the selected board's label again on {self.printer} (recorded)"

    def _read(self) -> None:
        self._asked += 1
        unit = self.unit
        if unit is None:
            self.reading = False
            self._say(self._idle_words())
            return
        asked, unit_id, read = self._asked, unit.id, self._read_history
        self.reading = True
        self._say(f"Labels of {unit.serial}: reading the label history…")
        if not self._submit(
            lambda: read(unit_id),
            lambda history: self._answered(asked, history),
            lambda error: self._failed(asked, error),
        ):
            self._failed(asked, StationError("the window is closing"))

    def _current(self, asked: int) -> Unit | None:
        """The unit shown, if the read ``asked`` is still the one the tooltip waits for (None: drop its answer)."""
        if not isValid(self) or asked != self._asked:
            return None
        return self.unit

    def _answered(self, asked: int, history: object) -> None:
        unit = self._current(asked)
        if unit is None:
            return
        if not isinstance(history, LabelHistory) or history.unit_id != unit.id:
            self._failed(asked, StationError(f"the answer was not unit {unit.id}'s label history"))
            return
        self.reading = False
        self._say(history_text(history, self.printer))

    def _failed(self, asked: int, error: BaseException) -> None:
        unit = self._current(asked)
        if unit is None:
            return
        self.reading = False
        self._say(
            _wrapped(f"Labels of {unit.serial}: the label history could not be read — {error}")
            + f"\n(Reprint still prints on {self.printer}; select the unit again to read its history again.)"
        )

    def _say(self, text: str) -> None:
        self.setToolTip(text)
        if QToolTip.isVisible() and self.underMouse():  # the tooltip shown now follows
            QToolTip.showText(QCursor.pos(), text, self)


def history_text(history: LabelHistory, printer: str) -> str:
    """A unit's label prints as the tooltip says them (newest last)."""
    if not history.prints:
        return f"No label printed yet for {history.serial} — print it on {printer} (recorded)"
    lines = [
        _wrapped(
            f"{p.at.astimezone():%Y-%m-%d %H:%M:%S}  {'reprint' if p.reprint else 'print'} by {p.by}: "
            + ("printed" if p.printed else f"not printed ({p.message})")
        )
        for p in history.prints
    ]
    earlier = ["(earlier prints not shown — the audit log has them all)"] if history.earlier else []
    return f"Labels of {history.serial}:\n" + "\n".join(earlier + lines)


def _wrapped(line: str) -> str:
    """A long line of the tooltip folded (a plain-text tooltip does not wrap by itself)."""
    return textwrap.fill(line, TOOLTIP_WIDTH, subsequent_indent="    ", break_on_hyphens=False)


def outcome_text(outcome: PrintOutcome) -> str:
    return ("🖨 " if outcome.printed else "✗ ") + outcome.message
