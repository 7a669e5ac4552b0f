"""Work orders: which boards the factory authorised the station to enrol.

A work order comes from the plant's ERP/MES as a file (CSV or JSON, see :func:`read_order_file`) and names a
product (a device profile), the serials it covers (ranges ``FROM-TO`` and/or single serials), how many boards
to build (quantity) and, optionally, a due date. Once imported (``station order import FILE``), a serial that
belongs to no open order can be refused before anything touches its board (``[orders] required``), and a unit
takes one *place* of its order: an order never has more units holding a place than its quantity.

This module is the orders' vocabulary and file formats, and :class:`OrderBook` — what the rest of the station
asks of an order store. The station's own store keeps orders in the audit log (:mod:`station.audit.orders`,
SQLite); a fleet store (PostgreSQL, shared by every station) implements the same protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

# Moved to station.order_file, re-exported here so every existing import keeps working:
from station.order_file import CSV_COLUMNS as CSV_COLUMNS
from station.order_file import MAX_RANGE_SERIALS as MAX_RANGE_SERIALS
from station.order_file import ORDER_ID_PATTERN as ORDER_ID_PATTERN
from station.order_file import REQUIRED_CSV_COLUMNS as REQUIRED_CSV_COLUMNS
from station.order_file import ProfileLookup as ProfileLookup
from station.order_file import read_order_file as read_order_file

# Moved to station.order_model, re-exported here so every existing import keeps working:
from station.order_model import ORDER_STATES as ORDER_STATES
from station.order_model import ImportResult as ImportResult
from station.order_model import Order as Order
from station.order_model import OrderConflict as OrderConflict
from station.order_model import OrderFile as OrderFile
from station.order_model import OrderFileError as OrderFileError
from station.order_model import OrderRefused as OrderRefused
from station.order_model import OrderStatus as OrderStatus
from station.order_model import SerialRange as SerialRange
from station.profiles import DeviceProfile

# How many open orders a refusal names, nearest first.
NEAREST_ORDERS = 3


# ------------------------------------------------------------------------------------------- the store


class OrderBook(Protocol):
    """What the station asks of the place orders are kept: the audit log (SQLite, station.audit.orders) or, with
    ``[fleet]``, the fleet (PostgreSQL, station.fleet.orders).

    Claiming a place for a unit is part of starting the unit (it must commit or fail with the unit's record), so
    it is not here: the local store claims inside :meth:`station.audit.AuditLog.start_unit`'s transaction, and the
    fleet's ``take_place`` is the hook that transaction calls.
    """

    def import_orders(self, parsed: OrderFile, *, by: str) -> ImportResult:
        """Record every order of ``parsed``, all or none; identical re-imports change nothing;
        a different order under a recorded id raises :class:`OrderConflict`."""
        ...

    def orders(self, *, state: str | None = None) -> list[OrderStatus]:
        """Every order (or those in ``state``), newest import first, with their progress."""
        ...

    def status(self, order_id: str) -> OrderStatus:
        """One order and its progress; StationError if there is no such order."""
        ...

    def close(self, order_id: str, *, by: str, reason: str) -> OrderStatus:
        """Close an open order: it accepts no further unit."""
        ...

    def order_for(self, serial: str, *, order_id: str | None = None, required: bool = False) -> Order | None:
        """The order a unit of ``serial`` would be counted in (``order_id``: the one picked), without taking
        a place; raises :class:`OrderRefused` when that unit would be refused; None when it needs no order."""
        ...

    def order_of_unit(self, unit_id: int) -> str | None:
        """The order a unit was counted in, or None."""
        ...


# ------------------------------------------------------------------------------------- choosing an order


def choose_order(
    statuses: Iterable[OrderStatus], serial: str, *, order_id: str | None, required: bool
) -> OrderStatus | None:
    """The order a new unit of ``serial`` is counted in, or None when it needs none — the rule every store uses.

    Raises :class:`OrderRefused` with what to do next. A named (picked) order is checked first for being open
    and not yet complete, then for holding the serial; without a name, the one open order holding the serial
    is used, and a serial in none is refused only when orders are ``required``.
    """
    every = list(statuses)
    open_orders = [status for status in every if status.is_open]
    if order_id is not None:
        named = next((status for status in every if status.order_id == order_id), None)
        if named is None:
            raise OrderRefused(
                "unknown",
                f"there is no work order {order_id} — check the order number, or import "
                f"it first (station order import FILE)",
            )
        _check_open(named)
        if serial not in named.order:
            raise OrderRefused(
                "not-in-order",
                f"serial {serial} is not one of order {order_id}'s serials "
                f"({named.order.serials_text()}) — check the label; if the board belongs to "
                f"another order, pick that order{_nearest_text(open_orders, serial, exclude=order_id)}",
            )
        return named
    holding = [status for status in open_orders if serial in status.order]
    if len(holding) > 1:
        names = ", ".join(status.order_id for status in holding)
        raise OrderRefused(
            "ambiguous",
            f"serial {serial} is in several open orders ({names}) — pick the order "
            f"you are building in the window (or name it: --order ID)",
        )
    if holding:
        _check_open(holding[0])
        return holding[0]
    if not required:
        return None
    for status in every:
        if serial in status.order and not status.is_open:
            _check_open(status)
    raise OrderRefused(
        "no-order",
        f"serial {serial} belongs to no open work order, and this station enrols only "
        f"boards of an open order — check the label{_nearest_text(open_orders, serial)}",
    )


def _check_open(status: OrderStatus) -> None:
    if status.state == "closed":
        when = status.closed_at.astimezone().strftime("%Y-%m-%d %H:%M") if status.closed_at else "?"
        reason = f" ({status.close_reason})" if status.close_reason else ""
        raise OrderRefused(
            "closed",
            f"work order {status.order_id} was closed on {when} by {status.closed_by}"
            f"{reason}: it accepts no further board — pick an open order, or ask the quality "
            f"lead for a new order",
            status.order,
        )
    if status.complete:
        raise OrderRefused(
            "complete",
            f"work order {status.order_id} is complete ({status.passed} of "
            f"{status.quantity} passed): it accepts no further board — set this board aside and "
            f"pick the next order",
            status.order,
        )
    if status.held >= status.quantity:
        raise OrderRefused(
            "full",
            f"work order {status.order_id} has no free place: {status.passed} passed and "
            f"{status.running + status.failed} still being worked on make its quantity "
            f"{status.quantity} — finish (Retry) or abort those boards first",
            status.order,
        )


def _nearest_text(open_orders: list[OrderStatus], serial: str, *, exclude: str | None = None) -> str:
    ranked = sorted(
        (
            (status.order.distance(serial), status.order_id, status)
            for status in open_orders
            if status.order_id != exclude
        ),
        key=lambda item: (item[0] is None, item[0] or 0, item[1]),
    )
    if not ranked:
        return (
            "; there is no other open order"
            if exclude
            else (
                "; there is no open order at all — the quality lead imports one with station order import FILE"
            )
        )
    named = "; ".join(status.summary() for _d, _id, status in ranked[:NEAREST_ORDERS])
    return f"; nearest open orders: {named}"


def content_differences(recorded: Order, incoming: Order) -> list[str]:
    """What a re-import would change in a recorded order, in words a quality lead reads."""
    changes = []
    old, new = recorded.content(), incoming.content()
    for key in ("profile", "quantity", "due"):
        if old[key] != new[key]:
            changes.append(
                f"{key}: {old[key] if old[key] is not None else '(none)'} recorded, "
                f"{new[key] if new[key] is not None else '(none)'} in the file"
            )
    old_items = {f"{a}-{b}" for a, b in old["ranges"]} | set(old["serials"])
    new_items = {f"{a}-{b}" for a, b in new["ranges"]} | set(new["serials"])
    if new_items - old_items:
        changes.append("serials only in the file: " + ", ".join(sorted(new_items - old_items)[:8]))
    if old_items - new_items:
        changes.append("serials only in the recorded order: " + ", ".join(sorted(old_items - new_items)[:8]))
    return changes


def order_profile(
    book: OrderBook,
    serial: str,
    *,
    order: str | None,
    required: bool,
    profile: DeviceProfile,
    profiles_dir: Path | None,
) -> DeviceProfile:
    """The profile a new unit of ``serial`` runs: its work order's, else ``profile`` (the fixture's or station's).

    Raises :class:`OrderRefused` — before anything touches the board or the audit log — when the unit would be
    refused; a serial that is not even valid for ``profile`` says that first.
    """
    from station.profiles import load_profile

    try:
        found = book.order_for(serial.strip(), order_id=order, required=required)
    except OrderRefused as refused:
        if refused.kind not in ("complete", "full") or refused.order is None:
            profile.validate_serial(serial)
            raise
        # Starting the unit decides: a re-provisioned board keeps its place, a restarted one gives its old
        # unit's place back first — and anything else is refused there, before the board is touched.
        found = refused.order
    if found is None or found.profile == profile.name:
        return profile
    return load_profile(found.profile, profiles_dir)
