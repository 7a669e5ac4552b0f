"""The fleet in the window: a status-bar indicator (connection, backlog, age of the oldest unsent event) and the
quality lead's "whole fleet" scope of the audit view — units of every station, grouped and filtered by station
and line, the conflicts, and one board's attempts across the fleet (traceability).

Every query runs on a pool thread (TaskPool) with the fleet connection's deadlines; the indicator reads the
forwarder's cached status only (no I/O on the GUI thread).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from station.config import FleetConfig
from station.fleet.forwarder import Forwarder, format_age
from ui.bridge import TaskPool
from ui.style import GREEN, GREY, RED

STATUS_INTERVAL_MS = 1000
PAGE_ROWS = 500
RESULTS = ("any result", "passed", "failed", "running", "aborted", "superseded")


class FleetIndicator(QLabel):
    """"fleet online · 0 to send" in the status bar; red when offline with the age of what waits."""

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
        waiting = f"{status.backlog} to send" + (f", oldest {format_age(age)}" if age is not None and status.backlog
                                                   else "")
        word = {"online": "Fleet online", "offline": "Fleet OFFLINE", "diverged": "Fleet: LOCAL LOG DIFFERS",
                "starting": "Fleet: connecting"}.get(status.state, status.state)
        self.setText(f"{word} · {waiting}")
        color = {"online": GREEN, "starting": GREY}.get(status.state, RED)
        self.setStyleSheet(f"color: {color}; font-weight: bold; padding: 0 8px;")
        self.setToolTip(status.message or f"{status.forwarded_seq} of {status.newest_seq} events in the fleet")


class FleetView(QWidget):
    """The whole fleet for quality leads: units grouped by line and station, filters, conflicts, trace."""

    def __init__(self, fleet: FleetConfig, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fleet = fleet
        self.pool = TaskPool(self, max_threads=1)
        self._generation = 0
        layout = QVBoxLayout(self)
        bar = QGridLayout()
        self.station_filter = QLineEdit(self)
        self.station_filter.setPlaceholderText("any station")
        self.line_filter = QLineEdit(self)
        self.line_filter.setPlaceholderText("any line")
        self.serial_filter = QLineEdit(self)
        self.serial_filter.setPlaceholderText("serial prefix")
        self.result_filter = QComboBox(self)
        self.result_filter.addItems(RESULTS)
        self.apply_button = QPushButton("Apply", self)
        self.trace_button = QPushButton("Trace serial", self)
        for column, (label, widget) in enumerate((("Station", self.station_filter), ("Line", self.line_filter),
                                                  ("Serial", self.serial_filter), ("Result", self.result_filter))):
            bar.addWidget(QLabel(label, self), 0, column)
            bar.addWidget(widget, 1, column)
        bar.addWidget(self.apply_button, 1, 4)
        bar.addWidget(self.trace_button, 1, 5)
        layout.addLayout(bar)
        self.message = QLabel(self)
        layout.addWidget(self.message)
        splitter = QSplitter(self)
        self.units = QTreeWidget(self)
        self.units.setHeaderLabels(["Line / station / serial", "Result", "Failed step", "Operator", "Started", "Unit"])
        for column, width in enumerate((240, 80, 90, 90, 150, 50)):
            self.units.setColumnWidth(column, width)
        self.conflicts = QTreeWidget(self)
        self.conflicts.setHeaderLabels(["Conflict", "Detail"])
        self.conflicts.setColumnWidth(0, 90)
        splitter.addWidget(self.units)
        splitter.addWidget(self.conflicts)
        splitter.setSizes([720, 520])
        layout.addWidget(splitter, 1)
        for edit in (self.station_filter, self.line_filter, self.serial_filter):
            edit.returnPressed.connect(self.refresh)
        self.result_filter.currentIndexChanged.connect(lambda _index: self.refresh())
        self.apply_button.clicked.connect(self.refresh)
        self.trace_button.clicked.connect(self.trace)
        self.refresh()

    def _filters(self) -> Any:
        from station.fleet.queries import FleetFilter

        result = self.result_filter.currentText()
        return FleetFilter(station=self.station_filter.text().strip() or None,
                           line=self.line_filter.text().strip() or None,
                           serial_prefix=self.serial_filter.text().strip() or None,
                           result=None if result == RESULTS[0] else result)

    def refresh(self) -> None:
        filters = self._filters()
        self._generation += 1
        generation = self._generation
        self.message.setText("Asking the fleet…")
        fleet = self.fleet

        def work() -> object:
            from station.fleet.connection import connect
            from station.fleet.queries import conflicts, count_units, units_page

            with connect(fleet.dsn, passfile=fleet.passfile) as conn:
                return units_page(conn, filters, limit=PAGE_ROWS), count_units(conn, filters), conflicts(conn)

        def done(value: Any) -> None:
            if generation != self._generation:
                return
            rows, total, found = value
            self._show_units(rows)
            self._show_conflicts(found)
            self.message.setStyleSheet("")
            self.message.setText(f"{min(total, len(rows))} of {total} units across the fleet (newest first); "
                                 f"{len(found)} conflict(s) and flag(s)")

        self.pool.submit(work, done, self._failed)

    def trace(self) -> None:
        serial = self.serial_filter.text().strip()
        if not serial:
            self._failed(ValueError("Type the board's serial in the Serial field, then press Trace serial."))
            return
        fleet = self.fleet

        def work() -> object:
            from station.fleet.connection import connect
            from station.fleet.queries import traceability

            with connect(fleet.dsn, passfile=fleet.passfile) as conn:
                return traceability(conn, serial)

        def done(attempts: Any) -> None:
            self.units.clear()
            for unit in attempts:
                item = QTreeWidgetItem([f"{unit['station']} (line {unit['line'] or '—'})", unit["state"],
                                        unit["failed_step"] or "", unit["operator"] or "", _when(unit["started_at"]),
                                        str(unit["unit_id"])])
                for event in unit["events"]:
                    item.addChild(QTreeWidgetItem([f"event {event['seq']}", event["kind"], "", "", event["at"], ""]))
                self.units.addTopLevelItem(item)
                item.setExpanded(True)
            self.message.setText(f"board {serial}: {len(attempts)} attempt(s) on "
                                 f"{len({u['station'] for u in attempts})} station(s)")

        self.pool.submit(work, done, self._failed)

    def _show_units(self, rows: list[dict[str, Any]]) -> None:
        self.units.clear()
        groups: dict[tuple[str, str], QTreeWidgetItem] = {}
        lines: dict[str, QTreeWidgetItem] = {}
        for unit in rows:
            line = unit["line"] or "—"
            if line not in lines:
                lines[line] = QTreeWidgetItem([f"line {line}"])
                self.units.addTopLevelItem(lines[line])
                lines[line].setExpanded(True)
            key = (line, unit["station"])
            if key not in groups:
                groups[key] = QTreeWidgetItem([unit["station"]])
                lines[line].addChild(groups[key])
                groups[key].setExpanded(True)
            groups[key].addChild(QTreeWidgetItem([unit["serial"], unit["state"], unit["failed_step"] or "",
                                                  unit["operator"] or "", _when(unit["started_at"]),
                                                  str(unit["unit_id"])]))
        for (_line, _station), item in groups.items():
            item.setText(1, f"{item.childCount()} units")

    def _show_conflicts(self, found: list[Any]) -> None:
        self.conflicts.clear()
        for conflict in found:
            item = QTreeWidgetItem([conflict.kind, conflict.detail])
            item.setToolTip(1, conflict.detail)  # the whole sentence: it names stations, lines and times
            self.conflicts.addTopLevelItem(item)

    def _failed(self, error: BaseException) -> None:
        self.message.setStyleSheet(f"color: {RED};")
        self.message.setText(str(error))

    def shutdown(self, timeout_ms: int = 3000) -> bool:
        return self.pool.shutdown(timeout_ms)


class ScopedAuditView(QWidget):
    """The audit view with a scope switch: "This station" (the local log) or "Whole fleet"."""

    def __init__(self, local: QWidget, fleet: FleetConfig, parent: QWidget | None = None) -> None:
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
