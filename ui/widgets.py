"""The window's building blocks: scan field, fixture table, step list and the big result panel."""

from __future__ import annotations

import time

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from station.config import Fixture
from station.profiles import STEP_NAMES
from ui.bridge import ProbeResult
from ui.icons import state_icon, state_pixmap
from ui.progress import StepShows, StepState
from ui.style import FIXTURE_STATES, RESULT_STATES, STEP_STATES, emphasise

# A keyboard-wedge scanner types a label in a burst: keys at most this far apart, then Enter.
BURST_MAX_GAP_S = 0.05
BURST_MIN_CHARS = 4


class ScanField(QLineEdit):
    """Where serials arrive, typed or from a keyboard-wedge scanner (a fast burst ending in Enter)."""

    submitted = Signal(str, bool)  # text, whether it arrived as a scanner burst

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._stamps: list[float] = []
        self.setMaxLength(256)  # longer than any serial, so an over-long read is refused with its reason
        self.setClearButtonEnabled(True)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.submitted.emit(self.text().strip(), self.was_burst())
            self._stamps.clear()
            event.accept()
            return
        if event.text() and event.text().isprintable():
            now = time.monotonic()
            if self._stamps and now - self._stamps[-1] > BURST_MAX_GAP_S * 4:
                self._stamps.clear()
            self._stamps.append(now)
        super().keyPressEvent(event)

    def feed(self, code: str) -> None:
        """A code from a serial scanner: it goes through exactly what a keyboard-wedge burst goes through."""
        self.setText(code[: self.maxLength()])
        self._stamps.clear()
        self.submitted.emit(self.text().strip(), True)

    def was_burst(self) -> bool:
        stamps = self._stamps
        if len(stamps) < BURST_MIN_CHARS or len(stamps) < len(self.text().strip()):
            return False
        return all(b - a <= BURST_MAX_GAP_S for a, b in zip(stamps, stamps[1:], strict=False))


class FixtureTable(QTableWidget):
    """Each fixture with its device address and whether the device answers (icon and word)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["Fixture", "Device", "Status"])
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.setAccessibleName("Fixtures")
        self.setTabKeyNavigation(False)  # Tab leaves the table; the arrow keys choose the fixture
        self._rows: dict[str, int] = {}

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        # Typed characters are a scan, not a search for a row: let them go up to the window, which
        # hands them to the scan field.  Arrows, Home/End and Page keys still choose the fixture.
        if (
            event.text().isprintable()
            and event.text().strip()
            and not event.modifiers()
            & ~(Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.KeypadModifier)
        ):
            event.ignore()
            return
        super().keyPressEvent(event)

    def set_fixtures(self, fixtures: tuple[Fixture, ...], selected: str | None) -> None:
        self.setRowCount(len(fixtures))
        self._rows = {}
        for row, fixture in enumerate(fixtures):
            self._rows[fixture.name] = row
            self.setItem(row, 0, QTableWidgetItem(fixture.name))
            self.setItem(row, 1, QTableWidgetItem(fixture.device))
            self._set_status(row, "checking", "not checked yet")
        chosen = self._rows.get(selected or "", 0 if fixtures else -1)
        if chosen >= 0:
            self.selectRow(chosen)

    def select(self, name: str) -> None:
        row = self._rows.get(name)
        if row is not None:
            self.selectRow(row)

    def _set_status(self, row: int, state: str, detail: str) -> None:
        look = FIXTURE_STATES[state]
        item = QTableWidgetItem(state_icon(look, 16), look.word)
        item.setToolTip(detail)
        self.setItem(row, 2, item)

    def show_probe(self, result: ProbeResult) -> None:
        row = self._rows.get(result.fixture)
        if row is not None:
            self._set_status(row, "answers" if result.answers else "silent", result.detail)

    def status_word(self, name: str) -> str:
        row = self._rows.get(name)
        item = self.item(row, 2) if row is not None else None
        return item.text() if item is not None else ""

    def selected_name(self) -> str | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        if not rows:
            return None
        item = self.item(rows[0].row(), 0)
        return item.text() if item is not None else None


class StepList(QTreeWidget):
    """Each step of the unit: number and title, state (icon and word), time taken or usually taken."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(3)
        self.setHeaderLabels(["Step", "State", "Time"])
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setAccessibleName("Steps")
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self._items: dict[str, QTreeWidgetItem] = {}

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        """Tall enough for every step of the tutorial without scrolling."""
        rows = max(self.topLevelItemCount(), len(STEP_NAMES))
        row_height = self.sizeHintForRow(0) if self.topLevelItemCount() else self.fontMetrics().height() + 4
        height = self.header().sizeHint().height() + rows * row_height + 2 * self.frameWidth() + 4
        return QSize(super().sizeHint().width(), height)

    def set_steps(self, steps: list[StepState]) -> None:
        self.clear()
        self._items = {}
        for index, step in enumerate(steps, 1):
            item = QTreeWidgetItem([f"{index:2}. {step.title}", "", ""])
            item.setTextAlignment(2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.addTopLevelItem(item)
            self._items[step.name] = item
            self.show_step(step)
        self.updateGeometry()

    def show_step(self, step: StepState) -> None:
        item = self._items.get(step.name)
        if item is None:
            return
        look = STEP_STATES.get(step.state, STEP_STATES[StepShows.WAITING])
        word = look.word
        if step.state in (StepShows.RUNNING, StepShows.RETRYING) and step.attempt > 1:
            word += f" (try {step.attempt})"
        item.setIcon(1, state_icon(look, 18))
        item.setText(1, word)
        font = QFont(self.font())
        font.setBold(step.state in (StepShows.RUNNING, StepShows.FAILED))
        for column in range(3):
            item.setFont(column, font)
        if step.duration_s is not None:
            item.setText(2, f"{step.duration_s:.1f} s")
            item.setForeground(2, self.palette().text())
        elif step.state == StepShows.WAITING and step.eta_s is not None:
            item.setText(2, f"~{step.eta_s:.1f} s")
            item.setForeground(2, self.palette().placeholderText())
        else:
            item.setText(2, "")
        item.setToolTip(0, step.message[:500] if step.message else step.title)
        if step.state in (StepShows.RUNNING, StepShows.FAILED, StepShows.RETRYING):
            self.scrollToItem(item)  # the step that matters now stays in view

    def show_running_time(self, step: StepState, elapsed_s: float) -> None:
        item = self._items.get(step.name)
        if item is not None:
            usual = f" / ~{step.eta_s:.0f} s" if step.eta_s else ""
            item.setText(2, f"{elapsed_s:.0f} s{usual}")


class ResultPanel(QFrame):
    """The large verdict (icon and word, never colour alone), what happened and what to do next."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(16, 12, 16, 12)
        self.icon = QLabel(self)
        outer.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        column = QVBoxLayout()
        outer.addLayout(column, 1)
        self.verdict = QLabel(self)
        self.verdict.setAccessibleName("Result")
        column.addWidget(self.verdict)
        self.detail = QLabel(self)
        self.detail.setTextFormat(Qt.TextFormat.PlainText)  # device and core messages are never markup
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        column.addWidget(self.detail)
        self.next_step = QLabel(self)
        self.next_step.setTextFormat(Qt.TextFormat.PlainText)
        self.next_step.setWordWrap(True)
        emphasise(self.next_step)
        column.addWidget(self.next_step)
        column.addStretch(1)
        self.state = ""
        self._colour = QColor()
        self.set_scale(1.0)
        self.show_state("idle", "", "")

    def set_scale(self, factor: float) -> None:
        """Grow the verdict with the large-font setting."""
        self._scale = factor
        self.icon.setFixedSize(round(64 * factor), round(64 * factor))
        if self.state:
            self.show_state(self.state, self.detail.text(), self.next_step.text().removeprefix("Next: "))

    def show_state(self, state: str, detail: str, next_step: str) -> None:
        look = RESULT_STATES[state]
        self.state = state
        self._colour = QColor(look.color)
        self.icon.setPixmap(state_pixmap(look, round(64 * self._scale)))
        self.verdict.setText(look.word)
        emphasise(self.verdict, look.color, point_size=34 * self._scale)
        self.detail.setText(detail)
        self.detail.setVisible(bool(detail))
        self.next_step.setText(f"Next: {next_step}" if next_step else "")
        self.next_step.setVisible(bool(next_step))
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        # A light tint of the verdict's colour behind, the colour itself as a thick border.
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            tint = QColor(self._colour)
            tint.setAlpha(24)
            painter.setBrush(tint)
            painter.setPen(QPen(self._colour, 3))
            painter.drawRoundedRect(QRectF(self.rect()).adjusted(1.5, 1.5, -1.5, -1.5), 6, 6)
        finally:
            painter.end()
        super().paintEvent(event)
