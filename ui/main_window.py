"""The technician's window: sign in, pick the fixture, scan, Provision, watch the steps, read the
verdict, print the label — one board at a time, or many at once in the Batch tab, and the audit log
in the Audit tab (a technician sees the station's recent units; a quality lead, signed in with their
own credential for a limited time, filters, exports and revokes).

The window is only a client of the station service (`station serve`): it opens nothing in the station home, holds
no CA key and no audit database, and sends no MES record.  It watches :class:`~station.flow.FlowEvent` values
(through :mod:`ui.bridge`) and sends requests (start, abort, resume, sign in, settings…).  Every decision — is this
serial valid, which profile, is this PIN right, may this account do that — is the core's or the service's.

The window is one class in parts, each in its own module: signing in (:mod:`ui.window_sign_in`), the single-board
page (:mod:`ui.window_single`) and its unit (:mod:`ui.window_unit`), the label (:mod:`ui.window_label`), settings
and the CA (:mod:`ui.window_admin`); here the frame, the tabs, the audit tab and closing.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeyEvent, QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from station.label import LabelSheet, label_layout
from station.masking import Masker
from station.people import SignedIn
from ui.audit_view import AuditView
from ui.batch_view import BatchView
from ui.bridge import (
    Ending,
    Engine,
    FixtureProber,
    TaskPool,
    UnitOutcome,
    UnitRequest,
    UnitRunner,
    window_audit_reader,
)
from ui.line import LineEvents, ReprintButton
from ui.progress import UnitProgress
from ui.session import Session
from ui.style import LARGE_FONT_FACTOR, base_font, emphasise, monospace_font
from ui.widgets import ScanField
from ui.window_admin import AdminMixin
from ui.window_label import LabelMixin
from ui.window_sign_in import QUALITY_LEAD, ROLE_TITLES, TECHNICIAN, SignInMixin
from ui.window_single import SingleBoardMixin
from ui.window_unit import UnitViewMixin

__all__ = ["CLOSE_WAIT_S", "MODES", "ROLE_TITLES", "MainWindow"]

# How long closing the window waits for a cancelled unit to wind down before closing anyway.
CLOSE_WAIT_S = 20.0
# Refresh of the running step's clock, the progress bar and the time left.
TICK_MS = 250
POOL_SHUTDOWN_MS = 3000
# Keys typed anywhere in the window that belong in the scan field (what a serial can contain).
_SERIAL_KEY = re.compile(r"[A-Za-z0-9._:/+-]")

# The window's modes (tabs), in order; Ctrl+1, Ctrl+2, Ctrl+3 switch to them.
MODES = ("single", "batch", "audit")

# Closing with units that did not stop within CLOSE_WAIT_S: how long the window waits for its link to the
# service to end (the service's own cancel deadline ends the units, each recorded failed and resumable).
CLOSE_TERMINATE_S = 2.0


class MainWindow(SignInMixin, SingleBoardMixin, UnitViewMixin, LabelMixin, AdminMixin, QMainWindow):
    """One station screen: one board at a time on the fixture selected, a batch, the audit log."""

    ready = Signal()  # signed in, the scan field shown and focused
    unit_finished = Signal(object)  # UnitOutcome, once the window shows it
    view_changed = Signal()  # the station's settings and fixtures read again from the service, and shown

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.operator: str | None = None
        self.role = TECHNICIAN  # or QUALITY_LEAD, after a credential the service accepted
        self.audit_view: AuditView | None = None
        self.serial: str | None = None  # the serial accepted from the scan field
        self.progress: UnitProgress | None = None
        self.outcome: UnitOutcome | None = None
        self.request: UnitRequest | None = None
        self.sheet: LabelSheet | None = None
        self._masker = Masker(())
        self._unit_began = 0.0
        # From start until the outcome is shown (the service may take a moment longer).
        self._unit_active = False
        # A unit running in the service that this window did not start, shown on the single-board page.
        self._mirrored_job: int | None = None
        self._closing = False
        self._leaving_units = False  # closing without waiting for the units (they go on in the service)
        self._started_probing = False
        self.ca_dialog = None
        self.pool = TaskPool(self)
        self.prober = FixtureProber(self.pool, self)
        # One engine for the single-board page and the batch grid: each unit in its own worker process of the
        # station service, so units outlive the window.
        self.engine = Engine(session.client, self)
        self.runner = UnitRunner(self.engine, self)
        # A quality lead's or administrator's session, given by the service (its token is the client's).
        self.elevated: SignedIn | None = None
        self._elevated_ends = QTimer(self)
        self._elevated_ends.setSingleShot(True)
        self._elevated_ends.setTimerType(Qt.TimerType.PreciseTimer)
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
        self._build_status_bar()
        self._connect_units()
        self.apply_settings()
        self._update_buttons()

    # -- building ---------------------------------------------------------------------------

    def _build_status_bar(self) -> None:
        self.status = QLabel(self)
        self.statusBar().addPermanentWidget(self.status, 1)
        # The serial scanner on this line PC feeds the scan field; the label printer's words come from the
        # service (the line's label printer and MES sender are the service's).
        self.line = LineEvents(self.session.config.scanner, self)
        self.line_status = QLabel(self)
        self.statusBar().addPermanentWidget(self.line_status)
        self.line.scanned.connect(self.deliver_scan)
        self.line.scanner_state.connect(lambda _connected, text: self.line_status.setText(text))
        self.line.start()
        # Where the units run: the station service (started for this user if needed), said in the status bar.
        self.service_status = QLabel(self)
        self.service_status.setObjectName("service_status")
        self.statusBar().addPermanentWidget(self.service_status)
        self._show_service(self.engine.service_text)
        self.engine.service_status.connect(self._show_service)
        self.engine.notice.connect(self.line_status.setText)
        self.engine.ca_locked.connect(self.ask_ca_secret)

    def _connect_units(self) -> None:
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
        # Units already running in the service (a window closed or killed) show live: on their fixture's batch
        # tile (BatchView.adopt), and on the single-board page while it is idle.
        self.engine.foreign.connect(self._mirror_foreign)
        self.engine.delivered.connect(self._mirrored_event)
        self.engine.watch()

    def _show_service(self, text: str) -> None:
        """Where the units run, in the status bar: shortened to fit beside the other notes, whole on hover."""
        self.service_status.setToolTip(text)
        self.service_status.setText(
            self.service_status.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, 420)
        )

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
        self._build_single_page(upper)
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
        if self.session.view.fixtures_problem:
            self.status.setText(f"✗ {self.session.view.fixtures_problem}")
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
        if self.outcome is not None and self.outcome.kind == Ending.PASSED:
            self._show_label(self.outcome)

    def _show_mode(self) -> None:
        fixture = self.current_fixture()
        auto = self.session.settings.auto_start
        self.mode_label.setText(
            f"Profile: <b>{html.escape(self.session.profile_name(fixture))}</b> · Auto-start on scan: "
            f"<b>{'on' if auto else 'off'}</b>"
            + (" (a serial typed by hand: press Enter again)" if auto else " (press Enter again to start)")
        )

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._started_probing and not self._closing:
            self._started_probing = True
            self.prober.start()
        if self.operator is None:
            self.operator_field.setFocus()
        else:
            self.focus_scan()

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

    def _open_audit_view(self) -> None:
        """Build the audit view for the signed-in role when its tab is first shown (not at sign-in:
        it queries the log, which would delay "ready to scan")."""
        if self.audit_view is not None or self.operator is None:
            return
        session = self.session
        client = session.client  # its kiosk session token, if a person signed in (their role for every read)
        view = AuditView(
            window_audit_reader(client, session=lambda: client.token),
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
        fleet = self.session.fleet_for_view() if self.role == QUALITY_LEAD else None
        if fleet is not None:  # a "Whole fleet" scope
            from ui.fleet_view import ScopedAuditView

            shown = self.fleet_scope = ScopedAuditView(view, fleet, self.audit_page)
        layout.addWidget(shown)
        printer = self.session.config.label.printer
        if printer:  # the line's label printer: the service reprints (``labels``), recorded by whom
            # The prints' history in its tooltip, read through the service (``label_prints``) on the task pool.
            reprint = ReprintButton(
                printer, self.print_on_line_printer, client.label_prints, self.pool.submit, view
            )
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

    def _focused_tile(self) -> str | None:
        """The fixture of the batch tile that holds the keyboard focus (one of its buttons), if any."""
        widget = QApplication.focusWidget()
        while widget is not None:
            for name, tile in self.batch.tiles.items():
                if widget is tile:
                    return name
            widget = widget.parentWidget()
        return None

    def _anything_running(self) -> bool:
        return self.runner.running or self.batch.running

    def _on_idle(self) -> None:
        self._update_buttons()
        if self._closing and not self._anything_running():
            self.close()

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
        shown = running or self._mirrored_job is not None  # a unit of this window, or one re-attached
        self.abort_button.setEnabled(shown and not self._closing and self.result.state != "stopping")
        self.print_button.setEnabled(self.sheet is not None)
        self.pdf_button.setEnabled(self.sheet is not None)
        busy = running or self.batch.running
        self.settings_button.setEnabled(not busy)
        self.sign_out_button.setEnabled(not busy)

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
            in_service = True  # the units run in the station service: they may go on without this window
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
        """The units did not stop in time: the service's own cancel deadline ends them (each recorded failed and
        resumable); this window stops watching and closes."""
        self.engine.shutdown(CLOSE_TERMINATE_S)
        self._leaving_units = True
        self.close()

    def _shutdown(self) -> None:
        self._closing = True
        if self.elevated is not None:  # signed out at the service (the journal says so), not left to expire
            self.end_elevated_session()
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
