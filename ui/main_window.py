"""The technician's window: sign in, pick the fixture, scan, Provision, watch the steps, read the
verdict, print the label — one board at a time, or many at once in the Batch tab, and the audit log
in the Audit tab (a technician sees the station's recent units; a quality lead, signed in with their
own credential for a limited time, filters, exports and revokes).

The window only watches :class:`~station.flow.FlowEvent` values (through :mod:`ui.bridge`) and sends
commands (start, abort, resume).  Every decision — is this serial valid, which profile, what the
label says, is this PIN right — is the core's.
"""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeyEvent, QKeySequence, QShortcut, QShowEvent
from PySide6.QtPrintSupport import QPrintDialog, QPrinter
from PySide6.QtWidgets import (
    QApplication,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from station.admin import AdminLock, operator_name, pin_is_set
from station.config import Fixture
from station.errors import StationError
from station.flow import FlowEvent
from station.label import LabelSheet, build_label, label_file_name, label_layout, lay_out
from station.masking import Masker
from station.outputs import ensure_output_folder, free_name, output_folder, save_output
from station.people import People, SignedIn, clock_text
from station.pki import CertificateAuthority
from station.roles import Role, account_name
from station.steps import STEPS
from ui.audit_view import AuditView
from ui.batch_view import BatchView
from ui.bridge import (
    Engine,
    FixtureProber,
    ProbeResult,
    StationParts,
    TaskPool,
    UnitOutcome,
    UnitPlan,
    UnitRequest,
    UnitRunner,
    window_audit_reader,
)
from ui.dialogs import AdminPinDialog, PersonSignInDialog
from ui.identity_panel import BoardIdentityPanel
from ui.label import LabelPreview, OutputFileDialog, configure_printer, label_pdf, print_label
from ui.line import LineEvents, ReprintButton
from ui.order_panel import OrderPanel
from ui.progress import UnitProgress, format_duration
from ui.session import Session
from ui.settings import SettingsDialog
from ui.style import GREEN, LARGE_FONT_FACTOR, RED, base_font, emphasise, monospace_font
from ui.widgets import FixtureTable, ResultPanel, ScanField, StepList

# How long closing the window waits for a cancelled unit to wind down before closing anyway.
CLOSE_WAIT_S = 20.0
# Refresh of the running step's clock, the progress bar and the time left.
TICK_MS = 250
LOG_MAX_LINES = 5000
POOL_SHUTDOWN_MS = 3000
# Keys typed anywhere in the window that belong in the scan field (what a serial can contain).
_SERIAL_KEY = re.compile(r"[A-Za-z0-9._:/+-]")

# The window's modes (tabs), in order; Ctrl+1, Ctrl+2, Ctrl+3 switch to them.
MODES = ("single", "batch", "audit")
ROLE_TITLES = {"technician": "technician", "quality_lead": "quality lead"}

# Closing with units that did not stop within CLOSE_WAIT_S: how long the engine gives them before it
# terminates their workers (each unit recorded failed and resumable).
CLOSE_TERMINATE_S = 2.0

_duration = format_duration


class MainWindow(QMainWindow):
    """One station screen: one board at a time, on the fixture selected."""

    ready = Signal()  # signed in, the scan field shown and focused
    unit_finished = Signal(object)  # UnitOutcome, once the window shows it

    def __init__(
        self,
        session: Session,
        ca: CertificateAuthority,
        parent: QWidget | None = None,
        *,
        ca_secret: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.operator: str | None = None
        self.role = "technician"  # or "quality_lead", after the admin PIN at sign-in
        self.audit_view: AuditView | None = None
        self.serial: str | None = None  # the serial accepted from the scan field
        self.progress: UnitProgress | None = None
        self.outcome: UnitOutcome | None = None
        self.request: UnitRequest | None = None
        self.sheet: LabelSheet | None = None
        self._masker = Masker(())
        self._unit_began = 0.0
        self._unit_active = (
            False  # from start until the outcome is shown (the thread may take a moment longer)
        )
        self._closing = False
        self._leaving_units = False  # closing without waiting for the units (they go on, or were terminated)
        self._started_probing = False
        self.pool = TaskPool(self)
        self.prober = FixtureProber(self.pool, self)
        # One engine for the single-board page and the batch grid: each unit in its own worker process of the
        # station service (started for this user when none answers), so units outlive the window.
        # ``ca_secret``: what the technician typed to unlock the CA here, sent once to a service whose CA is locked.
        self.engine = Engine(
            StationParts(session.home, session.config, ca, session.audit, session.line),
            self,
            ca_secret=ca_secret,
        )
        self.runner = UnitRunner(self.engine, self)
        self.admin_lock = AdminLock(session.home)
        # Quality leads and administrators sign in with their own credential (station/people.py): a session
        # that ends by itself; their lockout is kept in the station home, so reopening the window keeps it.
        self.people = People(session.home, session.audit, settings=session.config.people)
        self.elevated: SignedIn | None = None
        self._elevated_ends = QTimer(self)
        self._elevated_ends.setSingleShot(True)
        self._elevated_ends.timeout.connect(lambda: self.end_elevated_session(expired=True))
        self._tick = QTimer(self)
        self._tick.setInterval(TICK_MS)
        self._tick.timeout.connect(self._refresh_running)
        self._close_deadline = QTimer(self)
        self._close_deadline.setSingleShot(True)
        self._close_deadline.timeout.connect(self._close_anyway)

        self.setWindowTitle(f"Welma provisioning station — {session.config.name}")
        self.resize(1280, 800)
        self.pages = QStackedWidget(self)
        self.setCentralWidget(self.pages)
        self.sign_in_page = self._build_sign_in()
        self.station_page = self._build_station()
        self.pages.addWidget(self.sign_in_page)
        self.pages.addWidget(self.station_page)
        self._build_shortcuts()
        self.status = QLabel(self)
        self.statusBar().addPermanentWidget(self.status, 1)
        if session.forwarder is not None:  # [fleet]: connection, backlog and age of the oldest unsent event
            from ui.fleet_view import FleetIndicator

            self.fleet_indicator = FleetIndicator(session.forwarder, self)
            self.statusBar().addPermanentWidget(self.fleet_indicator)
        # The line: a serial scanner feeds the scan field; label printer and MES speak in the status bar.
        self.line = LineEvents(session.line, session.config.scanner, self)
        self.line_status = QLabel(self)
        self.statusBar().addPermanentWidget(self.line_status)
        self.line.scanned.connect(self.deliver_scan)
        self.line.scanner_state.connect(lambda _connected, text: self.line_status.setText(text))
        self.line.message.connect(self.line_status.setText)
        self.line.start()
        # Where the units run: the station service (started for this user if needed), said in the status bar.
        self.service_status = QLabel(self)
        self.service_status.setObjectName("service_status")
        self.statusBar().addPermanentWidget(self.service_status)
        self._show_service(self.engine.service_text)
        self.engine.service_status.connect(self._show_service)
        self.engine.notice.connect(self.line_status.setText)
        self.engine.watch()  # units already running in the service (a window closed or killed) show live

        self.prober.probed.connect(self._on_probe)
        self.runner.flow_event.connect(self._on_event)
        self.runner.planned.connect(self._on_plan)
        self.runner.finished.connect(self._on_finished)
        self.runner.idle.connect(self._on_idle)
        self.runner.flow_event.connect(self.identity.on_event)
        self.unit_finished.connect(self.identity.on_finished)
        self.identity.board_swapped.connect(
            lambda _board: self.result.show_state(
                "idle", "A factory-fresh board is on the fixture.", "scan its serial label, then press Enter."
            )
        )
        self.identity.board_swapped.connect(lambda _board: self.focus_scan())
        self.batch.idle.connect(self._on_idle)
        self.batch.slot_started.connect(lambda _name: self._update_buttons())
        self.batch.fixture_in_use = self._single_mode_uses
        self.batch.picked_order = lambda: self.orders.current_order_id()
        self.unit_finished.connect(lambda _outcome: self.orders.refresh())
        self.apply_settings()
        self._update_buttons()

    # -- building ---------------------------------------------------------------------------

    def _show_service(self, text: str) -> None:
        """Where the units run, in the status bar: shortened to fit beside the other notes, whole on hover."""
        self.service_status.setToolTip(text)
        self.service_status.setText(
            self.service_status.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, 420)
        )

    def _build_sign_in(self) -> QWidget:
        page = QWidget(self)
        outer = QVBoxLayout(page)
        outer.addStretch(2)
        box = QWidget(page)
        box.setMaximumWidth(560)
        layout = QVBoxLayout(box)
        self.title_label = QLabel("Welma provisioning station", box)
        layout.addWidget(self.title_label)
        layout.addWidget(QLabel(f"Station {self.session.config.name}", box))
        layout.addSpacing(16)
        prompt = QLabel(
            "Sign in before provisioning: type your &name or scan your badge, then press Enter.", box
        )
        prompt.setWordWrap(True)
        layout.addWidget(prompt)
        self.operator_field = QLineEdit(box)
        self.operator_field.setAccessibleName("Operator name or badge")
        self.operator_field.setPlaceholderText("Operator name or badge")
        self.operator_field.returnPressed.connect(self.sign_in_from_field)
        prompt.setBuddy(self.operator_field)
        layout.addWidget(self.operator_field)
        self.sign_in_button = QPushButton("&Sign in", box)
        self.sign_in_button.clicked.connect(self.sign_in_from_field)
        self.quality_lead_button = QPushButton("Sign in as &quality lead…", box)
        self.quality_lead_button.setToolTip(
            "Quality leads (and administrators) export the audit log and revoke "
            "certificates; they type their name, then their own PIN or badge"
        )
        self.quality_lead_button.clicked.connect(self.sign_in_as_quality_lead)
        sign_in_row = QHBoxLayout()
        sign_in_row.addWidget(self.sign_in_button)
        sign_in_row.addWidget(self.quality_lead_button)
        sign_in_row.addStretch(1)
        layout.addLayout(sign_in_row)
        self.sign_in_problem = QLabel(box)
        self.sign_in_problem.setTextFormat(Qt.TextFormat.PlainText)
        self.sign_in_problem.setWordWrap(True)
        emphasise(self.sign_in_problem, RED)
        layout.addWidget(self.sign_in_problem)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(box, 3)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(3)
        return page

    def _build_station(self) -> QWidget:
        page = QWidget(self)
        outer = QVBoxLayout(page)
        outer.setContentsMargins(10, 6, 10, 6)

        top = QHBoxLayout()
        self.heading_label = QLabel(f"Welma provisioning station — {self.session.config.name}", page)
        top.addWidget(self.heading_label)
        top.addStretch(1)
        self.operator_label = QLabel(page)
        top.addWidget(self.operator_label)
        self.settings_button = QPushButton("Se&ttings… (Ctrl+,)", page)
        self.settings_button.clicked.connect(self.open_settings)
        self.sign_out_button = QPushButton("Sign &out (Ctrl+L)", page)
        self.sign_out_button.clicked.connect(self.sign_out)
        top.addWidget(self.settings_button)
        top.addWidget(self.sign_out_button)
        outer.addLayout(top)

        self.modes = QTabWidget(page)
        # Ctrl+1/2/3 switch modes; the tab bar stays out of the Tab chain, which walks the mode's own widgets.
        self.modes.tabBar().setFocusPolicy(Qt.FocusPolicy.NoFocus)
        outer.addWidget(self.modes, 1)
        upper = QWidget(self.modes)
        self.modes.addTab(upper, "Single board  (Ctrl+1)")
        self.batch = BatchView(self.session, self.engine, self.pool, self.modes)
        self.modes.addTab(self.batch, "Batch — many boards at once  (Ctrl+2)")
        self.audit_page = QWidget(self.modes)
        audit_layout = QVBoxLayout(self.audit_page)
        audit_layout.setContentsMargins(0, 4, 0, 0)
        self.modes.addTab(self.audit_page, "Audit log  (Ctrl+3)")
        self.modes.currentChanged.connect(self._on_mode_changed)
        columns = QHBoxLayout(upper)
        columns.setContentsMargins(0, 0, 0, 0)

        left = QVBoxLayout()
        columns.addLayout(left, 0)
        read_orders = None
        if self.session.config.fleet is not None:  # the fleet's orders and progress (station/fleet/orders.py)
            from station.fleet.orders import order_book

            book = order_book(self.session.audit, self.session.config)
            read_orders = lambda: book.orders(state="open")  # noqa: E731 - one line, read on the task pool
        self.orders = OrderPanel(
            self.session.audit,
            self.pool,
            required=self.session.config.orders_required,
            parent=upper,
            read_orders=read_orders,
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
        return page

    def _build_shortcuts(self) -> None:
        bindings: list[tuple[str, Callable[[], object]]] = [
            ("F5", self.retry),
            ("Esc", self.abort),
            ("Ctrl+Return", self.provision),
            ("Ctrl+Enter", self.provision),
            ("Ctrl+P", self.print_label),
            ("Ctrl+Shift+S", self.save_label_dialog),
            ("Ctrl+,", self.open_settings),
            ("Ctrl+L", self.sign_out),
            ("F6", self.focus_scan),
            ("Ctrl+1", lambda: self.show_mode("single")),
            ("Ctrl+2", lambda: self.show_mode("batch")),
            ("Ctrl+3", lambda: self.show_mode("audit")),
        ]
        self.shortcuts: dict[str, QShortcut] = {}
        for key, action in bindings:
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
            shortcut.activated.connect(action)
            self.shortcuts[key] = shortcut

    # -- settings -------------------------------------------------------------------------------

    def apply_settings(self) -> None:
        """Use the administrator's current settings (font, fixtures, profile, label stock)."""
        settings = self.session.settings
        factor = LARGE_FONT_FACTOR if settings.large_font else 1.0
        # Both the application's font (dialogs, widgets made later) and the window's (its widgets now).
        font = base_font(settings.large_font)
        QApplication.setFont(font)
        self.setFont(font)
        self.fixtures.horizontalHeader().setFont(font)  # item-view headers keep the font they were made with
        self.result.set_scale(factor)
        self.scan.setFont(monospace_font(18 * factor))
        emphasise(self.title_label, point_size=22 * factor)
        emphasise(self.heading_label, point_size=13 * factor)
        self.log.setFont(monospace_font(9 * factor))
        if self.progress is not None:  # step rows carry their own (bold or not) fonts
            for step in self.progress.steps:
                self.steps.show_step(step)
        selected = self.fixtures.selected_name()
        self.fixtures.set_fixtures(self.session.fixtures.fixtures, selected)
        self.prober.set_fixtures(self.session.fixtures.fixtures)
        if self._started_probing:
            self.prober.probe_now()
        source = self.session.fixtures
        self.status.setText(
            f"Fixtures: {source.origin}   ·   Label stock: {label_layout(settings.label_layout).title}"
            + (
                "   ·   Settings are locked (an administrator signs in with their own credential)"
                if self.session.config.production
                else "   ·   Settings are locked (administrator PIN)"
            )
        )
        self.status.setToolTip(f"Fixtures file: {source.path}" if source.path else "")
        self._show_mode()
        self.batch.apply_settings()
        self.batch.setFont(font)
        if not source.fixtures:
            self._feedback(
                "No fixtures are configured — an administrator adds [[fixture]] tables to station.toml, "
                "or starts the simulator with `station sim up`.",
                ok=False,
            )
        if self.outcome is not None and self.outcome.kind == "passed":
            self._show_label(self.outcome)

    def _show_mode(self) -> None:
        fixture = self.current_fixture()
        auto = self.session.settings.auto_start
        self.mode_label.setText(
            f"Profile: <b>{html.escape(self.session.profile_name(fixture))}</b> · Auto-start on scan: "
            f"<b>{'on' if auto else 'off'}</b>"
            + (" (a serial typed by hand: press Enter again)" if auto else " (press Enter again to start)")
        )

    # -- signing in -----------------------------------------------------------------------------

    def sign_in_from_field(self) -> None:
        self.sign_in(self.operator_field.text())

    def sign_in(self, entry: str, *, role: str = "technician") -> bool:
        """Sign ``entry`` in; ``role="quality_lead"`` only after the admin PIN was accepted
        (:meth:`sign_in_as_quality_lead`)."""
        if role not in ROLE_TITLES:
            raise ValueError(f"role must be one of {', '.join(ROLE_TITLES)}, not {role!r}")
        try:
            name = operator_name(entry)
        except StationError as exc:
            self.sign_in_problem.setText(f"✗ {exc}")
            self.operator_field.selectAll()
            return False
        self.operator = name
        if role != self.role:
            self._drop_audit_view()  # built again, for the new role, when the Audit tab is opened
        self.role = role
        self.batch.operator = name
        self.operator_field.clear()
        self.sign_in_problem.clear()
        title = " (quality lead)" if role == "quality_lead" else ""
        self.operator_label.setText(f"Operator: <b>{html.escape(name)}</b>{title}")
        self.pages.setCurrentWidget(self.station_page)
        if self.mode() == "audit":
            self._open_audit_view()
        self._feedback(f"Signed in as {name}. Scan a board's serial label.", ok=True)
        self._update_buttons()
        self.focus_scan()
        QTimer.singleShot(0, self._announce_ready)
        return True

    def _announce_ready(self) -> None:
        if self.pages.currentWidget() is self.station_page:
            self.ready.emit()

    def sign_in_as_quality_lead(self) -> None:
        """Quality leads and administrators sign in with their name and their own credential (checked on a
        worker by station.people); the shared admin PIN only where [people] shared_admin_pin allows it (demos)."""
        try:
            name = operator_name(self.operator_field.text())
        except StationError as exc:
            self.sign_in_problem.setText(f"✗ {exc} — then press Sign in as quality lead")
            self.operator_field.setFocus()
            return
        if self.session.config.people.shared_admin_pin and not self.session.config.production:
            try:
                enrolled = self.people.get(name) is not None
            except StationError:
                enrolled = False
            if not enrolled:
                self._sign_in_with_shared_pin(name)
                return
        dialog = PersonSignInDialog(self.people, self.pool, name, account_name(os.getuid()), self)
        dialog.signed_in.connect(self._signed_in_elevated)
        dialog.finished.connect(dialog.deleteLater)
        self.person_dialog = dialog
        dialog.open()

    def _signed_in_elevated(self, session: SignedIn) -> None:
        if not session.role.allows(Role.QUALITY):
            self.sign_in_problem.setText(
                f"✗ {session.person} is enrolled as {session.role.words} — press Sign in (technicians need no PIN)"
            )
            return
        if self.sign_in(session.person, role="quality_lead"):
            self.elevated = session
            self._elevated_ends.start(max(1, round(session.remaining_s() * 1000)))
            self.operator_label.setText(
                f"Operator: <b>{html.escape(session.person)}</b> ({session.role.words} until "
                f"{clock_text(session.expires_at)})"
            )

    def end_elevated_session(self, *, expired: bool = False) -> None:
        """The quality lead's or administrator's session ends (signed out, or its time is up): the window
        drops back to the sign-in page — or, with units running, to a technician's view."""
        session, self.elevated = self.elevated, None
        self._elevated_ends.stop()
        if session is None:
            return
        people = self.people
        self.pool.submit(lambda: people.sign_out(session, expired=expired), lambda _done: None)
        if expired:
            words = (
                f"{session.person}'s {session.role.words} session ended at {clock_text(session.expires_at)} — "
                "sign in again"
            )
            if self._anything_running():
                self._drop_audit_view()
                self.role = "technician"
                self.operator_label.setText(f"Operator: <b>{html.escape(session.person)}</b> (session ended)")
                self._feedback(words, ok=False, mark="✗")
            else:
                self.sign_out()
                self.sign_in_problem.setText(f"✗ {words}")

    def _sign_in_with_shared_pin(self, name: str) -> None:
        """Demo mode only ([people] shared_admin_pin = true): any name and the station's admin PIN."""
        if not pin_is_set(self.session.home):
            self.sign_in_problem.setText(
                "✗ No admin PIN is set on this station, so nobody can sign in as quality lead here. An "
                f"administrator sets one in a terminal: station --home {self.session.home.root} admin set-pin"
            )
            return
        dialog = AdminPinDialog(
            self.admin_lock,
            self.pool,
            self,
            title="Quality lead sign-in",
            intro=f"Quality leads export the audit log and revoke certificates. Type the admin PIN to sign in "
            f"{name} as quality lead.",
        )
        dialog.unlocked.connect(lambda: self.sign_in(name, role="quality_lead"))
        dialog.finished.connect(dialog.deleteLater)
        self.pin_dialog = dialog
        dialog.open()

    def sign_out(self) -> None:
        if self._anything_running() or self.operator is None:
            return
        if self.elevated is not None:
            self.end_elevated_session()
        self.operator = None
        self.batch.operator = None
        self.role = "technician"
        self._drop_audit_view()
        self.operator_label.clear()
        self.pages.setCurrentWidget(self.sign_in_page)
        self.operator_field.setFocus()
        self._update_buttons()

    # -- fixtures ---------------------------------------------------------------------------------

    def current_fixture(self) -> Fixture | None:
        name = self.fixtures.selected_name()
        return next((f for f in self.session.fixtures.fixtures if f.name == name), None)

    def select_fixture(self, name: str) -> None:
        self.fixtures.select(name)

    def _on_fixture_changed(self) -> None:
        self._show_mode()
        self.serial = None  # a serial is checked against the chosen fixture's profile

    def _on_probe(self, result: ProbeResult) -> None:
        self.fixtures.show_probe(result)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._started_probing and not self._closing:
            self._started_probing = True
            self.prober.start()
        if self.operator is None:
            self.operator_field.setFocus()
        else:
            self.focus_scan()

    # -- scanning ---------------------------------------------------------------------------------

    def mode(self) -> str:
        """The tab shown: "single", "batch" or "audit"."""
        return MODES[max(0, self.modes.currentIndex())]

    def show_mode(self, mode: str) -> None:
        if self.pages.currentWidget() is self.station_page:
            self.modes.setCurrentIndex(MODES.index(mode))

    def current_scan_field(self) -> QLineEdit | None:
        """Where a scanned label goes in the mode shown (the audit log has none)."""
        return {"single": self.scan, "batch": self.batch.scan}.get(self.mode())

    def focus_scan(self) -> None:
        field = self.current_scan_field()
        if self.pages.currentWidget() is self.station_page and field is not None:
            field.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def _on_mode_changed(self, index: int) -> None:
        if MODES[index] == "audit":
            self._open_audit_view()
        self.focus_scan()

    # -- the audit log ----------------------------------------------------------------------------

    def _open_audit_view(self) -> None:
        """Build the audit view for the signed-in role when its tab is first shown (not at sign-in:
        it queries the log, which would delay "ready to scan")."""
        if self.audit_view is not None or self.operator is None:
            return
        session = self.session
        # The kiosk session token of a person signed in through the station service (None: the OS account's role).
        token: Callable[[], str | None] = lambda: getattr(self, "service_session", None)  # noqa: E731
        view = AuditView(
            window_audit_reader(session.home, session.config, session.audit, session=token),
            role=self.role,
            station=session.config.name,
            user=self.operator,
            config=session.config,
            home=session.home,
            parent=self.audit_page,
        )
        layout = self.audit_page.layout()
        assert layout is not None
        shown: QWidget = view
        if self.session.config.fleet is not None and self.role == "quality_lead":  # a "Whole fleet" scope
            from ui.fleet_view import ScopedAuditView

            shown = self.fleet_scope = ScopedAuditView(view, self.session.config.fleet, self.audit_page)
        layout.addWidget(shown)
        line = self.session.line
        if line is not None and line.labels.configured:
            reprint = ReprintButton(line, self.operator, view)
            view.unit_shown.connect(reprint.show_unit)
            self.line.printed.connect(reprint.refresh)
            view.action_bar.addWidget(reprint)
        shown.show()  # added to a page that is already shown
        self.audit_view = view

    def _drop_audit_view(self) -> None:
        scope, self.fleet_scope = getattr(self, "fleet_scope", None), None
        if scope is not None:
            scope.shutdown()
            scope.hide()
            scope.setParent(None)
            scope.deleteLater()
        view, self.audit_view = self.audit_view, None
        if view is not None:
            view.shutdown()
            view.hide()
            view.setParent(None)
            view.deleteLater()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        # A key no widget wanted (focus on a button, the table…): if it can be part of a serial, a
        # scanner is typing — send it to the scan field so no label is lost.
        text = event.text()
        field = self.current_scan_field()
        if (
            self.pages.currentWidget() is self.station_page
            and field is not None
            and len(text) == 1
            and _SERIAL_KEY.fullmatch(text)
            and not event.modifiers()
            & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
        ):
            if not field.hasFocus():  # the first key of a scan replaces what the field held
                field.setFocus(Qt.FocusReason.OtherFocusReason)
                field.selectAll()
            QApplication.sendEvent(field, QKeyEvent(event.type(), event.key(), event.modifiers(), text))
            return
        super().keyPressEvent(event)

    def deliver_scan(self, code: str) -> None:
        """A code from the serial scanner: handled exactly like a keyboard-wedge scan in the mode shown."""
        field = self.current_scan_field()
        if self.pages.currentWidget() is not self.station_page or not isinstance(field, ScanField):
            self.line_status.setText(f"scanned {code!r} — sign in and show Single or Batch to scan boards")
            return
        field.feed(code)

    def _feedback(self, text: str, *, ok: bool, mark: str | None = None) -> None:
        mark = mark or ("✓" if ok else "✗ Refused:")
        colour = GREEN if ok else RED
        self.scan_feedback.setText(
            f"<span style='color:{colour}; font-weight:bold'>{html.escape(mark)}</span> {html.escape(text, quote=False)}"
        )

    def _on_scanned(self, text: str, burst: bool) -> None:
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

    def accept_scan(self, text: str, *, burst: bool = False) -> bool:
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

    def _show_new_board(self, serial: str, fixture: Fixture, *, starting: bool) -> None:
        """A different board was scanned: the last board's steps, verdict and label leave the screen."""
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

    # -- running a unit ---------------------------------------------------------------------------

    def provision(self, *, resume: bool = False) -> bool:
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

    def retry(self) -> None:
        if self.mode() == "batch":
            name = self._focused_tile()
            if name is not None:
                self.batch.retry_slot(name)
            return
        if self.outcome is not None and self.outcome.resumable and not self.runner.running:
            self.provision(resume=True)

    def abort(self) -> None:
        if self.mode() == "batch":  # Esc stops only the fixture whose tile has the focus, never the batch
            name = self._focused_tile()
            if name is not None and self.batch.board.slots[name].active:
                self.batch.abort_slot(name)
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

    def _focused_tile(self) -> str | None:
        """The fixture of the batch tile that holds the keyboard focus (one of its buttons), if any."""
        widget = QApplication.focusWidget()
        while widget is not None:
            for name, tile in self.batch.tiles.items():
                if widget is tile:
                    return name
            widget = widget.parentWidget()
        return None

    def _single_mode_uses(self, fixture: str) -> str | None:
        """Why the single-board screen holds ``fixture`` (for the batch), or None."""
        if self.runner.running and self.request is not None and self.request.fixture.name == fixture:
            return f"the single-board screen is provisioning board {self.request.serial} on it"
        return None

    def _anything_running(self) -> bool:
        return self.runner.running or self.batch.running

    def _start(self, request: UnitRequest) -> None:
        same_board = (
            self.progress is not None and self.request is not None and self.request.serial == request.serial
        )
        self.request = request
        self.outcome = None
        self._masker = Masker(request.profile.secrets)
        if request.resume and same_board and self.progress is not None:
            self.progress.reset_for_retry()
        else:
            self.progress = UnitProgress([(name, STEPS[name].title) for name in request.profile.step_names()])
            self.log.clear()
        self.steps.set_steps(self.progress.steps)
        self.sheet = None
        self.label_preview.show_sheet(None)
        verb = "Resuming" if request.resume else "Provisioning"
        self.result.show_state(
            "running",
            f"{verb} board {request.serial} on fixture {request.fixture.name}…",
            "watch the steps; press Esc to abort.",
        )
        self._append_log(
            f"━━ {verb} {request.serial} on {request.fixture.name} ({request.fixture.device}), "
            f"profile {request.profile.name}, operator {request.operator}"
        )
        self._unit_began = time.monotonic()
        self._unit_active = True
        self._feedback(f"{verb.lower()} board {request.serial} on fixture {request.fixture.name}", ok=True)
        self.runner.start(request)
        self._tick.start()
        self._refresh_running()
        self._update_buttons()

    def _on_plan(self, plan: UnitPlan) -> None:
        if self.progress is None:
            return
        self.progress.plan(plan.eta_s)
        for step in self.progress.steps:
            self.steps.show_step(step)
        self._refresh_running()

    def _on_event(self, event: FlowEvent) -> None:
        if self.progress is None:
            return
        changed = self.progress.apply(event, time.monotonic())
        if changed is not None:
            self.steps.show_step(changed)
        if event.kind == "unit_started":
            self._append_log(f"unit {event.unit_id}: {event.message}")
        elif event.kind == "step_started":
            usual = f" (usually {event.eta_s:.1f} s)" if event.eta_s else ""
            retry = f" — try {event.attempt}" if event.attempt > 1 else ""
            self._append_log(f"▶ [{event.index + 1}/{event.count}] {event.title}{usual}{retry}")
            if self.result.state == "running":
                self.result.detail.setText(
                    f"Board {event.serial}: step {event.index + 1} of {event.count}, {event.title}."
                )
        elif event.kind == "output":
            self._append_log(event.message)
        elif event.kind == "step_finished":
            line = f"  {event.outcome} in {event.duration_s:.2f} s"
            if event.outcome != "passed" and event.message:
                line += f": {event.message.strip().splitlines()[-1]}"
            self._append_log(line)

    def _refresh_running(self) -> None:
        progress = self.progress
        if progress is None:
            return
        now = time.monotonic()
        self.progress_bar.setValue(round(progress.fraction(now) * 1000))
        self.progress_bar.setFormat(f"{progress.done_count()} of {len(progress.steps)} steps")
        if not self.runner.running:
            self.eta_label.setText("")
            return
        if progress.current is not None and progress.current.started_at is not None:
            self.steps.show_running_time(progress.current, now - progress.current.started_at)
        left = progress.remaining_s(now)
        self.eta_label.setText(
            "Time left: learning (no history yet)" if left is None else f"About {_duration(left)} left"
        )

    def _on_finished(self, outcome: UnitOutcome) -> None:
        self._unit_active = False
        self._tick.stop()
        self.outcome = outcome
        if self.progress is not None:
            self.progress.finish(passed=outcome.kind == "passed")
            for step in self.progress.steps:
                self.steps.show_step(step)
        self._refresh_running()
        self.eta_label.setText(f"Took {_duration(time.monotonic() - self._unit_began)}")
        message = self._masker(outcome.message)
        if outcome.kind == "passed":
            self.result.show_state(
                "passed",
                f"Board {outcome.serial} is enrolled (unit {outcome.unit_id}).",
                "stick the label on the board, then scan the next board.",
            )
            self._show_label(outcome)
        elif outcome.kind == "refused":
            next_step = (
                "press Retry (F5) to continue this board's unfinished unit from where it failed."
                if outcome.resumable
                else "nothing was done to the board; fix the cause, then scan again."
            )
            if outcome.resumable and self.request is not None:
                self.request = UnitRequest(
                    outcome.serial,
                    self.request.fixture,
                    self.request.profile,
                    self.request.operator,
                    resume=True,
                )
            self.result.show_state("refused", message, next_step)
        else:
            where = ""
            if outcome.failed_step in STEPS and self.request is not None:
                names = self.request.profile.step_names()
                index = names.index(outcome.failed_step) + 1 if outcome.failed_step in names else 0
                where = f"Failed at step {index} of {len(names)}, {STEPS[outcome.failed_step].title}: "
            resume_from = STEPS[outcome.failed_step].resume_from if outcome.failed_step in STEPS else None
            again = f" — it continues from “{STEPS[resume_from].title}”" if resume_from in STEPS else ""
            next_step = (
                f"do what the message says, then press Retry (F5){again}. "
                "To give up on this board, set it aside and scan the next one."
            )
            self.result.show_state(
                "failed",
                where + message,
                next_step
                if outcome.resumable
                else "set the board aside and call the line engineer with this message.",
            )
        self._append_log(f"━━ {outcome.kind.upper()}: {message}")
        if outcome.kind == "passed":
            self._feedback(f"board {outcome.serial} passed — label it, then scan the next board", ok=True)
        else:
            self._feedback(
                f"board {outcome.serial} did not pass — the reason is on the right", ok=False, mark="✗"
            )
        self.serial = None
        self.scan.selectAll()
        self._update_buttons()
        if not self._closing:
            self.focus_scan()
        self.unit_finished.emit(outcome)

    def _on_idle(self) -> None:
        self._update_buttons()
        if self._closing and not self._anything_running():
            self.close()

    def _append_log(self, text: str) -> None:
        # The core masks device output already; a second pass guards against any PIN that slipped through.
        bar = self.log.verticalScrollBar()
        following = bar.value() >= bar.maximum() - 2
        self.log.appendPlainText(self._masker(text.rstrip("\n")))
        if following:  # keep showing the newest line, unless the technician scrolled back to read
            bar.setValue(bar.maximum())

    def _update_buttons(self) -> None:
        running = self.runner.running
        signed_in = self.operator is not None
        self.provision_button.setEnabled(signed_in and not running and not self._closing)
        self.retry_button.setEnabled(
            signed_in
            and not running
            and self.outcome is not None
            and self.outcome.resumable
            and not self._closing
        )
        self.abort_button.setEnabled(running and not self._closing and self.result.state != "stopping")
        self.print_button.setEnabled(self.sheet is not None)
        self.pdf_button.setEnabled(self.sheet is not None)
        busy = running or self.batch.running
        self.settings_button.setEnabled(not busy)
        self.sign_out_button.setEnabled(not busy)

    # -- the label --------------------------------------------------------------------------------

    def _show_label(self, outcome: UnitOutcome) -> None:
        if not outcome.certificate_fingerprint:
            self.label_preview.show_sheet(None)
            self.label_preview.setText("No certificate is recorded for this unit — no label.")
            return
        try:
            content = build_label(outcome.serial, outcome.certificate_fingerprint)
            self.sheet = lay_out(content, label_layout(self.session.settings.label_layout))
        except StationError as exc:
            self.sheet = None
            self.label_preview.show_sheet(None)
            self.label_preview.setText(f"✗ No label: {exc}")
            return
        self.label_preview.show_sheet(self.sheet)
        self._update_buttons()

    def print_label(self) -> None:
        if self.sheet is None:
            return
        line = self.session.line
        if line is not None and line.labels.configured and self.outcome is not None and self.outcome.unit_id:
            # The line's label printer ([label] printer): no dialog; the outcome shows in the status bar.
            line.request_print(
                self.outcome.unit_id,
                by=self.operator or "",
                reprint=bool(self.session.audit.label_prints(self.outcome.unit_id)),
            )
            self.line_status.setText(f"printing label {self.sheet.content.serial}…")
            return
        printer = QPrinter(QPrinter.PrinterMode.HighResolution)
        configure_printer(printer, self.sheet)
        dialog = QPrintDialog(printer, self)
        dialog.setWindowTitle(f"Print label {self.sheet.content.serial}")
        if dialog.exec() == QPrintDialog.DialogCode.Accepted and not print_label(printer, self.sheet):
            QMessageBox.warning(
                self,
                "Label not printed",
                "The printer could not be started — check it is switched on and has labels, "
                "then press Ctrl+P again.",
            )
        self.focus_scan()

    def save_label_dialog(self) -> None:
        """Save the label as a PDF in the technician's output folder ([output] folder) — never elsewhere."""
        if self.sheet is None:
            return
        try:
            folder = ensure_output_folder(self.session.config, self.session.home)
        except StationError as exc:
            self._feedback(f"label not saved: {exc}", ok=False, mark="✗")
            return
        settings = self.session.config.label
        proposed = free_name(
            folder,
            label_file_name(settings.file_name, self.sheet.content.serial, self.sheet.content.issued_on),
        )
        dialog = self.label_save_dialog = OutputFileDialog(self, "Save label as PDF", folder, proposed)
        if dialog.exec() == OutputFileDialog.DialogCode.Accepted and dialog.selectedFiles():
            self.save_label(Path(dialog.selectedFiles()[0]))
        self.focus_scan()

    def save_label(self, path: Path) -> bool:
        """Write the label PDF to ``path`` if it is a new file in the output folder; say why not otherwise."""
        if self.sheet is None:
            return False
        try:
            folder = output_folder(self.session.config, self.session.home)
            saved = save_output(
                path, label_pdf(self.sheet), folder=folder, home=self.session.home, suffix=".pdf"
            )
        except StationError as exc:
            self._feedback(f"label not saved: {exc}", ok=False, mark="✗")
            return False
        self._feedback(f"label saved to {saved}", ok=True)
        return True

    # -- admin ------------------------------------------------------------------------------------

    def open_settings(self) -> None:
        if self._anything_running():
            return
        if (
            self.elevated is not None
            and self.elevated.role.allows(Role.ADMIN)
            and not self.elevated.expired()
        ):
            self._show_settings()  # an administrator signed in with their own credential
            return
        if self.session.config.production:
            QMessageBox.information(
                self,
                "Settings are locked",
                "Settings are for administrators. Sign out, type your name, press Sign in as quality lead and use "
                "your own administrator credential (an administrator enrols you with `station people add NAME "
                "--role admin`).",
            )
            return
        if not pin_is_set(self.session.home):
            QMessageBox.information(
                self,
                "Settings are locked",
                "No admin PIN is set on this station, so its settings cannot be changed here.\n\n"
                f"An administrator sets one in a terminal:\n    station --home {self.session.home.root} admin set-pin",
            )
            return
        dialog = AdminPinDialog(self.admin_lock, self.pool, self)
        dialog.unlocked.connect(self._show_settings)
        dialog.finished.connect(dialog.deleteLater)
        self.pin_dialog = dialog
        dialog.open()

    def _show_settings(self) -> None:
        dialog = SettingsDialog(self.session, self)
        dialog.accepted.connect(self.apply_settings)
        dialog.finished.connect(dialog.deleteLater)
        dialog.finished.connect(lambda _result: self.focus_scan())
        self.settings_dialog = dialog
        dialog.open()

    # -- closing ----------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if not self._anything_running() or self._leaving_units:
            self._shutdown()
            event.accept()
            return
        # Never close under a running unit: ask (while the unit is in progress), cancel, and close once
        # it has recorded its end (runner.idle), or after CLOSE_WAIT_S, when the engine terminates it.
        event.ignore()
        if self._closing:
            return
        batch_running = self.batch.board.counts().running
        if self._unit_active or batch_running:
            boards = [f"board {self.request.serial if self.request else ''}"] if self._unit_active else []
            if batch_running:
                boards.append(f"{batch_running} board{'s' if batch_running != 1 else ''} of the batch")
            in_service = not self.engine.in_process
            answer = QMessageBox.question(
                self,
                "Stop the running units?",
                f"{' and '.join(boards).capitalize()} {'are' if len(boards) > 1 or batch_running > 1 else 'is'} "
                "being provisioned.\n\n"
                "Yes: stop them and close the window — each unit ends failed; Retry continues it later.\n"
                + (
                    "Close: close the window and leave them running in the station service — a window opened "
                    "later shows them.\n"
                    if in_service
                    else ""
                )
                + "No: keep the window open.",
                QMessageBox.StandardButton.Yes
                | QMessageBox.StandardButton.No
                | (QMessageBox.StandardButton.Close if in_service else QMessageBox.StandardButton.NoButton),
                QMessageBox.StandardButton.No,
            )
            if answer == QMessageBox.StandardButton.Close and in_service:
                self._leave_running()
                event.accept()
                return
            if answer != QMessageBox.StandardButton.Yes:
                return
            if self._unit_active and self.runner.running:
                self.runner.abort()
                self._append_log("■ abort requested: the window is closing")
                self.result.show_state("stopping", "Stopping the unit, then closing the window…", "")
            self.batch.cancel_all()
        self._closing = True
        self._close_deadline.start(round(CLOSE_WAIT_S * 1000))
        self._update_buttons()
        if not self._anything_running():  # it ended while the question was open
            self.close()

    def _leave_running(self) -> None:
        """Close, leaving the units running in the station service (this window only stops watching them)."""
        self._leaving_units = True
        self._shutdown()

    def _close_anyway(self) -> None:
        """The units did not stop in time: the engine terminates their workers (each unit recorded failed
        and resumable), then the window closes."""
        self.engine.shutdown(CLOSE_TERMINATE_S)
        # In-process, the engine terminated them (each recorded failed and resumable); in the station service,
        # its own cancel deadline does: this window stops watching.
        self._leaving_units = True
        self.close()

    def _shutdown(self) -> None:
        self._closing = True
        self._elevated_ends.stop()
        self._tick.stop()
        self._close_deadline.stop()
        self.prober.stop()
        self.line.stop()
        self.orders.stop()
        self.batch.shutdown()
        self.engine.shutdown(CLOSE_TERMINATE_S)
        # Before the session closes the audit log the view reads from.
        self._drop_audit_view()
        self.pool.shutdown(POOL_SHUTDOWN_MS)
