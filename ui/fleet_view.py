"""The fleet in the window: a status-bar indicator (connection, backlog, age of the oldest unsent event) and the
quality lead's "whole fleet" scope of the audit view — units of every station paged lazily as one scrolls, lines
and stations to group and filter by, the same yield and key-generation chart as the local scope (one YieldChart
for both), the conflicts, and one board's attempts across the fleet (traceability).

Every query runs on a pool thread (TaskPool) with the fleet connection's deadlines; the indicator reads the
forwarder's cached status only (no I/O on the GUI thread).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QDate, QModelIndex, Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from station.fleet.forwarder import Forwarder, format_age
from station.fleet.quality import QualityLogin
from station.fleet.queries import FleetFilter
from station.states import StepOutcome
from ui.audit_view import EXPORT_FILTERS, YieldChart, _count, _day, _local_midnight, _percent
from ui.bridge import TaskPool
from ui.fleet_model import PAGE_ROWS, FleetSource, FleetUnitsModel, open_fleet
from ui.style import GREEN, GREY, RED

STATUS_INTERVAL_MS = 1000
# A fleet-wide export streams every matching unit: minutes, not the 5 s of a page.
EXPORT_TIMEOUT_S = 600.0
RESULTS = ("any result", "passed", "failed", "running", "aborted", "superseded")


class FleetIndicator(QLabel):
    """ "fleet online · 0 to send" in the status bar; red when offline with the age of what waits."""

    def __init__(self, forwarder: Forwarder, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.forwarder = forwarder
        self.setObjectName("fleetIndicator")
        self._timer = QTimer(self)
        self._timer.setInterval(STATUS_INTERVAL_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.refresh()

    def refresh(self) -> None:
        status = self.forwarder.status()
        age = status.oldest_age_s()
        waiting = f"{status.backlog} to send" + (
            f", oldest {format_age(age)}" if age is not None and status.backlog else ""
        )
        word = {
            "online": "Fleet online",
            "offline": "Fleet OFFLINE",
            "diverged": "Fleet: LOCAL LOG DIFFERS",
            "starting": "Fleet: connecting",
        }.get(status.state, status.state)
        self.setText(f"{word} · {waiting}")
        color = {"online": GREEN, "starting": GREY}.get(status.state, RED)
        self.setStyleSheet(f"color: {color}; font-weight: bold; padding: 0 8px;")
        self.setToolTip(
            status.message or f"{status.forwarded_seq} of {status.newest_seq} events in the fleet"
        )


class FleetView(QWidget):
    """The whole fleet for quality leads: lines and stations (each a filter), the units paged lazily, the same
    yield and key-generation charts as the local scope, the conflicts, and one board traced across the fleet."""

    def __init__(
        self, fleet: FleetSource, parent: QWidget | None = None, *, page_rows: int = PAGE_ROWS
    ) -> None:
        super().__init__(parent)
        self.fleet = fleet
        # Summaries and traces on one thread, pages on another, exports on a third: a slow fleet-wide yield never
        # holds up scrolling, nor a long export the rest.
        self.pool = TaskPool(self, max_threads=1)
        self.page_pool = TaskPool(self, max_threads=1)
        self.export_pool = TaskPool(self, max_threads=1)
        self._generation = 0
        self._total: int | None = None
        self._conflict_count = 0
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_filter_bar())
        row = QHBoxLayout()
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        row.addWidget(self.message, 1)
        # The same exports as the local scope's, of the fleet's units matching the filters.
        self.export_buttons: dict[str, QPushButton] = {}
        for fmt, title in (("csv", "Export CSV…"), ("jsonl", "Export JSONL…"), ("pdf", "PDF report…")):
            button = QPushButton(title, self)
            button.clicked.connect(partial(self.export, fmt))
            row.addWidget(button)
            self.export_buttons[fmt] = button
        layout.addLayout(row)

        splitter = QSplitter(self)
        self.groups = QTreeWidget(self)
        self.groups.setHeaderLabels(["Line / station", "Units", "Pass rate"])
        for column, width in enumerate((130, 55)):
            self.groups.setColumnWidth(column, width)
        self.groups.setToolTip(
            "Click a line or a station to see only its units; click All stations for the fleet."
        )
        self.groups.itemClicked.connect(self._group_clicked)
        self.tabs = QTabWidget(self)
        self.model = FleetUnitsModel(fleet, self.page_pool, page_rows=page_rows, parent=self)
        self.model.page_loaded.connect(lambda _rows: self._show_count())
        self.model.failed.connect(self._failed)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        rows = self.table.verticalHeader()
        rows.setVisible(False)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        self.table.horizontalHeader().setStretchLastSection(True)
        for column, width in enumerate((60, 110, 150, 80, 90, 90, 150, 60)):
            self.table.setColumnWidth(column, width)
        self.table.setToolTip("Double-click a unit to trace its board across the fleet.")
        self.table.doubleClicked.connect(self._trace_row)
        self.yield_chart = YieldChart(self)
        self.conflicts = QTreeWidget(self)
        self.conflicts.setHeaderLabels(["Conflict", "Detail"])
        self.conflicts.setColumnWidth(0, 90)
        self.units = QTreeWidget(
            self
        )  # the trace: one board's attempts on every station, each with its events
        self.units.setHeaderLabels(
            ["Station / step / event", "Result", "Failed step / time", "Operator", "Started", "Unit"]
        )
        for column, width in enumerate((240, 80, 130, 90, 150, 50)):
            self.units.setColumnWidth(column, width)
        self.tabs.addTab(self.table, "Units")
        self.tabs.addTab(self.yield_chart, "Yield")
        self.tabs.addTab(self.conflicts, "Conflicts")
        self.tabs.addTab(self.units, "Trace")
        splitter.addWidget(self.groups)
        splitter.addWidget(self.tabs)
        splitter.setSizes([300, 940])
        layout.addWidget(splitter, 1)
        self.refresh()

    def _build_filter_bar(self) -> QGridLayout:
        bar = QGridLayout()
        self.station_filter = QLineEdit(self)
        self.station_filter.setPlaceholderText("any station")
        self.line_filter = QLineEdit(self)
        self.line_filter.setPlaceholderText("any line")
        self.serial_filter = QLineEdit(self)
        self.serial_filter.setPlaceholderText("serial prefix")
        self.result_filter = QComboBox(self)
        self.result_filter.addItems(RESULTS)
        today = QDate.currentDate()
        self.since_check = QCheckBox("From", self)
        self.since_edit = QDateEdit(today.addDays(-7), self)
        self.until_check = QCheckBox("To", self)
        self.until_edit = QDateEdit(today, self)
        for check, edit in ((self.since_check, self.since_edit), (self.until_check, self.until_edit)):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
            edit.setEnabled(False)
            check.toggled.connect(edit.setEnabled)
            check.toggled.connect(lambda _on: self.refresh())
            edit.dateChanged.connect(lambda _day: self.refresh())
        self.apply_button = QPushButton("Apply", self)
        self.trace_button = QPushButton("Trace serial", self)
        fields: tuple[tuple[QWidget, QWidget], ...] = (
            (QLabel("Station", self), self.station_filter),
            (QLabel("Line", self), self.line_filter),
            (QLabel("Serial", self), self.serial_filter),
            (QLabel("Result", self), self.result_filter),
            (self.since_check, self.since_edit),
            (self.until_check, self.until_edit),
        )
        for column, (label, widget) in enumerate(fields):
            bar.addWidget(label, 0, column)
            bar.addWidget(widget, 1, column)
        bar.addWidget(self.apply_button, 1, len(fields))
        bar.addWidget(self.trace_button, 1, len(fields) + 1)
        for edit in (self.station_filter, self.line_filter, self.serial_filter):
            edit.returnPressed.connect(self.refresh)
        self.result_filter.currentIndexChanged.connect(lambda _index: self.refresh())
        self.apply_button.clicked.connect(self.refresh)
        self.trace_button.clicked.connect(self.trace)
        return bar

    def _filters(self) -> FleetFilter:
        result = self.result_filter.currentText()
        since = until = None
        if self.since_check.isChecked():
            since = _local_midnight(_day(self.since_edit))
        if self.until_check.isChecked():
            until = _local_midnight(_day(self.until_edit) + timedelta(days=1))  # the day is inclusive
        return FleetFilter(
            station=self.station_filter.text().strip() or None,
            line=self.line_filter.text().strip() or None,
            serial_prefix=self.serial_filter.text().strip() or None,
            result=None if result == RESULTS[0] else result,
            since=since,
            until=until,
        )

    def refresh(self) -> None:
        """Ask the fleet again: the first page of units, their count, the yield, the groups and the conflicts."""
        filters = self._filters()
        self._generation += 1
        generation = self._generation
        self._total = None
        self.message.setStyleSheet("")
        login = self.fleet
        self.message.setText(
            f"Asking the fleet as {login.role} (your own login)…"
            if isinstance(login, QualityLogin)
            else "Asking the fleet…"
        )
        self.yield_chart.set_summary(None, "Summarising…")
        self.model.set_filters(filters)
        fleet = self.fleet
        # The yield is of the period, line and station chosen (as the local scope's is of its period and batch);
        # the groups list every line and station of the period, so that one can switch between them.
        scope = replace(filters, serial_prefix=None, result=None)
        everywhere = replace(scope, station=None, line=None)

        def work() -> object:
            from station.fleet.queries import conflicts, count_units, yield_by_station, yield_summary

            with open_fleet(fleet) as conn:
                return (
                    count_units(conn, filters),
                    yield_summary(conn, scope),
                    yield_by_station(conn, everywhere),
                    conflicts(conn),
                )

        def done(value: Any) -> None:
            if generation != self._generation:
                return
            total, summary, groups, found = value
            self._total = total
            self._conflict_count = len(found)
            shown = [
                g
                for g in groups
                if (scope.station is None or g.station == scope.station)
                and (scope.line is None or g.line == scope.line)
            ]
            self.yield_chart.set_summary(summary, _scope_text(scope), shown)
            self._show_groups(groups)
            self._show_conflicts(found)
            self._show_count()

        self.pool.submit(work, done, self._failed)

    def _show_count(self) -> None:
        loaded = self.model.rowCount()
        if self._total is None:
            self.message.setText(f"{_count(loaded)} units loaded; counting…")
            return
        # Rows on their way are "loading", not "scroll down for more" (the count can come back first).
        more = (
            "; loading…"
            if self.model.loading
            else "; scroll down for more"
            if not self.model.exhausted
            else ""
        )
        self.message.setStyleSheet("")
        self.message.setText(
            f"{_count(loaded)} of {_count(self._total)} units across the fleet loaded "
            f"({'by serial' if self.model.filters.serial_prefix else 'newest first'}){more}; "
            f"{self._conflict_count} conflict(s) and flag(s)"
        )

    def _show_groups(self, groups: list[Any]) -> None:
        self.groups.clear()
        units = sum(g.units for g in groups)
        finished = units - sum(g.running for g in groups)
        everything = QTreeWidgetItem(
            [
                "All stations",
                _count(units),
                _percent(sum(g.passed for g in groups) / finished if finished else None),
            ]
        )
        everything.setData(0, Qt.ItemDataRole.UserRole, (None, None))
        self.groups.addTopLevelItem(everything)
        lines: dict[str, list[Any]] = {}
        for group in groups:
            lines.setdefault(group.line, []).append(group)
        for line, members in lines.items():
            units = sum(g.units for g in members)
            finished = units - sum(g.running for g in members)
            item = QTreeWidgetItem(
                [
                    f"line {line or '—'}",
                    _count(units),
                    _percent(sum(g.passed for g in members) / finished if finished else None),
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, (line, None))
            for group in members:
                child = QTreeWidgetItem([group.station, _count(group.units), _percent(group.pass_rate)])
                child.setData(0, Qt.ItemDataRole.UserRole, (None, group.station))
                item.addChild(child)
            self.groups.addTopLevelItem(item)
            item.setExpanded(True)

    def _group_clicked(self, item: QTreeWidgetItem, _column: int) -> None:
        line, station = item.data(0, Qt.ItemDataRole.UserRole)
        self.line_filter.setText(line or "")
        self.station_filter.setText(station or "")
        self.refresh()

    def _trace_row(self, index: QModelIndex) -> None:
        unit = self.model.unit_at(index.row())
        if unit is not None:
            self.serial_filter.setText(unit["serial"])
            self.trace()

    def trace(self) -> None:
        """Every attempt on every station for the serial in the Serial field, with its events (the Trace tab)."""
        serial = self.serial_filter.text().strip()
        if not serial:
            self._failed(ValueError("Type the board's serial in the Serial field, then press Trace serial."))
            return
        fleet = self.fleet

        def work() -> object:
            from station.fleet.queries import traceability

            with open_fleet(fleet) as conn:
                return traceability(conn, serial)

        def done(attempts: Any) -> None:
            self.units.clear()
            for unit in attempts:
                item = QTreeWidgetItem(
                    [
                        f"{unit['station']} (line {unit['line'] or '—'})",
                        unit["state"],
                        unit["failed_step"] or "",
                        unit["operator"] or "",
                        _when(unit["started_at"]),
                        str(unit["unit_id"]),
                    ]
                )
                if unit["certificate_serial"]:
                    revoked = " (revoked)" if unit["revoked_at"] else ""
                    item.setToolTip(0, f"certificate {unit['certificate_serial']}{revoked}")
                for step in unit["steps"]:
                    seconds = step["duration_s"]
                    child = QTreeWidgetItem(
                        [
                            f"{step['step']} (try {step['attempt']})",
                            step["outcome"],
                            "" if seconds is None else f"{seconds:.1f} s",
                            "",
                            _when(step["started_at"]),
                            "",
                        ]
                    )
                    if step["outcome"] == StepOutcome.FAILED:
                        child.setForeground(1, QColor(RED))
                    item.addChild(child)
                events = QTreeWidgetItem([f"{len(unit['events'])} events in the journal"])
                for event in unit["events"]:
                    events.addChild(
                        QTreeWidgetItem(
                            [
                                f"event {event['seq']}",
                                event["kind"],
                                "",
                                "",
                                _when(datetime.fromisoformat(event["at"])),
                                "",
                            ]
                        )
                    )
                item.addChild(events)
                self.units.addTopLevelItem(item)
                item.setExpanded(True)
            self.tabs.setCurrentWidget(self.units)
            self.message.setStyleSheet("")
            self.message.setText(
                f"board {serial}: {len(attempts)} attempt(s) on "
                f"{len({u['station'] for u in attempts})} station(s)"
            )

        self.pool.submit(work, done, self._failed)

    def export(self, fmt: str, path: Path | None = None) -> bool:
        """Export the fleet's units matching the filters (a PDF: the fleet report), off the GUI thread; asks where
        when ``path`` is None. Returns whether an export was started."""
        if fmt not in EXPORT_FILTERS:
            raise ValueError(f"unknown export format {fmt!r}")
        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(
                self, "Export the fleet", f"fleet-units.{fmt}", EXPORT_FILTERS[fmt]
            )
            if not chosen:
                return False
            path = Path(chosen)
        filters, fleet, destination = self._filters(), self.fleet, path

        def work() -> object:
            from station.fleet.report import export_fleet_to_file

            with open_fleet(fleet, statement_timeout_s=EXPORT_TIMEOUT_S) as conn:
                return export_fleet_to_file(conn, destination, fmt=fmt, filters=filters)

        def done(result: Any) -> None:
            self._set_exporting(False)
            pages = f", {result.pages} pages" if result.pages else ""
            self.message.setStyleSheet("")
            self.message.setText(f"Exported {_count(result.units)} fleet units to {result.path}{pages}.")

        def failed(error: BaseException) -> None:
            self._set_exporting(False)
            self._failed(
                f"The export to {destination} failed: {error} — nothing was written there; try again "
                f"when the fleet answers, or pick a folder you can write to."
            )

        if not self.export_pool.submit(work, done, failed):
            return False
        self._set_exporting(True)
        self.message.setText(f"Exporting the fleet's units to {destination}…")
        return True

    def _set_exporting(self, busy: bool) -> None:
        for button in self.export_buttons.values():
            button.setEnabled(not busy)

    def _show_conflicts(self, found: list[Any]) -> None:
        self.conflicts.clear()
        for conflict in found:
            item = QTreeWidgetItem([conflict.kind, conflict.detail])
            item.setToolTip(1, conflict.detail)  # the whole sentence: it names stations, lines and times
            self.conflicts.addTopLevelItem(item)
        self.tabs.setTabText(self.tabs.indexOf(self.conflicts), f"Conflicts ({len(found)})")

    def _failed(self, error: BaseException | str) -> None:
        self.message.setStyleSheet(f"color: {RED};")
        self.message.setText(str(error))

    def shutdown(self, timeout_ms: int = 3000) -> bool:
        pages = self.page_pool.shutdown(timeout_ms)
        exports = self.export_pool.shutdown(timeout_ms)
        return self.pool.shutdown(timeout_ms) and pages and exports


class ScopedAuditView(QWidget):
    """The audit view with a scope switch: "This station" (the local log) or "Whole fleet"."""

    def __init__(self, local: QWidget, fleet: FleetSource, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.local = local
        self.fleet_config = fleet
        self.fleet_view: FleetView | None = None
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Scope:", self))
        self.scope = QComboBox(self)
        self.scope.addItems(["This station", "Whole fleet"])
        row.addWidget(self.scope)
        row.addStretch(1)
        layout.addLayout(row)
        self.pages = QStackedWidget(self)
        self.pages.addWidget(local)
        layout.addWidget(self.pages, 1)
        self.scope.currentIndexChanged.connect(self._scope_changed)

    def _scope_changed(self, index: int) -> None:
        if index == 1 and self.fleet_view is None:
            self.fleet_view = FleetView(self.fleet_config, self)
            self.pages.addWidget(self.fleet_view)
        self.pages.setCurrentIndex(index)

    def shutdown(self) -> None:
        if self.fleet_view is not None:
            self.fleet_view.shutdown()


def _when(moment: Any) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _scope_text(filters: FleetFilter) -> str:
    parts = [f"line {filters.line}"] if filters.line else []
    if filters.station:
        parts.append(f"station {filters.station}")
    if filters.since is not None:
        parts.append(f"from {filters.since.astimezone():%Y-%m-%d}")
    if filters.until is not None:
        parts.append(f"before {filters.until.astimezone():%Y-%m-%d}")
    return "Fleet yield of " + (", ".join(parts) if parts else "every station")
