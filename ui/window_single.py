"""The single-board page of the window: the fixture, the scanned serial, Provision / Retry / Abort, the label
box, the verdict, the steps and the device log (a part of :class:`ui.main_window.MainWindow`)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from station.config import Fixture
from station.errors import StationError
from station.steps import STEPS
from ui.bridge import ProbeResult, UnitRequest
from ui.identity_panel import BoardIdentityPanel
from ui.label import LabelPreview
from ui.order_panel import OrderPanel
from ui.progress import UnitProgress
from ui.style import GREEN, RED
from ui.widgets import FixtureTable, ResultPanel, ScanField, StepList

if TYPE_CHECKING:
    from ui.main_window import MainWindow

LOG_MAX_LINES = 5000


class SingleBoardMixin:
    """One board at a time, on the fixture selected."""

    def _build_single_page(self: MainWindow, upper: QWidget) -> None:
        columns = QHBoxLayout(upper)
        columns.setContentsMargins(0, 0, 0, 0)

        left = QVBoxLayout()
        columns.addLayout(left, 0)
        # The open orders (the fleet's with [fleet]) and their progress, as the station service says them.
        self.orders = OrderPanel(
            None,
            self.pool,
            required=self.session.config.orders_required,
            parent=upper,
            read_orders=self.session.client.orders,
        )
        left.addWidget(self.orders)
        fixture_label = QLabel("&Fixture (where the board is connected):", upper)
        self.fixtures = FixtureTable(upper)
        fixture_label.setBuddy(self.fixtures)
        self.fixtures.setMinimumWidth(440)
        self.fixtures.setMaximumHeight(150)
        self.fixtures.itemSelectionChanged.connect(self._on_fixture_changed)
        self.fixtures.activated.connect(lambda _index: self.focus_scan())
        left.addWidget(fixture_label)
        left.addWidget(self.fixtures)
        serial_label = QLabel("&Serial (scan the board's label, or type it and press Enter):", upper)
        self.scan = ScanField(upper)
        self.scan.setAccessibleName("Serial")
        self.scan.setPlaceholderText("scan the serial label")
        self.scan.submitted.connect(self._on_scanned)
        serial_label.setBuddy(self.scan)
        left.addWidget(serial_label)
        left.addWidget(self.scan)
        self.scan_feedback = QLabel(upper)
        self.scan_feedback.setTextFormat(Qt.TextFormat.RichText)
        self.scan_feedback.setWordWrap(True)
        self.scan_feedback.setMinimumHeight(40)
        left.addWidget(self.scan_feedback)
        buttons = QHBoxLayout()
        self.provision_button = QPushButton("&Provision (Enter)", upper)
        self.provision_button.clicked.connect(lambda: self.provision())
        self.retry_button = QPushButton("&Retry (F5)", upper)
        self.retry_button.clicked.connect(self.retry)
        self.abort_button = QPushButton("A&bort (Esc)", upper)
        self.abort_button.clicked.connect(self.abort)
        for button in (self.provision_button, self.retry_button, self.abort_button):
            button.setMinimumHeight(40)
            buttons.addWidget(button)
        left.addLayout(buttons)
        self.mode_label = QLabel(upper)
        self.mode_label.setWordWrap(True)
        left.addWidget(self.mode_label)

        label_box = QGroupBox("Label", upper)
        label_layout_ = QVBoxLayout(label_box)
        self.label_preview = LabelPreview(label_box)
        label_layout_.addWidget(self.label_preview)
        label_buttons = QHBoxLayout()
        self.print_button = QPushButton("Pr&int label… (Ctrl+P)", label_box)
        self.print_button.clicked.connect(self.print_label)
        self.pdf_button = QPushButton("Save as P&DF… (Ctrl+Shift+S)", label_box)
        self.pdf_button.clicked.connect(self.save_label_dialog)
        label_buttons.addWidget(self.print_button)
        label_buttons.addWidget(self.pdf_button)
        label_layout_.addLayout(label_buttons)
        left.addWidget(label_box)
        left.addStretch(1)

        right = QVBoxLayout()
        columns.addLayout(right, 1)
        self.result = ResultPanel(upper)
        self.result.setMinimumHeight(150)
        right.addWidget(self.result)
        progress_row = QHBoxLayout()
        self.progress_bar = QProgressBar(upper)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setAccessibleName("Progress")
        self.eta_label = QLabel(upper)
        self.eta_label.setMinimumWidth(260)
        progress_row.addWidget(self.progress_bar, 1)
        progress_row.addWidget(self.eta_label)
        right.addLayout(progress_row)
        # What the station verified and what only the board says, beside the steps that found it out (the left
        # column has no room left for it on a 1280 × 800 screen).
        self.identity = BoardIdentityPanel(self.session, self.pool, self.current_fixture, upper)
        right.addWidget(self.identity)
        # Steps above, device log below; the technician can move the divider.
        splitter = QSplitter(Qt.Orientation.Vertical, upper)
        splitter.setChildrenCollapsible(False)
        right.addWidget(splitter, 1)
        self.steps = StepList(splitter)
        log_box = QWidget(splitter)
        log_layout = QVBoxLayout(log_box)
        log_layout.setContentsMargins(0, 0, 0, 0)
        log_title = QLabel("Device &log (PINs masked):", log_box)
        self.log = QPlainTextEdit(log_box)
        self.log.setReadOnly(True)
        self.log.setTabChangesFocus(True)
        self.log.setMaximumBlockCount(LOG_MAX_LINES)
        self.log.setAccessibleName("Device log")
        self.log.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        log_title.setBuddy(self.log)
        log_layout.addWidget(log_title)
        log_layout.addWidget(self.log)
        splitter.addWidget(self.steps)
        splitter.addWidget(log_box)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        self.splitter = splitter

        order = [
            self.scan,
            self.provision_button,
            self.retry_button,
            self.abort_button,
            self.fixtures,
            self.print_button,
            self.pdf_button,
            self.log,
            self.settings_button,
            self.sign_out_button,
        ]
        for first, second in zip(order, order[1:], strict=False):
            QWidget.setTabOrder(first, second)

    def current_fixture(self: MainWindow) -> Fixture | None:
        name = self.fixtures.selected_name()
        return next((f for f in self.session.fixtures.fixtures if f.name == name), None)

    def select_fixture(self: MainWindow, name: str) -> None:
        self.fixtures.select(name)

    def _on_fixture_changed(self: MainWindow) -> None:
        self._show_mode()
        self.serial = None  # a serial is checked against the chosen fixture's profile

    def _on_probe(self: MainWindow, result: ProbeResult) -> None:
        self.fixtures.show_probe(result)

    def _feedback(self: MainWindow, text: str, *, ok: bool, mark: str | None = None) -> None:
        mark = mark or ("✓" if ok else "✗ Refused:")
        colour = GREEN if ok else RED
        self.scan_feedback.setText(
            f"<span style='color:{colour}; font-weight:bold'>{html.escape(mark)}</span> {html.escape(text, quote=False)}"
        )

    def _on_scanned(self: MainWindow, text: str, burst: bool) -> None:
        if self.runner.running:
            self._feedback(
                "a board is being provisioned — wait for its result, or press Esc to abort it", ok=False
            )
            return
        if self.serial is not None and text == self.serial:
            self.provision()  # Enter a second time on an accepted serial
            return
        # Auto-start is for scans: a serial typed by hand is shown first and needs a second Enter.
        if self.accept_scan(text, burst=burst) and self.session.settings.auto_start and burst:
            self.provision()

    def accept_scan(self: MainWindow, text: str, *, burst: bool = False) -> bool:
        """Check the scanned serial against the fixture's profile; show why it is refused."""
        self.serial = None
        fixture = self.current_fixture()
        if fixture is None:
            self._feedback(
                "no fixture is selected — choose the fixture the board is on (Alt+F), then scan again",
                ok=False,
            )
            return False
        try:
            serial = self.session.profile_for(fixture).validate_serial(text)
        except StationError as exc:
            self._feedback(str(exc), ok=False)
            self.scan.selectAll()
            return False
        self.serial = serial
        self.orders.show_serial(serial)
        self.scan.selectAll()
        auto = self.session.settings.auto_start and burst
        start = "starting" if auto else "press Enter again (or Provision) to start"
        self._feedback(f"serial {serial} for fixture {fixture.name} — {start}", ok=True)
        if not self.runner.running and (self.request is None or self.request.serial != serial):
            self._show_new_board(serial, fixture, starting=auto)
        return True

    def _show_new_board(self: MainWindow, serial: str, fixture: Fixture, *, starting: bool) -> None:
        """A different board was scanned: the last board's steps, verdict and label leave the screen (a
        re-attached unit goes on, on its Batch tile)."""
        self._mirrored_job = None
        self._tick.stop()
        self.outcome = None
        self.request = None
        self.sheet = None
        self.label_preview.show_sheet(None)
        self.log.clear()
        try:
            names = self.session.profile_for(fixture).step_names()
        except StationError:
            names = ()
        self.progress = UnitProgress([(name, STEPS[name].title) for name in names])
        self.steps.set_steps(self.progress.steps)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat(f"0 of {len(names)} steps")
        self.eta_label.clear()
        self.result.show_state(
            "idle",
            f"Board {serial} on fixture {fixture.name}.",
            "" if starting else "press Enter to provision it.",
        )
        self._update_buttons()

    def provision(self: MainWindow, *, resume: bool = False) -> bool:
        """Start the scanned board (or, with ``resume``, continue the last failed one); in the Batch
        tab, Ctrl+Enter starts every board waiting on its fixture."""
        if self.mode() == "batch":
            return not resume and self.batch.start_all() > 0
        if self.runner.running or self._closing or self.operator is None:
            return False
        if resume:
            if self.request is None:
                return False
            request = UnitRequest(
                self.request.serial, self.request.fixture, self.request.profile, self.operator, resume=True
            )
        else:
            text = self.scan.text().strip()
            if self.serial != text and not self.accept_scan(text):
                return False
            fixture = self.current_fixture()
            if fixture is None or self.serial is None:
                return False
            if self.batch.fixture_busy(fixture.name):
                self._feedback(
                    f"fixture {fixture.name} is provisioning a board of the batch — choose another "
                    "fixture, or wait for it in the Batch tab",
                    ok=False,
                )
                return False
            try:
                profile = self.session.profile_for(fixture)
            except StationError as exc:
                self._feedback(str(exc), ok=False)
                return False
            request = UnitRequest(
                self.serial, fixture, profile, self.operator, order=self.orders.current_order_id()
            )
        self._start(request)
        return True

    def retry(self: MainWindow) -> None:
        if self.mode() == "batch":
            name = self._focused_tile()
            if name is not None:
                self.batch.retry_slot(name)
            return
        if self.outcome is not None and self.outcome.resumable and not self.runner.running:
            self.provision(resume=True)

    def abort(self: MainWindow) -> None:
        if self.mode() == "batch":  # Esc stops only the fixture whose tile has the focus, never the batch
            name = self._focused_tile()
            if name is not None and self.batch.board.slots[name].active:
                self.batch.abort_slot(name)
            return
        if not self.runner.running and self._mirrored_job is not None:
            self.engine.abort_job(self._mirrored_job)  # a re-attached unit: the service stops it
            self._append_log("■ abort requested by the operator")
            return
        if not self.runner.running:
            return
        self.runner.abort()
        self.result.show_state(
            "stopping",
            "Stopping after the command that is running now…",
            "wait; the unit ends failed and Retry (F5) continues it later.",
        )
        self._append_log("■ abort requested by the operator")
        self._update_buttons()

    def _single_mode_uses(self: MainWindow, fixture: str) -> str | None:
        """Why the single-board screen holds ``fixture`` (for the batch), or None."""
        if self.runner.running and self.request is not None and self.request.fixture.name == fixture:
            return f"the single-board screen is provisioning board {self.request.serial} on it"
        return None
