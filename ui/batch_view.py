"""Batch mode: a grid of fixture slots, each provisioning its own board in its own worker process.

The technician scans a fixture's barcode and then the board's serial (or a serial alone, which goes to
the highlighted next free fixture), presses Start all — or lets auto-start start each board as it is
scanned — and watches every fixture's tile: board, current step, its own progress bar, PASS or FAIL
with the reason, Retry and Abort.  The header counts queued, running, passed and failed boards, the
yield and the time left from the audit history's step medians.

Where a board goes and what counts as a duplicate is :class:`station.batch.SlotBoard`'s business;
each fixture has a :class:`ui.bridge.UnitRunner` of its own over the window's one engine (each unit in
its own worker process), so no fixture waits for another and the GUI thread only receives queued signals.

With 64 fixtures the GUI thread must do little, and only when something changed (bench/gui_batch_stall.py
measures it): a unit's device output is not even sent here; a unit's event only marks its tile dirty,
and a timer repaints dirty tiles and the header four times a second (the running bars' slow creep once a
second); a tile remembers what it shows and calls Qt only for what changed; its progress bar schedules
its repaint instead of repainting at once (QProgressBar.setValue does); tiles have a fixed size, so a new
text never lays the grid out again.  The units' work is in other processes: Start all starts every
fixture at once.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from functools import partial

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPaintEvent, QPalette, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QStyleOptionProgressBar,
    QStylePainter,
    QVBoxLayout,
    QWidget,
)

from station.batch import CANCEL_DEADLINE_S, FIXTURE_SCAN_PREFIX, ScanOutcome, Slot, SlotBoard
from station.config import Fixture
from station.errors import StationError
from station.flow import FlowEvent
from station.states import SlotState
from station.steps import STEPS
from ui.bridge import Ending, Engine, TaskPool, UnitOutcome, UnitPlan, UnitRequest, UnitRunner
from ui.icons import state_pixmap
from ui.progress import UnitProgress, format_duration
from ui.session import Session
from ui.style import BLUE, GREEN, GREY, RED, SLOT_STATES, emphasise, monospace_font
from ui.widgets import ScanField

# How often tiles that changed and the header are repainted while units run; the running tiles'
# time-based progress (the bar creeping through a long step) every PROGRESS_TICKS ticks.
TICK_MS = 250
PROGRESS_TICKS = 4
TILE_WIDTH = 300
TILE_SPACING = 8
ICON_SIZE = 22
REASON_CHARS = 300
REASON_LINES = 4

_OUTCOME_STATE = {
    Ending.PASSED: SlotState.PASSED,
    Ending.FAILED: SlotState.FAILED,
    Ending.ABORTED: SlotState.FAILED,
    Ending.REFUSED: SlotState.REFUSED,
    Ending.NOT_STARTED: SlotState.REFUSED,
}


class SlotProgress(QWidget):
    """A progress bar drawn by the style, that only *schedules* its repaint.

    QProgressBar.setValue repaints synchronously whenever the bar moves by a pixel; with 64 tiles
    that is 64 immediate repaints per refresh on the GUI thread (measured: stalls of half a second in
    a 64-fixture batch).  Here a change calls update(), and Qt paints every bar that changed in one
    pass when the event loop is idle.
    """

    MAXIMUM = 1000

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._value = 0
        self._text = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(18)

    def value(self) -> int:
        return self._value

    def text(self) -> str:
        return self._text

    def set_progress(self, value: int, text: str) -> None:
        """``value`` of MAXIMUM, and the words on the bar."""
        value = max(0, min(self.MAXIMUM, value))
        if (value, text) != (self._value, self._text):
            self._value, self._text = value, text
            self.setAccessibleDescription(text)
            self.update()

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        option = QStyleOptionProgressBar()
        option.initFrom(self)
        option.minimum, option.maximum, option.progress = 0, self.MAXIMUM, self._value
        option.text, option.textVisible = self._text, True
        option.textAlignment = Qt.AlignmentFlag.AlignCenter
        option.state |= QStyle.StateFlag.State_Horizontal
        painter = QStylePainter(self)
        try:
            painter.drawControl(QStyle.ControlElement.CE_ProgressBar, option)
        finally:
            painter.end()


class SlotTile(QFrame):
    """One fixture: name, device, board, current step and its progress, the verdict, Retry and Abort.

    Drawn by Qt alone (a frame in the state's colour over a light tint, no Python paintEvent), and
    every value it shows is remembered here so that Qt is called only when one changes: while 64
    units run, each call into Qt from the GUI thread may have to wait for the interpreter lock.
    """

    retry_clicked = Signal(str)
    abort_clicked = Signal(str)

    def __init__(self, fixture: Fixture, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = fixture.name
        self._shown: dict[str, object] = {}  # what each widget shows now
        self.setFixedWidth(TILE_WIDTH)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setAccessibleName(f"Fixture {fixture.name}")
        self.setFrameShape(QFrame.Shape.Box)
        self.setLineWidth(3)  # one width for all: a thicker frame would squeeze the highlighted tile's text
        self.setAutoFillBackground(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(3)

        top = QHBoxLayout()
        self.icon = QLabel(self)
        self.icon.setFixedSize(ICON_SIZE, ICON_SIZE)
        self.title = QLabel(fixture.name, self)
        self.verdict = QLabel(self)
        self.verdict.setAccessibleName(f"Result on {fixture.name}")
        top.addWidget(self.icon)
        top.addWidget(self.title, 1)
        top.addWidget(self.verdict)
        layout.addLayout(top)

        self.device = QLabel(fixture.device, self)
        self.device.setTextFormat(Qt.TextFormat.PlainText)
        self.device.setToolTip(fixture.device)
        self.serial = QLabel(self)
        self.serial.setTextFormat(Qt.TextFormat.PlainText)
        self.serial.setFont(monospace_font(11))
        self.serial.setAccessibleName(f"Board on {fixture.name}")
        self.step = QLabel(self)
        self.step.setTextFormat(Qt.TextFormat.PlainText)
        self.bar = SlotProgress(self)
        self.bar.setAccessibleName(f"Progress on {fixture.name}")
        self.reason = QLabel(self)
        self.reason.setTextFormat(Qt.TextFormat.PlainText)  # device and core messages are never markup
        self.reason.setWordWrap(True)
        self.reason.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        for label in (self.device, self.serial, self.step):
            layout.addWidget(label)
        layout.addWidget(self.bar)
        layout.addWidget(self.reason)

        buttons = QHBoxLayout()
        self.retry_button = QPushButton("Retry", self)
        self.retry_button.setAccessibleName(f"Retry {fixture.name}")
        self.retry_button.clicked.connect(lambda: self.retry_clicked.emit(self.name))
        self.abort_button = QPushButton("Abort", self)
        self.abort_button.setAccessibleName(f"Abort {fixture.name}")
        self.abort_button.clicked.connect(lambda: self.abort_clicked.emit(self.name))
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.abort_button)
        layout.addLayout(buttons)
        # The frame takes the palette's text colour: the labels keep the ordinary one.
        text = self.palette().color(QPalette.ColorRole.WindowText)
        for label in (self.title, self.serial, self.step, self.reason):
            palette = label.palette()
            palette.setColor(QPalette.ColorRole.WindowText, text)
            label.setPalette(palette)
        emphasise(self.title)
        emphasise(self.device, GREY, bold=False)
        self.show_slot(Slot(fixture), None, time.monotonic(), highlighted=False, thread_running=False)
        self._fit()

    def _fit(self) -> None:
        """Fix every line's height and so the tile's: a new text in one tile never makes the grid of 64
        lay itself out again.  The reason has room for four lines (what happened and what to do next);
        the whole message is its tooltip and in the audit log."""
        for label in (self.device, self.serial, self.step):
            label.setFixedHeight(label.fontMetrics().lineSpacing() + 4)
        self.reason.setFixedHeight(self.reason.fontMetrics().lineSpacing() * REASON_LINES + 2)
        layout = self.layout()
        if layout is not None:
            layout.invalidate()  # its size hint is cached from before the new heights
        self.setFixedHeight(self.sizeHint().height())  # the widget's hint counts the frame too

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:  # the large-font setting
            self._fit()

    def _changed(self, key: str, value: object) -> bool:
        if self._shown.get(key, _UNSET) == value:
            return False
        self._shown[key] = value
        return True

    def _text(self, key: str, widget: QLabel | QPushButton, text: str) -> None:
        if self._changed(key, text):
            widget.setText(text)

    def show_slot(
        self,
        slot: Slot,
        progress: UnitProgress | None,
        now: float,
        *,
        highlighted: bool,
        thread_running: bool,
    ) -> None:
        """Show the slot as it is now (no Qt call for what did not change)."""
        look = SLOT_STATES[slot.state]
        if self._changed("state", slot.state):
            self.icon.setPixmap(state_pixmap(look, ICON_SIZE))
            self.verdict.setText(look.word)
            emphasise(self.verdict, look.color)
        if self._changed("frame", (look.color, highlighted)):
            palette = self.palette()
            tint = QColor(look.color)
            tint.setAlpha(22)
            base = (
                self.parentWidget().palette().color(QPalette.ColorRole.Window)
                if self.parentWidget()
                else QColor("white")
            )
            palette.setColor(QPalette.ColorRole.Window, _over(tint, base))
            palette.setColor(QPalette.ColorRole.WindowText, QColor(BLUE if highlighted else look.color))
            self.setPalette(palette)
        unit = f"   unit {slot.unit_id}" if slot.unit_id is not None else ""
        self._text(
            "serial",
            self.serial,
            f"Board {slot.serial}{unit}"
            if slot.serial
            else ("▶ next serial goes here" if highlighted else "no board"),
        )
        self._text("step", self.step, self._step_text(slot))
        self._show_progress(slot, progress, now)
        reason = slot.message.strip()
        if slot.state == SlotState.PASSED:
            reason = "enrolled — label the board and take it off the fixture"
        elif slot.state == SlotState.READY:
            reason = "waits for Start all (Ctrl+Enter)"
        self._text("reason", self.reason, reason[:REASON_CHARS])
        if self._changed("tooltip", slot.message):
            self.reason.setToolTip(slot.message[:2000])
        if self._changed("retry", slot.resumable and not slot.active and not thread_running):
            self.retry_button.setEnabled(bool(self._shown["retry"]))
        can_abort = slot.state == SlotState.RUNNING or (
            slot.serial is not None and not slot.active and not thread_running
        )
        if self._changed("abort", can_abort):
            self.abort_button.setEnabled(can_abort)
        if self._changed("abort_text", slot.active):
            self.abort_button.setText("Abort" if slot.active else "Remove")
            self.abort_button.setToolTip(
                "Stop this board (Retry continues it later)"
                if slot.active
                else "Take this board off the fixture"
            )

    @staticmethod
    def _step_text(slot: Slot) -> str:
        if slot.state in (SlotState.RUNNING, SlotState.STOPPING) and slot.step_title:
            retry = f" (try {slot.attempt})" if slot.attempt > 1 else ""
            return f"Step {slot.step_index + 1}/{slot.step_count}: {slot.step_title}{retry}"
        if slot.state in (SlotState.RUNNING, SlotState.STOPPING):
            return "Connecting…"
        if slot.state in (SlotState.FAILED, SlotState.REFUSED) and slot.failed_step in STEPS:
            return f"Failed at: {STEPS[slot.failed_step].title}"
        if slot.started_at is not None and slot.ended_at is not None:
            return f"Took {format_duration(slot.ended_at - slot.started_at)}"
        return ""

    def _show_progress(self, slot: Slot, progress: UnitProgress | None, now: float) -> None:
        if progress is None:
            value, text = 0, ""
        else:
            # Whole per cent: finer steps would repaint 64 bars for changes nobody can see.
            value = round(progress.fraction(now) * 100) * 10
            text = f"{progress.done_count()} of {len(progress.steps)} steps"
            if slot.active:
                left = progress.remaining_s(now)
                text += f" · ~{format_duration(left)} left" if left is not None else ""
        self.bar.set_progress(value, text)


_UNSET = object()


def _over(top: QColor, base: QColor) -> QColor:
    """``top`` (with its alpha) laid over an opaque ``base``."""
    alpha = top.alphaF()
    return QColor.fromRgbF(
        top.redF() * alpha + base.redF() * (1 - alpha),
        top.greenF() * alpha + base.greenF() * (1 - alpha),
        top.blueF() * alpha + base.blueF() * (1 - alpha),
    )


class BatchView(QWidget):
    """The batch grid: scan boards onto fixtures, start them all, watch each, retry or abort one."""

    slot_started = Signal(str)  # fixture name: a unit started there
    slot_finished = Signal(str, object)  # fixture name, UnitOutcome — once its tile shows it
    idle = Signal()  # no slot's worker thread is running any more

    def __init__(
        self,
        session: Session,
        engine: Engine,
        pool: TaskPool,
        parent: QWidget | None = None,
        *,
        fixture_prefix: str = FIXTURE_SCAN_PREFIX,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.engine = engine
        self.pool = pool
        self.operator: str | None = None
        self.fixture_prefix = fixture_prefix
        # Another mode may be using a fixture (the single-board screen): it says which, or None.
        self.fixture_in_use: Callable[[str], str | None] = lambda name: None
        # The work order the technician picked in the window (None: the open order holding each serial).
        self.picked_order: Callable[[], str | None] = lambda: None
        self.board = SlotBoard(session.fixtures.fixtures, fixture_prefix=fixture_prefix)
        self.runners: dict[str, UnitRunner] = {}
        self.progress: dict[str, UnitProgress] = {}
        self.requests: dict[str, UnitRequest] = {}
        self.tiles: dict[str, SlotTile] = {}
        # The audit history's median per step, per profile (from the first unit's plan, or a lookup).
        self._plans: dict[str, dict[str, float | None]] = {}
        self._plans_in_flight: set[str] = set()  # profiles whose medians are being looked up
        self._dirty: set[str] = set()
        self._ticks = 0
        self._header: dict[str, object] = {}  # what the header shows now (Qt is called on changes only)
        self._closing = False
        self._columns = 0
        self._tick = QTimer(self)
        self._tick.setInterval(TICK_MS)
        self._tick.timeout.connect(self._on_tick)
        self._cancel_deadline = QTimer(self)
        self._cancel_deadline.setSingleShot(True)
        self._cancel_deadline.timeout.connect(self._cancel_overdue)
        # Units running in the station service that this window did not start (its window was closed or
        # killed, or another window's): a unit on one of this grid's fixtures shows on its tile, live.
        engine.foreign.connect(self.adopt)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 4, 0, 0)
        outer.addLayout(self._build_header())
        outer.addLayout(self._build_scan_row())
        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.grid_host = QWidget(self.scroll)
        self.grid = QGridLayout(self.grid_host)
        self.grid.setSpacing(TILE_SPACING)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.scroll.setWidget(self.grid_host)
        outer.addWidget(self.scroll, 1)
        self._build_tiles()
        self.refresh()

    # -- building -------------------------------------------------------------------------------

    def _build_header(self) -> QVBoxLayout:
        column = QVBoxLayout()
        figures = QHBoxLayout()
        self.batch_label = QLabel(self)
        self.batch_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        emphasise(self.batch_label)
        self.counts_label = QLabel(self)
        self.counts_label.setAccessibleName("Batch counts")
        self.yield_label = QLabel(self)
        self.eta_label = QLabel(self)
        for widget in (self.batch_label, self.counts_label, self.yield_label, self.eta_label):
            figures.addWidget(widget)
            figures.addSpacing(18)
        figures.addStretch(1)
        column.addLayout(figures)
        buttons = QHBoxLayout()
        self.start_all_button = QPushButton("Start &all (Ctrl+Enter)", self)
        self.start_all_button.clicked.connect(self.start_all)
        self.cancel_all_button = QPushButton("&Cancel all", self)
        self.cancel_all_button.clicked.connect(self.cancel_all)
        self.new_batch_button = QPushButton("&New batch", self)
        self.new_batch_button.setToolTip("Empty every finished fixture and start counting a new batch")
        self.new_batch_button.clicked.connect(self.new_batch)
        for button in (self.start_all_button, self.cancel_all_button, self.new_batch_button):
            button.setMinimumHeight(34)
            buttons.addWidget(button)
        self.mode_label = QLabel(self)
        buttons.addSpacing(12)
        buttons.addWidget(self.mode_label, 1)
        column.addLayout(buttons)
        return column

    def _build_scan_row(self) -> QVBoxLayout:
        column = QVBoxLayout()
        prompt = QLabel(
            "Scan a fixture's barcode, then its board's &serial — or a serial alone for the "
            "highlighted fixture:",
            self,
        )
        self.scan = ScanField(self)
        self.scan.setAccessibleName("Batch scan")
        self.scan.setPlaceholderText(f"fixture (e.g. {self.fixture_prefix}sim-01) or serial")
        self.scan.setFont(monospace_font(15))
        self.scan.submitted.connect(self.handle_scan)
        prompt.setBuddy(self.scan)
        self.feedback = QLabel(self)
        self.feedback.setTextFormat(Qt.TextFormat.RichText)
        self.feedback.setWordWrap(True)
        self.feedback.setMinimumHeight(24)
        column.addWidget(prompt)
        column.addWidget(self.scan)
        column.addWidget(self.feedback)
        return column

    def _build_tiles(self) -> None:
        for tile in self.tiles.values():
            self.grid.removeWidget(tile)
            tile.deleteLater()
        self.tiles = {}
        for slot in self.board.slots.values():
            tile = SlotTile(slot.fixture, self.grid_host)
            tile.retry_clicked.connect(self.retry_slot)
            tile.abort_clicked.connect(self.abort_slot)
            self.tiles[slot.name] = tile
        self._columns = 0
        self._lay_out_tiles()
        self._dirty.update(self.tiles)

    def _lay_out_tiles(self) -> None:
        # From the view's own width: the scroll area's viewport is resized only after this view is.
        width = self.width() - self.scroll.verticalScrollBar().sizeHint().width() - 2 * TILE_SPACING
        columns = max(1, (width + TILE_SPACING) // (TILE_WIDTH + TILE_SPACING))
        if columns == self._columns:
            return
        self._columns = columns
        for index, tile in enumerate(self.tiles.values()):
            self.grid.addWidget(tile, index // columns, index % columns)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._lay_out_tiles()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self._lay_out_tiles()

    def apply_settings(self) -> None:
        """Take the administrator's current fixtures and auto-start setting (fixtures only while idle)."""
        names = [fixture.name for fixture in self.session.fixtures.fixtures]
        fixtures_changed = names != list(self.board.slots) or any(
            slot.fixture != fixture
            for slot, fixture in zip(self.board.slots.values(), self.session.fixtures.fixtures, strict=False)
        )
        if fixtures_changed and not self.running:
            self.board = SlotBoard(
                self.session.fixtures.fixtures,
                batch_id=self.board.batch_id,
                fixture_prefix=self.fixture_prefix,
            )
            self.runners, self.progress, self.requests = {}, {}, {}
            self._build_tiles()
        auto = self.session.settings.auto_start
        self.mode_label.setText(
            f"Auto-start on scan: <b>{'on' if auto else 'off'}</b>"
            + (" (a serial typed by hand waits for Start all)" if auto else " (press Start all)")
        )
        self.refresh()

    # -- scanning -------------------------------------------------------------------------------

    def handle_scan(self, text: str, burst: bool = False) -> ScanOutcome:
        """One scan from the field: a fixture's barcode or a board's serial."""
        before = self.board.highlighted
        outcome = self.board.scan(text, self._check_serial)
        self._feedback(outcome.message, ok=outcome.accepted)
        self.scan.selectAll()
        if before is not None:
            self._dirty.add(before.name)
        if outcome.fixture is not None:
            self._dirty.add(outcome.fixture)
        if outcome.serial is not None and outcome.fixture is not None:
            self._ask_plan(self.board.slots[outcome.fixture].fixture)
            if (
                self.session.settings.auto_start
                and burst
                and self.board.slots[outcome.fixture].state == SlotState.READY
            ):
                self.start_slot(outcome.fixture)
        self.refresh()
        return outcome

    def _check_serial(self, fixture: Fixture, text: str) -> str:
        return self.session.profile_for(fixture).validate_serial(text)

    def _feedback(self, text: str, *, ok: bool) -> None:
        mark, colour = ("✓", GREEN) if ok else ("✗ Refused:", RED)
        self.feedback.setText(
            f"<span style='color:{colour}; font-weight:bold'>{html.escape(mark)}</span> "
            f"{html.escape(text, quote=False)}"
        )

    # -- running units --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether any slot's unit is still running."""
        return any(runner.running for runner in self.runners.values())

    def fixture_busy(self, name: str) -> bool:
        slot = self.board.slots.get(name)
        runner = self.runners.get(name)
        return (slot is not None and slot.active) or (runner is not None and runner.running)

    def _runner(self, name: str) -> UnitRunner:
        runner = self.runners.get(name)
        if runner is None:
            runner = UnitRunner(self.engine, self, forward_output=False)  # a tile has no room for a log
            runner.flow_event.connect(partial(self._on_event, name))
            runner.planned.connect(partial(self._on_plan, name))
            runner.finished.connect(partial(self._on_finished, name))
            runner.idle.connect(partial(self._on_idle, name))
            self.runners[name] = runner
        return runner

    def start_all(self) -> int:
        """Start every board that waits on its fixture; returns how many were started."""
        waiting = [slot.name for slot in self.board.startable()]
        if not waiting or self.operator is None or self._closing:
            if not waiting:
                self._feedback("no board waits to start — scan boards onto fixtures first", ok=False)
            return 0
        started = sum(self.start_slot(name) for name in waiting)
        self._feedback(
            f"starting {started} board{'s' if started != 1 else ''} — batch {self.board.batch_id}", ok=True
        )
        return started

    def start_slot(self, name: str, *, resume: bool = False) -> bool:
        """Start (or with ``resume``, continue) the board on fixture ``name`` on its own worker."""
        slot = self.board.slots.get(name)
        if slot is None or slot.serial is None or self._closing or self.operator is None:
            return False
        runner = self._runner(name)
        if runner.running or slot.active:
            return False
        elsewhere = self.fixture_in_use(name)
        if elsewhere:
            self._feedback(f"fixture {name} is in use: {elsewhere}", ok=False)
            return False
        previous = self.requests.get(name)
        if resume:
            if not slot.resumable or previous is None or previous.serial != slot.serial:
                return False
            request = UnitRequest(
                slot.serial, slot.fixture, previous.profile, self.operator, resume=True, batch=previous.batch
            )
        else:
            try:
                profile = self.session.profile_for(slot.fixture)
            except StationError as exc:
                self.board.finish(name, result=SlotState.REFUSED, message=str(exc), now=time.monotonic())
                self._show_now(name)
                return False
            request = UnitRequest(
                slot.serial,
                slot.fixture,
                profile,
                self.operator,
                batch=self.board.batch_id,
                order=self.picked_order(),
            )
        self.board.mark_started(name, time.monotonic(), resume=resume)
        progress = self.progress.get(name)
        if resume and progress is not None and previous is not None and previous.serial == slot.serial:
            progress.reset_for_retry()
        else:
            progress = UnitProgress([(step, STEPS[step].title) for step in request.profile.step_names()])
            progress.plan(self._plans.get(request.profile.name, {}))
            self.progress[name] = progress
        self.requests[name] = request
        runner.start(request)
        if not self._tick.isActive():
            self._tick.start()
        self._show_now(name)
        self.slot_started.emit(name)
        return True

    def adopt(self, event: FlowEvent) -> bool:
        """Show on its fixture's tile a unit running in the station service that this window did not start;
        True if the tile now follows it (its events, Abort, and Retry once it ended)."""
        name = event.fixture
        if (
            self._closing
            or event.kind in ("unit_finished", "output")
            or name is None
            or name not in self.tiles
        ):
            return False
        slot = self.board.slots[name]
        runner = self._runner(name)
        if runner.running or slot.active:
            return False
        if slot.serial != event.serial and not self.board.place(name, event.serial).accepted:
            return False
        self.board.mark_started(name, time.monotonic())
        try:
            profile = self.session.profile_for(slot.fixture)
        except StationError:
            profile = None
        if profile is not None:
            progress = UnitProgress([(step, STEPS[step].title) for step in profile.step_names()])
            progress.plan(self._plans.get(profile.name, {}))
            self.progress[name] = progress
            self.requests[name] = UnitRequest(event.serial, slot.fixture, profile, self.operator or "")
        runner.attach(event.job)
        self._on_event(name, event)
        if not self._tick.isActive():
            self._tick.start()
        self._show_now(name)
        self.slot_started.emit(name)
        return True

    def retry_slot(self, name: str) -> bool:
        """Continue the failed board on fixture ``name`` from where it failed (its unit resumes)."""
        return self.start_slot(name, resume=True)

    def abort_slot(self, name: str) -> None:
        """Stop the board on fixture ``name`` (its unit ends failed and resumable); a board that is not
        running is taken off the fixture instead."""
        slot = self.board.slots.get(name)
        if slot is None:
            return
        runner = self.runners.get(name)
        if slot.state == SlotState.RUNNING and runner is not None and runner.running:
            runner.abort()
            self.board.mark_stopping(name)
            self._feedback(
                f"stopping board {slot.serial} on fixture {name} after its current command — "
                "Retry continues it later",
                ok=True,
            )
        elif not slot.active and slot.serial is not None and not (runner is not None and runner.running):
            self.board.clear(name)
            self.progress.pop(name, None)
            self.requests.pop(name, None)
            self._feedback(f"fixture {name} is empty", ok=True)
        self._show_now(name)

    def cancel_all(self) -> int:
        """Stop every running board within CANCEL_DEADLINE_S (each unit ends failed and resumable);
        boards waiting to start stay where they are.  Returns how many were asked to stop."""
        asked = 0
        for name, slot in self.board.slots.items():
            runner = self.runners.get(name)
            if slot.state == SlotState.RUNNING and runner is not None and runner.running:
                runner.abort()
                self.board.mark_stopping(name)
                self._dirty.add(name)
                asked += 1
        if asked:
            self._feedback(
                f"stopping {asked} board{'s' if asked != 1 else ''} — each ends failed and Retry "
                "continues it",
                ok=True,
            )
            self._cancel_deadline.start(round(CANCEL_DEADLINE_S * 1000))
        self.refresh()
        return asked

    def new_batch(self) -> str:
        """Empty every idle fixture and draw a new batch id for the boards scanned from now on."""
        for name, slot in self.board.slots.items():
            if not slot.active and not self.fixture_busy(name):
                self.progress.pop(name, None)
                self.requests.pop(name, None)
        batch_id = self.board.new_batch()
        self._dirty.update(self.tiles)
        self._feedback(f"new batch {batch_id}", ok=True)
        self.refresh()
        return batch_id

    def wait(self, timeout_ms: int) -> bool:
        """Run the event loop until every slot's unit is over (bounded); for shutdown paths and tests."""
        end = time.monotonic() + timeout_ms / 1000
        for runner in list(self.runners.values()):
            if not runner.wait(max(0, round((end - time.monotonic()) * 1000))):
                return False
        return True

    def shutdown(self) -> None:
        """The window closes: stop the timers and start nothing more."""
        self._closing = True
        self._tick.stop()
        self._cancel_deadline.stop()

    # -- what the units report --------------------------------------------------------------------

    def _on_plan(self, name: str, plan: UnitPlan) -> None:
        progress = self.progress.get(name)
        request = self.requests.get(name)
        if progress is not None:
            progress.plan(plan.eta_s)
        if request is not None and all(eta is not None for eta in plan.eta_s.values()):
            self._plans[request.profile.name] = dict(plan.eta_s)
        self._dirty.add(name)

    def _on_event(self, name: str, event: FlowEvent) -> None:
        if event.kind == "output":  # device output is in the audit log; a tile has no room for it
            return
        progress = self.progress.get(name)
        if progress is not None:
            progress.apply(event, time.monotonic())
        self.board.apply(name, event)
        self._dirty.add(name)

    def _on_finished(self, name: str, outcome: UnitOutcome) -> None:
        self.board.finish(
            name,
            result=_OUTCOME_STATE.get(outcome.kind, SlotState.FAILED),
            message=outcome.message,
            now=time.monotonic(),
            unit_id=outcome.unit_id,
            failed_step=outcome.failed_step,
            resumable=outcome.resumable,
        )
        progress = self.progress.get(name)
        if progress is not None:
            progress.finish(passed=outcome.kind == Ending.PASSED)
        self._show_now(name)
        self.slot_finished.emit(name, outcome)

    def _on_idle(self, name: str) -> None:
        self._show_now(name)  # Retry becomes possible once the thread is gone
        self._emit_idle_if_done()

    def _emit_idle_if_done(self) -> None:
        if not self.running:
            self._cancel_deadline.stop()
            self._tick.stop()
            self.refresh()
            self.idle.emit()

    def _cancel_overdue(self) -> None:
        late = [name for name, runner in self.runners.items() if runner.running]
        if late:
            self._feedback(
                f"{', '.join(late)} did not stop within {CANCEL_DEADLINE_S:g} s — check those "
                "fixtures' power and cables; their units stay resumable",
                ok=False,
            )

    def _ask_plan(self, fixture: Fixture) -> None:
        """Look the profile's step medians up in the audit history (on the pool) for the time left."""
        try:
            profile = self.session.profile_for(fixture)
        except StationError:
            return
        if profile.name in self._plans or profile.name in self._plans_in_flight:
            return
        self._plans_in_flight.add(profile.name)
        client = self.session.client  # the station service reads its audit history (no unit waits for it)

        def medians() -> dict[str, float | None]:
            return client.plan(profile.name)

        def known(plan: object) -> None:
            self._plans_in_flight.discard(profile.name)
            if isinstance(plan, dict) and all(eta is not None for eta in plan.values()):
                self._plans.setdefault(profile.name, plan)
                for name, progress in self.progress.items():
                    if (
                        self.requests.get(name) is not None
                        and self.requests[name].profile.name == profile.name
                    ):
                        progress.plan({step: eta for step, eta in plan.items() if eta is not None})
                self.refresh()

        self.pool.submit(medians, known, lambda error: self._plans_in_flight.discard(profile.name))

    # -- showing --------------------------------------------------------------------------------------

    def _show_now(self, name: str) -> None:
        self._dirty.add(name)
        self.refresh()

    def _on_tick(self) -> None:
        self._ticks += 1
        self.refresh(running_progress=self._ticks % PROGRESS_TICKS == 0)

    def refresh(self, *, running_progress: bool = True) -> None:
        """Repaint the tiles that changed, the running ones' progress, and the header."""
        now = time.monotonic()
        highlighted = self.board.highlighted
        names = set(self._dirty)
        if running_progress:
            names.update(name for name, slot in self.board.slots.items() if slot.active)
        if highlighted is not None:
            names.add(highlighted.name)
        self._dirty.clear()
        for name in names:
            tile, slot = self.tiles.get(name), self.board.slots.get(name)
            if tile is None or slot is None:
                continue
            runner = self.runners.get(name)
            tile.show_slot(
                slot,
                self.progress.get(name),
                now,
                highlighted=slot is highlighted,
                thread_running=runner is not None and runner.running,
            )
        self._show_header(now)

    def _show_header(self, now: float) -> None:
        counts = self.board.counts()
        rate = counts.yield_fraction
        texts: dict[QLabel, str] = {
            self.batch_label: f"Batch {self.board.batch_id}",
            self.counts_label: f"Queued {counts.queued} · Running {counts.running} · "
            f"Passed {counts.passed} · Failed {counts.failed}",
            self.yield_label: f"Yield {rate * 100:.0f} % ({counts.passed}/{counts.finished})"
            if rate is not None
            else "Yield —",
            self.eta_label: self._eta_text(now),
        }
        for label, text in texts.items():
            key = f"text-{id(label)}"
            if self._header.get(key) != text:
                self._header[key] = text
                label.setText(text)
        enabled = {
            self.start_all_button: counts.queued > 0 and self.operator is not None and not self._closing,
            self.cancel_all_button: counts.running > 0 and not self._closing,
            self.new_batch_button: not self._closing and counts.running < len(self.board.slots),
        }
        for button, on in enabled.items():
            key = f"enabled-{id(button)}"
            if self._header.get(key) != on:
                self._header[key] = on
                button.setEnabled(on)

    def _eta_text(self, now: float) -> str:
        """The batch's time left: its longest fixture (fixtures run in parallel), from the step medians."""
        lefts: list[float | None] = []
        for name, slot in self.board.slots.items():
            if slot.active:
                progress = self.progress.get(name)
                lefts.append(progress.remaining_s(now) if progress is not None else None)
            elif slot.state == SlotState.READY:
                plan = self._plans.get(self.session.profile_name(slot.fixture))
                lefts.append(sum(eta for eta in plan.values() if eta is not None) if plan else None)
        if not lefts:
            return ""
        if any(left is None for left in lefts):
            return "Time left: learning (no history yet)"
        return f"About {format_duration(max(left for left in lefts if left is not None))} left"
