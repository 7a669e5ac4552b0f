"""The audit view's table of units: read through the audit reader a page at a time, as the view scrolls.

The model never holds more units than the view has scrolled through, and never reads on the GUI thread: it asks
its :class:`~station.service.audit_reader.AuditReader` (the station service, which filters and sorts in SQL on
indexed columns) for the next page on a pool thread when Qt's view asks :meth:`canFetchMore` /
:meth:`fetchMore`, and inserts the rows when the answer comes back.  A filter or sort change drops the rows and
asks for the first page again; an answer to an older question is dropped.

Errors never escape into Qt: a failed read (a refusal, a slow or stopped service) is reported through
:attr:`AuditTableModel.failed` and the table keeps what it had.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor

from station.audit import Unit, UnitFilter
from station.display import format_duration
from station.states import UnitState
from ui.bridge import AuditReader, TaskPool
from ui.style import AMBER, BLUE, GREEN, GREY, RED

# Rows read per query: a screenful several times over, small enough that a page costs milliseconds.
PAGE_SIZE = 200

UNIT_ROLE = Qt.ItemDataRole.UserRole + 1

Index = QModelIndex | QPersistentModelIndex

STATE_COLORS = {
    UnitState.PASSED: GREEN,
    UnitState.FAILED: RED,
    UnitState.ABORTED: AMBER,
    UnitState.RUNNING: BLUE,
    UnitState.SUPERSEDED: GREY,
}


@dataclass(frozen=True)
class Column:
    title: str
    # The audit reader's units_page order_by key, or None when the column cannot be sorted in SQL on an index.
    sort_key: str | None
    text: Callable[[Unit], str]


def _local(unit: Unit) -> str:
    return unit.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(unit: Unit) -> str:
    return format_duration(unit.duration_s)


def _certificate(unit: Unit) -> str:
    if unit.certificate_serial is None:
        return ""
    return f"{unit.certificate_serial} (revoked)" if unit.certificate_revoked_at else unit.certificate_serial


COLUMNS = (
    Column("Unit", "id", lambda u: str(u.id)),
    Column("Serial", "serial", lambda u: u.serial),
    Column("Result", "state", lambda u: u.state),
    Column("Failed step", "failed_step", lambda u: u.failed_step or ""),
    Column("Operator", "operator", lambda u: u.operator),
    Column("Batch", "batch", lambda u: u.batch or ""),
    Column("Fixture", "fixture", lambda u: u.fixture or ""),
    Column("Station", "station", lambda u: u.station),
    Column("Started", "started_at", _local),
    Column("Duration", None, _duration),
    Column("Certificate", None, _certificate),
)


class AuditTableModel(QAbstractTableModel):
    """Units matching the current filters, newest first unless sorted otherwise, fetched lazily in pages.

    ``recent``: a technician's table — this station's most recent units only, newest first (the service decides
    which; see :mod:`station.service.audit_reads`).
    """

    failed = Signal(str)  # a read failed: what to tell the person
    refreshed = Signal()  # the rows were dropped and the first page asked for again
    page_loaded = Signal(int)  # a page arrived: rows now shown

    def __init__(
        self,
        reader: AuditReader,
        pool: TaskPool,
        *,
        page_size: int = PAGE_SIZE,
        recent: bool = False,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._reader = reader
        self._pool = pool
        self._page_size = page_size
        self.recent = recent
        self._filters = UnitFilter()
        self._order_by = "id"
        self._descending = True
        self._units: list[Unit] = []
        self._exhausted = True
        self._loading = False
        self._generation = 0

    # -------------------------------------------------------------------------------- what to show

    @property
    def filters(self) -> UnitFilter:
        """The filters in effect, the fixed ones included."""
        return self._filters

    @property
    def order(self) -> tuple[str, bool]:
        """(order_by key, descending)."""
        return self._order_by, self._descending

    def set_filters(self, filters: UnitFilter) -> None:
        """Show the units matching ``filters`` from the first page."""
        self._filters = filters
        self.refresh()

    def set_order(self, order_by: str, *, descending: bool) -> None:
        self._order_by, self._descending = order_by, descending
        self.refresh()

    def refresh(self) -> None:
        """Drop the rows and ask for the first page again (new units appear, revocations show)."""
        self.beginResetModel()
        self._units = []
        self._exhausted = False
        self._loading = False
        self._generation += 1
        self.endResetModel()
        self._fetch_page()
        self.refreshed.emit()

    @property
    def loading(self) -> bool:
        """Whether a page has been asked for and not answered yet."""
        return self._loading

    def unit_at(self, row: int) -> Unit | None:
        return self._units[row] if 0 <= row < len(self._units) else None

    def row_of(self, unit_id: int) -> int | None:
        return next((row for row, unit in enumerate(self._units) if unit.id == unit_id), None)

    def replace_unit(self, unit: Unit) -> None:
        """Show a re-read unit in place (after a revocation), without refetching the pages."""
        row = self.row_of(unit.id)
        if row is not None:
            self._units[row] = unit
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    # ------------------------------------------------------------------------------ Qt's interface

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's signature
        return 0 if parent.isValid() else len(self._units)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's signature
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        unit = self.unit_at(index.row()) if index.isValid() else None
        if unit is None:
            return None
        column = COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(unit)
        if role == UNIT_ROLE:
            return unit
        if role == Qt.ItemDataRole.ForegroundRole and column.sort_key == "state":
            return QColor(STATE_COLORS.get(UnitState(unit.state), GREY))
        if (
            role == Qt.ItemDataRole.ToolTipRole
            and column.sort_key in ("state", "failed_step")
            and unit.message
        ):
            return unit.message
        if role == Qt.ItemDataRole.TextAlignmentRole and column.title in ("Unit", "Duration"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(  # noqa: N802 - Qt's name
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(COLUMNS):
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section].title
            if role == Qt.ItemDataRole.ToolTipRole and COLUMNS[section].sort_key is None:
                return "This column cannot be sorted"
        return None

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:  # noqa: B008, N802 - Qt's signature
        return not parent.isValid() and not self._exhausted and not self._loading

    def fetchMore(self, parent: Index = QModelIndex()) -> None:  # noqa: B008, N802 - Qt's signature
        if self.canFetchMore(parent):
            self._fetch_page()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort in SQL on the column's index; columns without one (duration, certificate) are not sortable, and a
        technician's recent units stay newest first."""
        key = COLUMNS[column].sort_key if 0 <= column < len(COLUMNS) else None
        if key is None or self.recent:
            return
        self.set_order(key, descending=order == Qt.SortOrder.DescendingOrder)

    def sortable(self, column: int) -> bool:
        return 0 <= column < len(COLUMNS) and COLUMNS[column].sort_key is not None

    # ------------------------------------------------------------------------------------ reading

    def _fetch_page(self) -> None:
        reader, generation = self._reader, self._generation
        offset, limit, filters = len(self._units), self._page_size, self._filters
        order_by, descending, recent = self._order_by, self._descending, self.recent

        def work() -> object:
            return reader.units_page(
                offset=offset,
                limit=limit,
                order_by=order_by,
                descending=descending,
                filters=filters,
                recent=recent,
            )

        def done(page: object) -> None:
            if generation != self._generation:
                return  # the filters or the order changed meanwhile
            self._loading = False
            assert isinstance(page, list)
            if len(page) < limit:
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
            # Stop asking until the next refresh: a view scrolled to the end would otherwise ask again and again.
            self._exhausted = True
            self.failed.emit(f"Could not read the audit log: {error}")

        if self._pool.submit(work, done, failed):
            self._loading = True
