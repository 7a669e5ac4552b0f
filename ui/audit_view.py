"""The audit view: browse what the station enrolled, look into one unit, see the yield, export, revoke.

Quality leads see every unit, can sort and filter the whole log, export it (CSV, JSON Lines, PDF report) and
revoke a board's certificate. Technicians see only the most recent units of their own station and can do
neither: the buttons are not even built for them, and the actions refuse a technician if called anyway.

Everything is read through an :class:`~station.service.audit_reader.AuditReader` — on a line PC the station
service, which enforces the role table on every read (a technician's reads cover this station's most recent
units only; see :mod:`station.service.audit_reads`), so the window needs no access to the station home.
Nothing waits on the GUI thread: pages of the table, a unit's detail, the count, the yield summary, a
certificate's ``openssl x509 -text``, exports and revocations run on task pools and come back as callbacks on the
GUI thread (:class:`ui.bridge.TaskPool`); every read has a deadline, and a slow or stopped service is said in the
view's message line.  Results that arrive after the filters or the selection changed are dropped.  Exports and
saved certificates go only into the output folder (:mod:`station.outputs`, mode 0640).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QDate, QItemSelection, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QCloseEvent, QColor, QGuiApplication, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from station.audit import CertificateRecord, StepRecord, Unit, UnitFilter, YieldSummary
from station.certificate_text import certificate_text
from station.config import StationConfig
from station.display import format_percent as _percent
from station.errors import StationError
from station.home import StationHome
from station.identity import Basis, render_claims, trust_summary
from station.identity_log import IdentityRecord
from station.outputs import check_output_path, ensure_output_folder, free_name, save_output
from station.profiles import STEP_NAMES
from station.states import StepOutcome, UnitState
from ui.audit_model import COLUMNS, AuditTableModel
from ui.bridge import RECENT_UNITS, AuditReader, ExportedFile, Revoked, TaskPool, UnitDetail
from ui.label import OutputFileDialog
from ui.style import AMBER, GREEN, GREY, RED, monospace_font

if TYPE_CHECKING:
    from station.fleet.queries import GroupYield

ROLES = ("technician", "quality_lead")
# A technician looks up what just happened at the bench, not the plant's history (the service's scope).
TECHNICIAN_ROWS = RECENT_UNITS
# Closing the view waits this long for a running export or revocation before leaving it to finish alone.
SHUTDOWN_TIMEOUT_MS = 10_000
ANY = "any"

EXPORT_FILTERS = {
    "csv": "CSV for a spreadsheet (*.csv)",
    "jsonl": "JSON Lines (*.jsonl)",
    "pdf": "PDF report (*.pdf)",
}


class AuditView(QWidget):
    """Units from the audit log with filters, a detail pane, the yield, exports and revocation.

    ``reader`` answers the reads (the view owns it and closes it on :meth:`shutdown`). ``role`` is "quality_lead"
    or "technician"; ``station`` is this station's name (StationConfig.name) — a technician sees only its recent
    units. ``user`` is recorded beside the OS account as who revoked (default: the login name). ``config`` and
    ``home`` say where exports and saved certificates go (the output folder; none without them).
    """

    unit_shown = Signal(object)  # the Unit now in the detail pane, or None
    job_finished = Signal(str)  # what a background job reported (for whoever embeds the view)

    def __init__(
        self,
        reader: AuditReader,
        *,
        role: str,
        station: str | None = None,
        user: str | None = None,
        config: StationConfig | None = None,
        home: StationHome | None = None,
        parent: QWidget | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if role == "technician" and not station:
            raise ValueError("a technician's audit view needs the station's name (station=config.name)")
        super().__init__(parent)
        self.reader = reader
        self.config = config
        self.home = home
        self.role = role
        self.station = station or socket.gethostname()
        self.user = user or _login_name()
        self.pool = TaskPool(self, max_threads=2)
        # Pages of the table, one at a time, never queued behind an export.
        self.page_pool = TaskPool(self, max_threads=1)
        self._closed = False
        self._in_flight = 0
        # Bumped when the filters (or the selection) change: late answers to an older question are dropped.
        self._filter_generation = 0
        self._selection_generation = 0
        self._yield_scope: tuple[object, ...] | None = None
        self._unit: Unit | None = None
        self._certificate: CertificateRecord | None = None
        self._steps: list[StepRecord] = []

        lead = self.is_quality_lead
        self.model = AuditTableModel(reader, self.page_pool, recent=not lead, parent=self)
        self.model.failed.connect(self._show_error)

        self.setWindowTitle("Audit log" if lead else f"Recent units at {self.station}")
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_filter_bar())
        layout.addLayout(self._build_action_bar())
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self._build_table())
        splitter.addWidget(self._build_detail())
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([760, 520])
        layout.addWidget(splitter, 1)

        self.apply_filters(force=True)

    @property
    def is_quality_lead(self) -> bool:
        return self.role == "quality_lead"

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(1280, 760)

    # ------------------------------------------------------------------------------------ building

    def _build_filter_bar(self) -> QGridLayout:
        grid = QGridLayout()
        today = QDate.currentDate()
        self.since_check = QCheckBox("From", self)
        self.since_edit = QDateEdit(today.addDays(-7), self)
        self.until_check = QCheckBox("To", self)
        self.until_edit = QDateEdit(today, self)
        for edit in (self.since_edit, self.until_edit):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
            edit.setEnabled(False)
            edit.dateChanged.connect(self._filters_edited)
        self.since_check.toggled.connect(self.since_edit.setEnabled)
        self.until_check.toggled.connect(self.until_edit.setEnabled)
        self.since_check.toggled.connect(self._filters_edited)
        self.until_check.toggled.connect(self._filters_edited)

        self.serial_edit = self._line_edit("serial starts with…")
        self.operator_edit = self._line_edit("operator")
        self.batch_edit = self._line_edit("batch")
        self.fixture_edit = self._line_edit("fixture")
        self.order_edit = self._line_edit("work order")
        self.result_combo = self._combo(tuple(state.value for state in UnitState))
        self.step_combo = self._combo(STEP_NAMES)
        clear = QPushButton("Clear filters", self)
        clear.clicked.connect(self.clear_filters)

        row: list[tuple[QWidget, QWidget]] = [
            (self.since_check, self.since_edit),
            (self.until_check, self.until_edit),
            (QLabel("Serial", self), self.serial_edit),
            (QLabel("Result", self), self.result_combo),
            (QLabel("Order", self), self.order_edit),
        ]
        second: list[tuple[QWidget, QWidget]] = [
            (QLabel("Operator", self), self.operator_edit),
            (QLabel("Batch", self), self.batch_edit),
            (QLabel("Fixture", self), self.fixture_edit),
            (QLabel("Failed step", self), self.step_combo),
        ]
        for line, pairs in enumerate((row, second)):
            for column, (label, editor) in enumerate(pairs):
                grid.addWidget(label, line, column * 2)
                grid.addWidget(editor, line, column * 2 + 1)
        grid.addWidget(clear, 1, 8)
        return grid

    def _line_edit(self, placeholder: str) -> QLineEdit:
        edit = QLineEdit(self)
        edit.setPlaceholderText(placeholder)
        edit.setClearButtonEnabled(True)
        # On Enter or leaving the field: a query per keystroke would be wasted on half-typed serials.
        edit.editingFinished.connect(self._filters_edited)
        return edit

    def _combo(self, values: tuple[str, ...]) -> QComboBox:
        combo = QComboBox(self)
        combo.addItems([ANY, *values])
        combo.currentIndexChanged.connect(self._filters_edited)
        return combo

    def _build_action_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        self.count_label = QLabel("", self)
        self.message = QLabel("", self)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        refresh = QPushButton("Refresh", self)
        refresh.clicked.connect(self.refresh)
        bar.addWidget(self.count_label)
        bar.addWidget(self.message, 1)
        bar.addWidget(refresh)
        self.export_buttons: dict[str, QPushButton] = {}
        self.action_bar = bar  # where the window adds actions of its own (the line's "Reprint label")
        self.revoke_button: QPushButton | None = None
        if self.is_quality_lead:
            for fmt, title in (("csv", "Export CSV…"), ("jsonl", "Export JSONL…"), ("pdf", "PDF report…")):
                button = QPushButton(title, self)
                button.clicked.connect(partial(self.export, fmt))
                bar.addWidget(button)
                self.export_buttons[fmt] = button
            self.revoke_button = QPushButton("Revoke certificate…", self)
            self.revoke_button.setEnabled(False)
            self.revoke_button.clicked.connect(lambda: self.revoke_selected())
            bar.addWidget(self.revoke_button)
        return bar

    def _build_table(self) -> QTableView:
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        # One line per unit, all rows the same height: Qt then never measures rows it has not shown.
        rows = self.table.verticalHeader()
        rows.setVisible(False)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        if self.is_quality_lead:
            # The indicator first, so that enabling sorting asks for the order the model already has.
            self.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.DescendingOrder)
            self.table.setSortingEnabled(True)
            self.table.horizontalHeader().sortIndicatorChanged.connect(self._sort_indicator_changed)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.model.modelReset.connect(lambda: self._show_unit(None))
        widths = {"Unit": 70, "Serial": 150, "Result": 80, "Started": 150, "Duration": 80}
        for column, spec in enumerate(COLUMNS):
            self.table.setColumnWidth(column, widths.get(spec.title, 110))
        return self.table

    def _build_detail(self) -> QTabWidget:
        self.detail_tabs = QTabWidget(self)

        unit_page = QWidget(self)
        unit_layout = QVBoxLayout(unit_page)
        self.unit_summary = QLabel("Select a unit to see its steps and certificate.", unit_page)
        self.unit_summary.setWordWrap(True)
        self.unit_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.unit_summary.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.steps_tree = QTreeWidget(unit_page)
        self.steps_tree.setHeaderLabels(["Step", "Try", "Outcome", "Started", "Duration", "Message"])
        self.steps_tree.setRootIsDecorated(False)
        self.steps_tree.setAlternatingRowColors(True)
        self.steps_tree.currentItemChanged.connect(self._step_chosen)
        self.excerpt = QPlainTextEdit(unit_page)
        self.excerpt.setReadOnly(True)
        self.excerpt.setFont(monospace_font(9))
        self.excerpt.setPlaceholderText("Output excerpt of the selected step")
        unit_layout.addWidget(self.unit_summary)
        unit_layout.addWidget(self.steps_tree, 2)
        unit_layout.addWidget(self.excerpt, 1)
        self.detail_tabs.addTab(unit_page, "Unit && steps")

        cert_page = QWidget(self)
        cert_layout = QVBoxLayout(cert_page)
        self.certificate_status = QLabel("No unit selected.", cert_page)
        self.certificate_status.setWordWrap(True)
        self.certificate_text = QPlainTextEdit(cert_page)
        self.certificate_text.setReadOnly(True)
        self.certificate_text.setFont(monospace_font(9))
        self.certificate_text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        buttons = QHBoxLayout()
        self.copy_pem_button = QPushButton("Copy PEM", cert_page)
        self.save_pem_button = QPushButton("Save PEM…", cert_page)
        self.copy_pem_button.clicked.connect(self.copy_pem)
        self.save_pem_button.clicked.connect(lambda: self.save_pem())
        buttons.addWidget(self.copy_pem_button)
        buttons.addWidget(self.save_pem_button)
        buttons.addStretch(1)
        cert_layout.addWidget(self.certificate_status)
        cert_layout.addWidget(self.certificate_text, 1)
        cert_layout.addLayout(buttons)
        self.detail_tabs.addTab(cert_page, "Certificate")

        self.yield_chart: YieldChart | None = None
        if self.is_quality_lead:
            self.yield_chart = YieldChart(self)
            self.detail_tabs.addTab(self.yield_chart, "Yield")
        self._show_unit(None)
        return self.detail_tabs

    # ------------------------------------------------------------------------------------- filters

    def current_filters(self) -> UnitFilter:
        """The filters the bar shows (a technician's reads are narrowed to this station by the service)."""

        def text(edit: QLineEdit) -> str | None:
            return edit.text().strip() or None

        def choice(combo: QComboBox) -> str | None:
            return None if combo.currentIndex() <= 0 else combo.currentText()

        since = _local_midnight(_day(self.since_edit)) if self.since_check.isChecked() else None
        until = None
        if self.until_check.isChecked():
            # A day is inclusive: up to the start of the next day, as on the command line.
            until = _local_midnight(_day(self.until_edit) + timedelta(days=1))
        return UnitFilter(
            serial_prefix=text(self.serial_edit),
            result=choice(self.result_combo),
            operator=text(self.operator_edit),
            batch=text(self.batch_edit),
            fixture=text(self.fixture_edit),
            failed_step=choice(self.step_combo),
            since=since,
            until=until,
            order=text(self.order_edit),
        )

    def apply_filters(self, *, force: bool = False) -> None:
        """Show the units matching the filter bar, from the first page; recount and re-summarise off-thread."""
        wanted = self.current_filters()
        if not force and self.model.filters == wanted:
            return
        self._filter_generation += 1
        self.message.setText("")
        self.model.set_filters(wanted)
        self._count_matching()
        self._summarise_yield()

    def clear_filters(self) -> None:
        widgets = (
            self.since_check,
            self.until_check,
            self.serial_edit,
            self.operator_edit,
            self.batch_edit,
            self.fixture_edit,
            self.result_combo,
            self.step_combo,
            self.order_edit,
        )
        for widget in widgets:
            widget.blockSignals(True)
        self.since_check.setChecked(False)
        self.until_check.setChecked(False)
        self.since_edit.setEnabled(False)
        self.until_edit.setEnabled(False)
        for edit in (
            self.serial_edit,
            self.operator_edit,
            self.batch_edit,
            self.fixture_edit,
            self.order_edit,
        ):
            edit.clear()
        self.result_combo.setCurrentIndex(0)
        self.step_combo.setCurrentIndex(0)
        for widget in widgets:
            widget.blockSignals(False)
        self.apply_filters()

    def refresh(self) -> None:
        """Read the log again with the same filters: new units appear, revocations show."""
        self.apply_filters(force=True)

    def _filters_edited(self, *_args: object) -> None:
        self.apply_filters()

    def _sort_indicator_changed(self, column: int, _order: Qt.SortOrder) -> None:
        # Columns without an index are not sorted; put the indicator back on the column that is.
        if not self.model.sortable(column):
            key, descending = self.model.order
            current = next(i for i, spec in enumerate(COLUMNS) if spec.sort_key == key)
            header = self.table.horizontalHeader()
            header.blockSignals(True)
            header.setSortIndicator(
                current, Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder
            )
            header.blockSignals(False)

    def _count_matching(self) -> None:
        generation = self._filter_generation
        filters = self.model.filters
        self.count_label.setText("counting…")

        def shown(count: object) -> None:
            if self._closed or generation != self._filter_generation or not isinstance(count, int):
                return
            if self.is_quality_lead:
                self.count_label.setText(f"{_count(count)} unit{'' if count == 1 else 's'} match")
            else:
                # The station the service answers for (on a line PC the window may not know the home's name).
                station = self.reader.served_station() or self.station
                self.count_label.setText(f"the last {min(count, TECHNICIAN_ROWS)} units at {station}")

        self._submit(partial(self.reader.count_units, filters, recent=not self.is_quality_lead), shown)

    def _summarise_yield(self) -> None:
        if self.yield_chart is None:
            return
        filters = self.model.filters
        scope = (filters.since, filters.until, filters.batch, filters.order)
        if scope == self._yield_scope:
            return  # the yield ignores serial, result, operator… filters: nothing to recompute
        self._yield_scope = scope
        chart = self.yield_chart
        chart.set_summary(None, "Summarising…")

        def shown(summary: object) -> None:
            if self._closed or scope != self._yield_scope or not isinstance(summary, YieldSummary):
                return
            chart.set_summary(summary, _scope_text(filters))

        self._submit(partial(self.reader.yield_summary, filters), shown)

    # -------------------------------------------------------------------------------------- detail

    def select_row(self, row: int) -> None:
        self.table.selectRow(row)

    @property
    def selected_unit(self) -> Unit | None:
        return self._unit

    def _selection_changed(self, selected: QItemSelection, _deselected: QItemSelection) -> None:
        rows = {index.row() for index in selected.indexes()}
        self._show_unit(self.model.unit_at(min(rows)) if rows else None)

    def _show_unit(self, unit: Unit | None) -> None:
        self._selection_generation += 1
        self._unit = unit
        self._certificate = None
        self._steps = []
        self.steps_tree.clear()
        self.excerpt.clear()
        self.certificate_text.clear()
        self.copy_pem_button.setEnabled(False)
        self.save_pem_button.setEnabled(False)
        if self.revoke_button is not None:
            self.revoke_button.setEnabled(False)
        if unit is None:
            self.unit_summary.setText("Select a unit to see its steps and certificate.")
            self.certificate_status.setText("No unit selected.")
            self.unit_shown.emit(None)
            return
        self.unit_summary.setText(_unit_text(unit) + "\nReading its steps and certificate…")
        self.certificate_status.setText("Reading the certificate record…")
        self.unit_shown.emit(unit)
        generation = self._selection_generation

        def shown(detail: object) -> None:
            if self._closed or generation != self._selection_generation or not isinstance(detail, UnitDetail):
                return
            self._show_detail(detail)

        def failed(error: BaseException) -> None:
            if self._closed or generation != self._selection_generation:
                return
            self.unit_summary.setText(
                _unit_text(unit) + f"\nIts steps and certificate could not be read: {error}"
            )
            self.certificate_status.setText("The certificate record could not be read.")
            self._show_error(f"Could not read unit {unit.id}: {error}")

        self._submit(
            partial(self.reader.unit_detail, unit.id, recent=not self.is_quality_lead), shown, failed
        )

    def _show_detail(self, detail: UnitDetail) -> None:
        """A unit's steps, certificate, work order and identity, as the reader answered them."""
        unit = detail.unit
        self._unit = unit
        self._steps = list(detail.steps)
        self._certificate = detail.certificate
        left_out = (
            f"\n({detail.steps_left_out} older step records are not shown)" if detail.steps_left_out else ""
        )
        self.unit_summary.setText(
            _unit_text(unit, detail.order) + "\n" + identity_text(detail.identity, self._steps) + left_out
        )
        self.steps_tree.clear()
        self._fill_steps(self._steps)
        self._fill_certificate(unit, self._certificate)

    def _fill_steps(self, steps: list[StepRecord]) -> None:
        chosen: QTreeWidgetItem | None = None
        for record in steps:
            item = QTreeWidgetItem(
                [
                    record.step,
                    str(record.attempt),
                    record.outcome,
                    record.started_at.astimezone().strftime("%H:%M:%S"),
                    f"{record.duration_s:.1f} s",
                    record.message,
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, record.excerpt)
            item.setToolTip(5, record.message)
            if record.outcome in (StepOutcome.FAILED, StepOutcome.RETRYING):
                item.setForeground(2, QColor(RED))
            self.steps_tree.addTopLevelItem(item)
            if chosen is None and record.outcome == StepOutcome.FAILED:
                chosen = item
        for column in range(5):
            self.steps_tree.resizeColumnToContents(column)
        # The failed step is what one wants to read first.
        first = chosen or self.steps_tree.topLevelItem(0)
        if first is not None:
            self.steps_tree.setCurrentItem(first)

    def _step_chosen(self, item: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        excerpt = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else ""
        self.excerpt.setPlainText(str(excerpt or "(no output)") if item is not None else "")

    def _fill_certificate(self, unit: Unit, record: CertificateRecord | None) -> None:
        if record is None:
            self.certificate_status.setText(f"No certificate was issued to unit {unit.id}.")
            return
        status = f"Certificate {record.serial_hex}, issued {record.issued_at.astimezone():%Y-%m-%d %H:%M}"
        if record.revoked_at is not None:
            status += (
                f" — REVOKED {record.revoked_at.astimezone():%Y-%m-%d %H:%M} ({record.revocation_reason}, "
                f"by {record.revoked_by})"
            )
        self.certificate_status.setText(status)
        self.certificate_text.setPlainText("Reading the certificate…")
        self.copy_pem_button.setEnabled(True)
        self.save_pem_button.setEnabled(True)
        if self.revoke_button is not None:
            self.revoke_button.setEnabled(record.revoked_at is None)
        generation = self._selection_generation

        def shown(text: object) -> None:
            if not self._closed and generation == self._selection_generation:
                self.certificate_text.setPlainText(str(text))

        def failed(error: BaseException) -> None:
            if not self._closed and generation == self._selection_generation:
                self.certificate_text.setPlainText(f"The certificate could not be shown: {error}")

        # openssl runs as a child process with a deadline: off the GUI thread.
        self._submit(partial(certificate_text, record.pem), shown, failed)

    def copy_pem(self) -> None:
        if self._certificate is not None:
            QGuiApplication.clipboard().setText(self._certificate.pem)
            self.message.setText(f"Certificate {self._certificate.serial_hex} copied as PEM.")

    def save_pem(self, path: Path | None = None) -> bool:
        """Save the selected unit's certificate as PEM into the output folder (asks the name when ``path`` is
        None); never replaces a file, never outside the output folder."""
        record, unit = self._certificate, self._unit
        if record is None or unit is None:
            return False
        try:
            folder, home = self._output_place()
        except StationError as exc:
            self._show_error(f"Nothing was saved: {exc}")
            return False
        if path is None:
            chosen = self._ask_output(
                "Save certificate", folder, free_name(folder, f"{unit.serial}.cert.pem"), "PEM (*.pem)"
            )
            if chosen is None:
                return False
            path = chosen
        try:
            saved = save_output(path, record.pem.encode("ascii"), folder=folder, home=home, suffix=".pem")
        except StationError as exc:
            self._show_error(f"Nothing was saved: {exc}")
            return False
        self.message.setStyleSheet("")
        self.message.setText(f"Saved certificate {record.serial_hex} to {saved}.")
        return True

    def _output_place(self) -> tuple[Path, StationHome]:
        """The output folder (created if missing) and the home it must stay out of."""
        if self.config is None or self.home is None:
            raise StationError(
                "this window has no output folder configured — [output] folder in station.toml"
            )
        return ensure_output_folder(self.config, self.home), self.home

    def _ask_output(self, title: str, folder: Path, proposed: Path, name_filter: str) -> Path | None:
        """A file name in the output folder, from a dialog rooted there (None: cancelled)."""
        dialog = OutputFileDialog(self, title, folder, proposed)
        dialog.setNameFilter(name_filter)
        dialog.selectFile(proposed.name)
        if dialog.exec() != OutputFileDialog.DialogCode.Accepted or not dialog.selectedFiles():
            return None
        return Path(dialog.selectedFiles()[0])

    # ------------------------------------------------------------------------------------- actions

    def export(self, fmt: str, path: Path | None = None) -> bool:
        """Export the units matching the filters (a PDF: the report of their period and batch), off-thread.

        The station service makes the export (and records who asked); the window writes it into the output
        folder, mode 0640, never replacing a file.  Asks the name when ``path`` is None. Returns whether an export
        was started.
        """
        if not self.is_quality_lead:
            self._show_error("Exports are for quality leads.")
            return False
        if fmt not in EXPORT_FILTERS:
            raise ValueError(f"unknown export format {fmt!r}")
        try:
            folder, home = self._output_place()
        except StationError as exc:
            self._show_error(f"Nothing was exported: {exc}")
            return False
        if path is None:
            chosen = self._ask_output(
                "Export audit log", folder, free_name(folder, f"units.{fmt}"), EXPORT_FILTERS[fmt]
            )
            if chosen is None:
                return False
            path = chosen
        try:
            # Checked before the service is asked: a path the window may not write costs no export.
            check_output_path(path, folder=folder, home=home, suffix=f".{fmt}")
        except StationError as exc:
            self._show_error(f"Nothing was exported: {exc}")
            return False
        filters, reader, station = self.model.filters, self.reader, self.station
        destination = path
        self._set_busy(True)
        self.message.setStyleSheet("")
        self.message.setText(f"Exporting to {destination}…")

        def work() -> tuple[Path, ExportedFile]:
            made = reader.export(fmt, filters, station=station)
            return save_output(destination, made.data, folder=folder, home=home, suffix=f".{fmt}"), made

        def done(result: object) -> None:
            if self._closed:
                return
            self._set_busy(False)
            if isinstance(result, tuple):
                saved, made = result
                pages = f", {made.pages} pages" if made.pages else ""
                text = f"Exported {_count(made.units)} units to {saved}{pages}."
                self.message.setStyleSheet("")
                self.message.setText(text)
                self.job_finished.emit(text)

        def failed(error: BaseException) -> None:
            if not self._closed:
                self._set_busy(False)
                self._show_error(f"The export to {destination} failed: {error}")

        self._submit(work, done, failed)
        return True

    def revoke_selected(self, reason: str | None = None) -> bool:
        """Revoke the certificate of the selected unit's board (asks why when ``reason`` is None), off-thread."""
        if not self.is_quality_lead:
            self._show_error("Only a quality lead can revoke a certificate.")
            return False
        unit, record = self._unit, self._certificate
        if unit is None or record is None or record.revoked_at is not None:
            return False
        if reason is None:
            typed, accepted = QInputDialog.getText(
                self,
                "Revoke certificate",
                f"Why is the certificate {record.serial_hex} of board {unit.serial} revoked?\n"
                "An RFC 5280 reason name (keyCompromise, cessationOfOperation, …) also goes into the CRL.",
            )
            if not accepted:
                return False
            reason = typed
        reason = reason.strip()
        if not reason:
            self._show_error("Nothing was revoked: a revocation needs a reason.")
            return False
        if self.revoke_button is not None:
            self.revoke_button.setEnabled(False)
        serial, unit_id = unit.serial, unit.id

        reader, user = self.reader, self.user

        def work() -> tuple[Revoked, UnitDetail | BaseException]:
            revoked = reader.revoke(serial=serial, reason=reason, by=user)
            try:
                return revoked, reader.unit_detail(unit_id)
            except StationError as exc:
                return revoked, exc

        def done(result: object) -> None:
            if self._closed or not isinstance(result, tuple):
                return
            revoked, fresh = result
            text = (
                f"Revoked certificate {revoked.serial_hex} of board {serial}. Servers and devices learn of it from "
                f"the next CRL: publish it with  station ca crl --out FILE"
            )
            self.message.setStyleSheet("")
            self.message.setText(text)
            self.job_finished.emit(text)
            if not isinstance(fresh, UnitDetail):
                self._show_error(f"Revoked, but unit {unit_id} could not be read again: {fresh}")
                return
            self.model.replace_unit(fresh.unit)
            if self._unit is not None and self._unit.id == unit_id:
                self._selection_generation += 1
                self._show_detail(fresh)

        def failed(error: BaseException) -> None:
            if not self._closed:
                self._show_error(f"Nothing was revoked: {error}")
                if self.revoke_button is not None and self._unit is not None and self._unit.id == unit_id:
                    self.revoke_button.setEnabled(True)

        self._submit(work, done, failed)
        return True

    # ----------------------------------------------------------------------------------- plumbing

    def _submit(
        self,
        work: Callable[[], object],
        on_done: Callable[[object], None],
        on_failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        def reported(error: BaseException) -> None:  # a count or a summary: a read of the log
            if not self._closed:
                self._show_error(f"Could not read the audit log: {error}")

        def done(value: object) -> None:
            self._in_flight -= 1
            on_done(value)

        def failed(error: BaseException) -> None:
            self._in_flight -= 1
            (on_failed or reported)(error)

        # Counted until the callback has run on the GUI thread, not just until the worker returned.
        if self.pool.submit(work, done, failed):
            self._in_flight += 1

    def _set_busy(self, busy: bool) -> None:
        for button in self.export_buttons.values():
            button.setEnabled(not busy)

    def _show_error(self, text: str) -> None:
        self.message.setStyleSheet(f"color: {RED};")
        self.message.setText(text)

    def busy(self) -> bool:
        """Whether a background job (count, summary, export, revocation…) has not reported back yet."""
        return self._in_flight > 0 or self.model.loading

    def shutdown(self, timeout_ms: int = SHUTDOWN_TIMEOUT_MS) -> bool:
        """Stop taking jobs and wait (bounded) for running ones, then close the reader; True if none is left.
        Called on close (reads end within their deadline; an export left running finishes alone)."""
        if self._closed:
            return True
        self._closed = True
        # Reads waiting on the service end at once (a slow service never holds the window up as it closes); an
        # export or a revocation under way is waited for, bounded.
        self.reader.close()
        pages = self.page_pool.shutdown(min(timeout_ms, 2000))
        return self.pool.shutdown(timeout_ms) and pages

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)


class YieldChart(QWidget):
    """The yield of the filters' period and batch: key figures, failed attempts by step, key-generation times.

    One chart for both scopes of the audit view: the local log's summary, or the fleet's (the same YieldSummary
    from station.fleet.queries) with ``groups`` — the pass rate of each line and station — drawn above the rest.
    """

    # Pass-rate bars shown at most; the rest are named in one line (the groups list beside the chart has them all).
    MAX_GROUPS = 8

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary: YieldSummary | None = None
        self.groups: tuple[GroupYield, ...] = ()
        self.note = "Summarising…"
        self.setMinimumSize(360, 320)

    def set_summary(self, summary: YieldSummary | None, note: str, groups: Sequence[GroupYield] = ()) -> None:
        self.summary, self.note, self.groups = summary, note, tuple(groups)
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(460, 420)

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.fillRect(self.rect(), self.palette().base())
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        width = float(self.width())
        metrics = painter.fontMetrics()
        line = metrics.height() + 4
        y = 8.0 + metrics.ascent()
        painter.setPen(QColor(GREY))
        painter.drawText(QPointF(10, y), self.note)
        summary = self.summary
        if summary is None:
            return
        painter.setPen(self.palette().text().color())
        y += line
        rates = (
            f"{_count(summary.units)} units · {_count(summary.finished)} finished · pass rate "
            f"{_percent(summary.pass_rate)} · first-pass yield {_percent(summary.first_pass_yield)}"
        )
        painter.drawText(QPointF(10, y), rates)
        if self.groups:
            y = self._paint_groups(painter, y + line * 1.5, width)

        y += line * 1.5
        painter.drawText(QPointF(10, y), "Failed attempts by step")
        y += 6
        failures = summary.failures_by_step[:10]
        label_width = 90.0
        most = max((count for _, count in failures), default=0)
        bar_space = max(40.0, width - label_width - 80)
        if not failures:
            y += line
            painter.setPen(QColor(GREY))
            painter.drawText(QPointF(10, y), "No attempt failed.")
            painter.setPen(self.palette().text().color())
        for step, count in failures:
            bar = bar_space * count / most
            painter.drawText(QPointF(10, y + metrics.ascent()), step)
            painter.fillRect(
                QRectF(10 + label_width, y + 2, max(1.0, bar), metrics.height() - 4), QColor(RED)
            )
            painter.drawText(QPointF(16 + label_width + bar, y + metrics.ascent()), _count(count))
            y += line

        y += line
        keygen = summary.keygen
        title = "Key generation time"
        if keygen.count:
            title += f" — median {keygen.quantile(0.5):.1f} s, p90 {keygen.quantile(0.9):.1f} s, n = {keygen.count}"
        painter.drawText(QPointF(10, y), title)
        bins = keygen.histogram
        top = max((b.count for b in bins), default=0)
        plot_height = max(40.0, float(self.height()) - y - 2 * line - 16)
        if not bins or not top:
            return
        base = y + line + plot_height
        step_width = (width - 20) / len(bins)
        painter.setPen(QPen(QColor(GREY), 1))
        painter.drawLine(QPointF(10, base), QPointF(width - 10, base))
        for index, each in enumerate(bins):
            height = plot_height * each.count / top
            painter.fillRect(
                QRectF(10 + index * step_width + 1, base - height, max(1.0, step_width - 2), height),
                QColor("#1f5fae"),
            )
        median = keygen.quantile(0.5)
        if median is not None:
            x = 10 + (width - 20) * (median - bins[0].low) / (bins[-1].high - bins[0].low)
            painter.setPen(QPen(self.palette().text().color(), 1, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(x, base - plot_height - 4), QPointF(x, base))
        painter.setPen(QColor(GREY))
        painter.drawText(QPointF(10, base + line - 2), f"{bins[0].low:g} s")
        right = f"{bins[-1].high:g} s"
        painter.drawText(QPointF(width - 10 - metrics.horizontalAdvance(right), base + line - 2), right)

    def _paint_groups(self, painter: QPainter, y: float, width: float) -> float:
        """Pass rate by line and station, one bar each; returns where the next section starts."""
        metrics = painter.fontMetrics()
        line = metrics.height() + 4
        painter.drawText(QPointF(10, y), "Pass rate by line and station")
        y += 6
        label_width = 150.0
        bar_space = max(40.0, width - label_width - 130)
        for group in self.groups[: self.MAX_GROUPS]:
            rate = group.pass_rate
            painter.drawText(QPointF(10, y + metrics.ascent()), f"{group.line or '—'} / {group.station}")
            painter.fillRect(
                QRectF(10 + label_width, y + 2, bar_space, metrics.height() - 4), QColor("#e3e3e3")
            )
            if rate is not None:
                painter.fillRect(
                    QRectF(10 + label_width, y + 2, max(1.0, bar_space * rate), metrics.height() - 4),
                    QColor(GREEN if rate >= 0.95 else AMBER if rate >= 0.8 else RED),
                )
            painter.drawText(
                QPointF(16 + label_width + bar_space, y + metrics.ascent()),
                f"{_percent(rate)} of {_count(group.units)}",
            )
            y += line
        hidden = len(self.groups) - self.MAX_GROUPS
        if hidden > 0:
            painter.setPen(QColor(GREY))
            painter.drawText(QPointF(10, y + metrics.ascent()), f"… and {hidden} more stations")
            painter.setPen(self.palette().text().color())
            y += line
        return y


# ------------------------------------------------------------------------------------------------ text


def _unit_text(unit: Unit, order: str | None = None) -> str:
    local = unit.started_at.astimezone()
    lines = [
        f"Unit {unit.id} — board {unit.serial} — {unit.state.upper()} (attempt {unit.attempt})",
        f"Started {local:%Y-%m-%d %H:%M:%S}"
        + (
            f", ended {unit.ended_at.astimezone():%H:%M:%S} ({unit.duration_s:.1f} s)"
            if unit.ended_at
            else ""
        ),
        f"Operator {unit.operator} at {unit.station}, fixture {unit.fixture or '—'}, batch {unit.batch or '—'}",
        f"Profile {unit.profile}, device {unit.device}, work order {order or '—'}",
        "Host key: "
        + (
            f"{unit.host_key_type} {unit.host_key_fingerprint}"
            if unit.host_key_fingerprint
            else "not recorded"
        ),
    ]
    if unit.failed_step:
        lines.append(f"Failed at {unit.failed_step}: {unit.message or ''}".rstrip(": "))
    elif unit.message:
        lines.append(unit.message)
    if unit.reprovision_reason:
        lines.append(f"Re-provisioned: {unit.reprovision_reason}")
    if unit.superseded_by is not None:
        lines.append(f"Superseded by unit {unit.superseded_by}")
    return "\n".join(lines)


def identity_text(identity: IdentityRecord | None, steps: list[StepRecord]) -> str:
    """The board's SoC id and the trust summary: what the station verified, what the board reported."""
    passed = [step.step for step in steps if step.outcome == StepOutcome.PASSED]
    in_inventory = any(
        step.step == "identify" and f"{Basis.VERIFIED}: host key" in step.excerpt for step in steps
    )
    lines = [
        f"SoC unique id: {identity.soc_id} ({Basis.REPORTED}, read from {identity.source})"
        if identity
        else "SoC unique id: not recorded"
    ]
    attested = any(
        step.step == "check_csr" and f"{Basis.VERIFIED}: the token key is attested" in step.excerpt
        for step in steps
    )
    claims = trust_summary(
        passed,
        host_key_in_inventory=in_inventory,
        soc_id=identity.soc_id if identity else None,
        attested=attested,
    )
    lines += [f"  {line}" for line in render_claims(claims).splitlines()]
    return "\n".join(lines)


def _scope_text(filters: UnitFilter) -> str:
    parts = [f"batch {filters.batch}"] if filters.batch else []
    if filters.order:
        parts.append(f"work order {filters.order}")
    if filters.since is not None:
        parts.append(f"from {filters.since.astimezone():%Y-%m-%d}")
    if filters.until is not None:
        parts.append(f"before {filters.until.astimezone():%Y-%m-%d}")
    return "Yield of " + (", ".join(parts) if parts else "every unit in the log")


def _count(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def _day(edit: QDateEdit) -> date:
    qdate = edit.date()
    return date(qdate.year(), qdate.month(), qdate.day())


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time()).astimezone()


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "quality lead"
