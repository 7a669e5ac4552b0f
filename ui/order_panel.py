"""The work order strip of the station window: which order the technician builds, and how far it got.

It shows the current order (the one picked, or the open order holding the last scanned serial), its progress
(passed / quantity, in progress, yield, due date) and — when several orders are open — lets the technician
pick the one on the bench. Reading the orders runs on the window's task pool, never on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from station.audit import AuditLog
from station.orders import OrderStatus
from ui.bridge import TaskPool

# The progress of an order also moves when other stations or the batch grid finish boards.
REFRESH_MS = 3000
BY_SERIAL = "Any open order (chosen by the serial)"


class OrderPanel(QGroupBox):
    """Current work order, its progress, and the picker when several are open."""

    changed = Signal()  # new figures shown (tests wait on it)

    def __init__(
        self,
        audit: AuditLog | None,
        pool: TaskPool,
        *,
        required: bool,
        parent: QWidget | None = None,
        read_orders: Callable[[], list[OrderStatus]] | None = None,
    ) -> None:
        super().__init__("Work &order", parent)
        self.audit = audit
        self.pool = pool
        self.required = required
        self.open_orders: list[OrderStatus] = []
        # How the open orders are read (on the task pool): this station's, or the fleet's with [fleet].
        if read_orders is None:
            assert audit is not None, "the open orders are read from an audit log or by read_orders"
            read_orders = lambda: audit.orders.orders(state="open")  # noqa: E731 - read on the task pool
        self.read_orders: Callable[[], list[OrderStatus]] = read_orders
        self.last_serial: str | None = None
        self._loading = False
        self._closed = False

        layout = QVBoxLayout(self)
        # Compact: the fixture list and the label below it need the column's height more.
        layout.setContentsMargins(6, 2, 6, 4)
        layout.setSpacing(3)
        row = QHBoxLayout()
        self.picker = QComboBox(self)
        self.picker.setAccessibleName("Work order")
        self.picker.setMinimumWidth(300)
        self.picker.currentIndexChanged.connect(lambda _index: self._show())
        row.addWidget(self.picker, 1)
        layout.addLayout(row)
        self.progress = QProgressBar(self)
        self.progress.setAccessibleName("Order progress")
        self.progress.setTextVisible(True)
        layout.addWidget(self.progress)
        self.detail = QLabel(self)
        self.detail.setWordWrap(True)
        layout.addWidget(self.detail)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        # Nothing to pick, and nothing to say about orders, until they are read (off the GUI thread).
        self.picker.setEnabled(False)
        self.detail.setText("Reading the work orders…")
        self.refresh()

    # -- what the window asks --------------------------------------------------------------------

    def current_order_id(self) -> str | None:
        """The order the technician picked; None when any open order (the one holding the serial) will do."""
        value = self.picker.currentData()
        return value if isinstance(value, str) else None

    def pick(self, order_id: str | None) -> bool:
        index = self.picker.findData(order_id) if order_id else 0
        if index < 0:
            return False
        self.picker.setCurrentIndex(index)
        return True

    def show_serial(self, serial: str) -> None:
        """A serial was accepted: without a picked order, show the order that holds it."""
        self.last_serial = serial
        self._show()

    def current(self) -> OrderStatus | None:
        """The order shown: the picked one, else the open one holding the last serial, else the only open one."""
        picked = self.current_order_id()
        if picked is not None:
            return next((status for status in self.open_orders if status.order_id == picked), None)
        if self.last_serial is not None:
            holding = [status for status in self.open_orders if self.last_serial in status.order]
            if len(holding) == 1:
                return holding[0]
        return self.open_orders[0] if len(self.open_orders) == 1 else None

    # -- reading ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the open orders again (off the GUI thread)."""
        if self._loading or self._closed:
            return
        self._loading = True
        self.pool.submit(self.read_orders, self._loaded, self._failed)

    def stop(self) -> None:
        self._closed = True
        self._timer.stop()

    def _loaded(self, orders: object) -> None:
        self._loading = False
        if self._closed or not isinstance(orders, list):
            return
        self.open_orders = orders
        picked = self.current_order_id()
        self.picker.blockSignals(True)
        self.picker.clear()
        # With orders not required, one open order must not refuse the boards of no order: "any" comes first.
        offer_any = len(orders) > 1 or (orders and not self.required)
        if offer_any:
            self.picker.addItem(BY_SERIAL, None)
        for status in orders:
            self.picker.addItem(
                f"{status.order_id} — {status.order.profile} — {status.passed}/{status.quantity}",
                status.order_id,
            )
        if not orders:
            self.picker.addItem("No open work order", None)
        index = self.picker.findData(picked) if picked else 0
        self.picker.setCurrentIndex(max(index, 0))
        self.picker.setEnabled(bool(offer_any))
        self.picker.blockSignals(False)
        self._show()

    def _failed(self, error: BaseException) -> None:
        self._loading = False
        if not self._closed:
            self.detail.setText(
                f"The work orders could not be read ({error}) — they are read again in a moment."
            )

    def _show(self) -> None:
        status = self.current()
        # Without open orders there is nothing to pick and no progress to show: the words alone say so.
        self.picker.setVisible(bool(self.open_orders))
        self.progress.setVisible(status is not None)
        if status is None:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("")
            if not self.open_orders:
                self.detail.setText(
                    "No open work order: this station enrols no board until the quality lead imports one."
                    if self.required
                    else "No work order imported; boards are enrolled by their serial alone."
                )
            else:
                names = ", ".join(order.order_id for order in self.open_orders)
                self.detail.setText(
                    f"{len(self.open_orders)} orders are open ({names}): pick the one you are "
                    f"building, or scan — each board counts in the order holding its serial."
                )
            self.changed.emit()
            return
        self.progress.setRange(0, status.quantity)
        self.progress.setValue(min(status.passed, status.quantity))
        self.progress.setFormat(f"{status.order_id}: {status.passed} of {status.quantity} passed")
        due = f" · due {status.order.due.isoformat()}" if status.order.due else ""
        words = status.progress_text() + due
        if status.complete:
            words += " — complete: pick the next order"
        self.detail.setText(words)
        self.setToolTip(
            f"{status.order_id} builds {status.order.profile}: serials {status.order.serials_text()}"
        )
        self.changed.emit()
