"""The whole-fleet scope's table of units: read from the fleet's PostgreSQL a page at a time, as the view scrolls.

Like :mod:`ui.audit_model`, but every page is read on a pool thread (the fleet is across the network: a query can
take a connect timeout, never on the GUI thread). Pages are keyset pages (:func:`station.fleet.queries.page_key`):
the next one starts right after the last row shown, through the same index, however deep the user scrolls. A
filter change drops the rows and asks for the first page again; an answer to an older question is dropped.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor

from station.config import FleetConfig
from station.fleet.quality import QualityLogin
from station.fleet.queries import FleetFilter
from ui.audit_model import STATE_COLORS
from ui.bridge import TaskPool

# Rows per query: several screenfuls, a few milliseconds on the server whatever the fleet's size.
PAGE_ROWS = 200
UNIT_ROLE = Qt.ItemDataRole.UserRole + 1

Index = QModelIndex | QPersistentModelIndex

# What the scope reads the fleet as: the quality lead's own login (the window's), or a station's [fleet] (tests).
FleetSource = QualityLogin | FleetConfig


def open_fleet(fleet: FleetSource, **options: Any) -> Any:
    """A fleet connection with every deadline (station.fleet.connection.connect); a worker thread's call."""
    if isinstance(fleet, QualityLogin):
        return fleet.connect(**options)  # a refused login says what to ask for
    from station.fleet.connection import connect

    return connect(fleet.dsn, passfile=fleet.passfile, **options)


COLUMNS = ("Line", "Station", "Serial", "Result", "Failed step", "Operator", "Started", "Unit")


def _cells(unit: dict[str, Any]) -> tuple[str, ...]:
    started = unit["started_at"]
    return (
        unit["line"] or "—",
        unit["station"],
        unit["serial"],
        unit["state"],
        unit["failed_step"] or "",
        unit["operator"] or "",
        started.astimezone().strftime("%Y-%m-%d %H:%M:%S") if started else "",
        str(unit["unit_id"]),
    )


class FleetUnitsModel(QAbstractTableModel):
    """Fleet units matching the filters, newest first (by serial for a serial search), fetched lazily."""

    page_loaded = Signal(int)  # rows now loaded
    failed = Signal(str)

    def __init__(
        self, fleet: FleetSource, pool: TaskPool, *, page_rows: int = PAGE_ROWS, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.fleet = fleet
        self.pool = pool
        self.page_rows = page_rows
        self.filters = FleetFilter()
        self.pages_fetched = 0
        self._units: list[dict[str, Any]] = []
        self._exhausted = True
        self._loading = False
        self._generation = 0

    # -------------------------------------------------------------------------------------- paging

    def set_filters(self, filters: FleetFilter) -> None:
        """Drop the rows and read the first page matching ``filters`` (off the GUI thread)."""
        self.beginResetModel()
        self.filters = filters
        self._units = []
        self._exhausted = False
        self._loading = False
        self._generation += 1
        self.endResetModel()
        self._fetch_page()

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:  # noqa: B008, N802 - Qt's signature
        return not parent.isValid() and not self._exhausted and not self._loading

    def fetchMore(self, parent: Index = QModelIndex()) -> None:  # noqa: B008, N802 - Qt's signature
        if self.canFetchMore(parent):
            self._fetch_page()

    @property
    def loading(self) -> bool:
        return self._loading

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def _fetch_page(self) -> None:
        from station.fleet.queries import page_key

        filters, fleet, rows = self.filters, self.fleet, self.page_rows
        after = page_key(filters, self._units[-1]) if self._units else None
        generation = self._generation

        def work() -> object:
            from station.fleet.queries import units_page

            with open_fleet(fleet) as conn:
                return units_page(conn, filters, limit=rows, after=after)

        def done(page: Any) -> None:
            if generation != self._generation:
                return  # the filters changed meanwhile
            self._loading = False
            self.pages_fetched += 1
            if len(page) < rows:
                self._exhausted = True
            if page:
                first = len(self._units)
                self.beginInsertRows(QModelIndex(), first, first + len(page) - 1)
                self._units.extend(page)
                self.endInsertRows()
            self.page_loaded.emit(len(self._units))

        def failed(error: BaseException) -> None:
            if generation != self._generation:
                return
            self._loading = False
            # Not exhausted: scrolling (or Refresh) asks again once the fleet answers.
            self.failed.emit(str(error))

        if self.pool.submit(work, done, failed):
            self._loading = True

    # ---------------------------------------------------------------------------------- Qt's model

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's signature
        return 0 if parent.isValid() else len(self._units)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's signature
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self,
        section: int,
        orientation: Qt.Orientation,  # noqa: N802 - Qt's name
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> object:
        if (
            role == Qt.ItemDataRole.DisplayRole
            and orientation == Qt.Orientation.Horizontal
            and 0 <= section < len(COLUMNS)
        ):
            return COLUMNS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or not 0 <= index.row() < len(self._units):
            return None
        unit = self._units[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return _cells(unit)[index.column()]
        if role == Qt.ItemDataRole.ForegroundRole and COLUMNS[index.column()] == "Result":
            color = STATE_COLORS.get(unit["state"])
            return QColor(color) if color else None
        if role == UNIT_ROLE:
            return unit
        return None

    def unit_at(self, row: int) -> dict[str, Any] | None:
        return self._units[row] if 0 <= row < len(self._units) else None
