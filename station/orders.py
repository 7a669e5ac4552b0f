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

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

from station.errors import ConfigError, StationError
from station.profiles import DeviceProfile

ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ORDER_STATES = ("open", "closed")
# A range this long is a typo (a digit too many), not an order.
MAX_RANGE_SERIALS = 1_000_000
# How many open orders a refusal names, nearest first.
NEAREST_ORDERS = 3
CSV_COLUMNS = ("order", "profile", "quantity", "serials", "due")
REQUIRED_CSV_COLUMNS = ("order", "profile", "quantity", "serials")
# A serials cell lists ranges and serials separated by spaces, commas or semicolons.
_ITEM_SEPARATORS = re.compile(r"[\s,;]+")


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, order=True)
class SerialRange:
    """Serials ``prefix`` + a number from ``first`` to ``last``, written with ``width`` digits."""

    prefix: str
    first: int
    last: int
    width: int

    def serial(self, number: int) -> str:
        return f"{self.prefix}{number:0{self.width}d}"

    @property
    def text(self) -> str:
        return f"{self.serial(self.first)}-{self.serial(self.last)}"

    def __len__(self) -> int:
        return self.last - self.first + 1

    def number_of(self, serial: str) -> int | None:
        """The serial's number if it is written like this range's serials (prefix, width), else None."""
        digits = serial[len(self.prefix) :]
        if len(serial) != len(self.prefix) + self.width or not serial.startswith(self.prefix):
            return None
        return int(digits) if digits.isdigit() and digits.isascii() else None

    def __contains__(self, serial: object) -> bool:
        number = self.number_of(serial) if isinstance(serial, str) else None
        return number is not None and self.first <= number <= self.last

    def distance(self, serial: str) -> int | None:
        """How many serials lie between ``serial`` and this range (0 inside it); None if not comparable."""
        number = self.number_of(serial)
        if number is None:
            return None
        return (
            0 if self.first <= number <= self.last else min(abs(number - self.first), abs(number - self.last))
        )


@dataclass(frozen=True)
class Order:
    """One work order as the ERP/MES wrote it: product, serials, quantity, due date."""

    order_id: str
    profile: str
    quantity: int
    ranges: tuple[SerialRange, ...] = ()
    serials: tuple[str, ...] = ()
    due: date | None = None
    _serial_set: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_serial_set", frozenset(self.serials))

    @property
    def serial_count(self) -> int:
        return sum(len(r) for r in self.ranges) + len(self.serials)

    def __contains__(self, serial: object) -> bool:
        return isinstance(serial, str) and (
            serial in self._serial_set or any(serial in r for r in self.ranges)
        )

    def distance(self, serial: str) -> int | None:
        """How far ``serial`` is from this order's serials (0: it is one of them); None if not comparable."""
        if serial in self:
            return 0
        found = [d for d in (r.distance(serial) for r in self.ranges) if d is not None]
        for listed in self.serials:
            d = SerialRange(listed[: len(listed) - _digit_run(listed)], 0, 0, _digit_run(listed))
            number = d.number_of(serial)
            if number is not None and _digit_run(listed):
                found.append(abs(number - int(listed[len(d.prefix) :])))
        return min(found) if found else None

    def serials_text(self, *, limit: int = 4) -> str:
        """The serials as a person reads them: ranges first, then single serials, shortened."""
        items = [r.text for r in self.ranges] + list(self.serials)
        shown = ", ".join(items[:limit])
        return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

    def content(self) -> dict[str, Any]:
        """What the order says, canonically: identical orders have identical content, whatever file they came from."""
        return {
            "order": self.order_id,
            "profile": self.profile,
            "quantity": self.quantity,
            "due": self.due.isoformat() if self.due else None,
            "ranges": [[r.serial(r.first), r.serial(r.last)] for r in sorted(self.ranges)],
            "serials": sorted(self.serials),
        }

    @property
    def content_sha256(self) -> str:
        return hashlib.sha256(_canonical(self.content()).encode("utf-8")).hexdigest()

    @classmethod
    def from_content(cls, content: dict[str, Any]) -> Order:
        """The inverse of :meth:`content` (as stored by an order book)."""
        due = content.get("due")
        return cls(
            order_id=str(content["order"]),
            profile=str(content["profile"]),
            quantity=int(content["quantity"]),
            ranges=tuple(
                _parse_range(f"{first}-{last}") or _never(first) for first, last in content["ranges"]
            ),
            serials=tuple(str(serial) for serial in content["serials"]),
            due=date.fromisoformat(due) if due else None,
        )


@dataclass(frozen=True)
class OrderFile:
    """The orders read from one file, with the line where each starts and the file's SHA-256."""

    path: Path
    sha256: str
    orders: tuple[Order, ...]
    lines: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OrderStatus:
    """An order as recorded, and how far it got."""

    order: Order
    state: str  # open | closed
    imported_at: datetime
    imported_by: str
    source_file: str
    file_sha256: str
    closed_at: datetime | None = None
    closed_by: str | None = None
    close_reason: str | None = None
    # Units of this order by state; passed + running + failed hold its places.
    passed: int = 0
    running: int = 0
    failed: int = 0
    aborted: int = 0

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def quantity(self) -> int:
        return self.order.quantity

    @property
    def held(self) -> int:
        """Places taken by boards that passed or are still being worked on."""
        return self.passed + self.running + self.failed

    @property
    def complete(self) -> bool:
        return self.passed >= self.order.quantity

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    @property
    def yield_fraction(self) -> float | None:
        """Passed units / finished units (passed, failed, aborted); None before any finished."""
        finished = self.passed + self.failed + self.aborted
        return self.passed / finished if finished else None

    @property
    def state_text(self) -> str:
        if self.state == "closed":
            return "closed"
        return "complete" if self.complete else "open"

    def progress_text(self) -> str:
        rate = self.yield_fraction
        yield_text = "no unit finished yet" if rate is None else f"yield {rate * 100:.0f} %"
        extra = f", {self.running + self.failed} in progress" if self.running + self.failed else ""
        return f"{self.passed} of {self.quantity} passed{extra}, {yield_text}"

    def summary(self) -> str:
        """One line naming the order in a refusal or a list."""
        return (
            f"{self.order_id} ({self.order.profile}, serials {self.order.serials_text(limit=2)}, "
            f"{self.passed} of {self.quantity} passed)"
        )


@dataclass(frozen=True)
class ImportResult:
    """What an import did: orders newly recorded and orders already recorded identically."""

    imported: tuple[str, ...]
    unchanged: tuple[str, ...]


# ------------------------------------------------------------------------------------------------ errors


class OrderFileError(ConfigError):
    """An order file that cannot be imported; the message names the file and line. Nothing was imported."""


class OrderConflict(StationError):
    """A re-import that would change an order already recorded; nothing was imported."""

    def __init__(self, path: Path, differences: dict[str, list[str]]) -> None:
        self.differences = differences
        lines = [
            f"{path}: refused — nothing was imported, because these orders were already imported with other "
            f"content:"
        ]
        for order_id, changes in differences.items():
            lines.append(f"  order {order_id}:")
            lines.extend(f"    {change}" for change in changes)
        lines.append(
            "An imported order never changes. If the ERP really changed it, close the old order "
            "(station order close ID --reason …) and import the change under a new order id."
        )
        super().__init__("\n".join(lines))


class OrderRefused(StationError):
    """The serial may not be enrolled under the work orders; nothing was recorded and the board was not touched.

    ``kind``: ``no-order`` (the serial is in no open order), ``unknown`` (no such order), ``closed``,
    ``complete`` (the order reached its quantity), ``full`` (every place held by a unit still being worked on),
    ``not-in-order`` (the serial is not one of the named order's), ``ambiguous`` (in several open orders),
    ``profile`` (the order is for another product); with the fleet (station.fleet.orders) also ``held`` (the
    serial's place is held on another station) and ``offline`` (the fleet did not answer, offline = "refuse").
    """

    def __init__(self, kind: str, message: str, order: Order | None = None) -> None:
        self.kind = kind
        # The order the serial would have been counted in, when there is one.
        self.order = order
        super().__init__(message)


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


# ---------------------------------------------------------------------------------------------- reading


ProfileLookup = Callable[[str], DeviceProfile | None]


def read_order_file(path: Path, *, profiles: ProfileLookup) -> OrderFile:
    """Read the orders in a CSV (``.csv``) or JSON (``.json``) file; refuse the whole file on any problem.

    ``profiles`` returns the device profile of a name, or None if the station has no such profile.

    CSV: a header row naming the columns ``order,profile,quantity,serials[,due]`` (any order, case ignored),
    then one row per order. ``serials`` holds ranges ``FROM-TO`` and single serials separated by spaces, commas
    or semicolons; more rows with the same order id add serials (their other cells empty or equal).
    JSON: ``{"orders": [{"order": …, "profile": …, "quantity": N, "serials": ["FROM-TO", "S", …],
    "due": "YYYY-MM-DD"}]}`` (or just the list).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OrderFileError(f"cannot read the order file {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise OrderFileError(
            f"{path}, line {line}: not UTF-8 text — save the file as UTF-8 and import it again"
        ) from exc
    if path.suffix.lower() == ".json":
        entries = list(_json_entries(path, text))
    elif path.suffix.lower() == ".csv":
        entries = list(_csv_entries(path, text))
    else:
        raise OrderFileError(
            f"{path}: an order file must be .csv or .json (the name says which format it is in)"
        )
    if not entries:
        raise OrderFileError(f"{path}: the file holds no order")
    orders: list[Order] = []
    lines: dict[str, int] = {}
    seen: dict[str, tuple[str, int]] = {}  # every serial of the file → (its order, its line)
    for entry in entries:
        order = _build_order(path, entry, profiles)
        for serial, line in _listed_serials(entry):
            if serial in seen:
                other, other_line = seen[serial]
                raise OrderFileError(
                    f"{path}, line {line}: serial {serial} appears twice (also in order {other}, "
                    f"line {other_line}) — each board belongs to one order once"
                )
            seen[serial] = (order.order_id, line)
        _check_ranges_disjoint(path, entry, order, orders, lines)
        orders.append(order)
        lines[order.order_id] = entry.line
    return OrderFile(path=path, sha256=hashlib.sha256(raw).hexdigest(), orders=tuple(orders), lines=lines)


@dataclass
class _Entry:
    """One order as found in a file, before checking; ``items`` are (text, line) of its serials cells."""

    line: int
    order_id: str
    profile: str
    quantity: str
    due: str
    items: list[tuple[str, int]]
    ranges: list[tuple[SerialRange, int]] = field(default_factory=list)
    serials: list[tuple[str, int]] = field(default_factory=list)


def _csv_entries(path: Path, text: str) -> Iterator[_Entry]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    entries: dict[str, _Entry] = {}
    for row in reader:
        number = reader.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if header is None:
            header = [cell.lower() for cell in cells]
            unknown = [name for name in header if name not in CSV_COLUMNS]
            missing = [name for name in REQUIRED_CSV_COLUMNS if name not in header]
            if unknown or missing:
                problem = f"unknown column {unknown[0]!r}" if unknown else f"no {missing[0]!r} column"
                raise OrderFileError(
                    f"{path}, line {number}: {problem} — the first row must name the columns "
                    f"{','.join(REQUIRED_CSV_COLUMNS)}[,due]"
                )
            if len(set(header)) != len(header):
                raise OrderFileError(f"{path}, line {number}: a column is named twice")
            continue
        if len(cells) > len(header):
            raise OrderFileError(
                f"{path}, line {number}: {len(cells)} cells but {len(header)} columns — a serials "
                f"list with commas must be quoted, or use spaces or semicolons between serials"
            )
        values = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True))
        order_id = values["order"]
        if not order_id:
            raise OrderFileError(f"{path}, line {number}: the order cell is empty")
        existing = entries.get(order_id)
        if existing is None:
            entries[order_id] = _Entry(
                number,
                order_id,
                values["profile"],
                values["quantity"],
                values.get("due", ""),
                [(values["serials"], number)],
            )
            continue
        # A continuation row: more serials for the same order.
        for name, known in (
            ("profile", existing.profile),
            ("quantity", existing.quantity),
            ("due", existing.due),
        ):
            value = values.get(name, "")
            if value and value != known:
                raise OrderFileError(
                    f"{path}, line {number}: order {order_id} already has {name} {known!r} "
                    f"(line {existing.line}), not {value!r} — rows of one order repeat it or "
                    f"leave it empty"
                )
        existing.items.append((values["serials"], number))
    if header is None:
        raise OrderFileError(
            f"{path}: the file is empty — the first row must name the columns "
            f"{','.join(REQUIRED_CSV_COLUMNS)}[,due]"
        )
    yield from entries.values()


def _json_entries(path: Path, text: str) -> Iterator[_Entry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OrderFileError(
            f"{path}, line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
        ) from exc
    if isinstance(data, dict) and set(data) == {"orders"}:
        data = data["orders"]
    if not isinstance(data, list):
        raise OrderFileError(f'{path}, line 1: expected {{"orders": [ … ]}} or a list of orders')
    search_from = 0
    for index, item in enumerate(data, 1):
        if not isinstance(item, dict):
            raise OrderFileError(f"{path}: order {index} is not an object {{ … }}")
        order_id = item.get("order")
        line, search_from = _json_line(text, order_id, search_from)
        unknown = sorted(set(item) - set(CSV_COLUMNS))
        if unknown:
            raise OrderFileError(
                f"{path}, line {line}: unknown key {unknown[0]!r} — an order has the keys "
                f"{', '.join(CSV_COLUMNS)}"
            )
        if not isinstance(order_id, str) or not order_id:
            raise OrderFileError(f'{path}, line {line}: order {index} needs "order": "<order id>"')
        quantity = item.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int | str | type(None)):
            raise OrderFileError(f"{path}, line {line}: order {order_id}: quantity must be a whole number")
        serials = item.get("serials")
        if isinstance(serials, str):
            serials = [serials]
        if not isinstance(serials, list) or not all(isinstance(s, str) for s in serials):
            raise OrderFileError(
                f'{path}, line {line}: order {order_id}: "serials" must be a list of ranges '
                f'"FROM-TO" and serials'
            )
        profile, due = item.get("profile"), item.get("due")
        for name, value in (("profile", profile), ("due", due)):
            if value is not None and not isinstance(value, str):
                raise OrderFileError(f"{path}, line {line}: order {order_id}: {name} must be a string")
        items = [(serial, _json_line(text, serial, search_from)[0]) for serial in serials]
        yield _Entry(
            line, order_id, profile or "", "" if quantity is None else str(quantity), due or "", items
        )


def _json_line(text: str, value: object, start: int) -> tuple[int, int]:
    """The line of the string ``value`` at or after offset ``start`` (1 if not found), and where it is."""
    if isinstance(value, str):
        position = text.find(json.dumps(value)[1:-1], start)
        if position >= 0:
            return text.count("\n", 0, position) + 1, position
    return text.count("\n", 0, start) + 1, start


def _build_order(path: Path, entry: _Entry, profiles: ProfileLookup) -> Order:
    where = f"{path}, line {entry.line}"
    if not ORDER_ID_PATTERN.fullmatch(entry.order_id):
        raise OrderFileError(
            f"{where}: order id {entry.order_id!r} is not valid — use up to 64 letters, digits, "
            f"'.', '_' and '-', starting with a letter or digit"
        )
    if not entry.profile:
        raise OrderFileError(f"{where}: order {entry.order_id} names no profile (the product to build)")
    try:
        profile = profiles(entry.profile)
    except StationError as exc:
        raise OrderFileError(
            f"{where}: order {entry.order_id}: profile {entry.profile!r} cannot be used ({exc})"
        ) from exc
    if profile is None:
        raise OrderFileError(
            f"{where}: order {entry.order_id} names the unknown profile {entry.profile!r} — "
            f"install that device profile on the station first, or correct the name"
        )
    if not entry.quantity.isdigit() or int(entry.quantity) < 1:
        raise OrderFileError(
            f"{where}: order {entry.order_id}: quantity {entry.quantity!r} is not a whole number "
            f"of boards (1 or more)"
        )
    quantity = int(entry.quantity)
    due = None
    if entry.due:
        try:
            due = date.fromisoformat(entry.due)
        except ValueError:
            raise OrderFileError(
                f"{where}: order {entry.order_id}: due date {entry.due!r} is not YYYY-MM-DD"
            ) from None
    for cell, line in entry.items:
        items = [item for item in _ITEM_SEPARATORS.split(cell) if item]
        if not items:
            raise OrderFileError(
                f"{path}, line {line}: order {entry.order_id} lists no serial (a range FROM-TO or serials)"
            )
        for item in items:
            parsed = _item(path, line, entry.order_id, item, profile)
            if isinstance(parsed, SerialRange):
                entry.ranges.append((parsed, line))
            else:
                entry.serials.append((parsed, line))
    listed = len(entry.serials)
    total = listed + sum(len(r) for r, _line in entry.ranges)
    if quantity < listed:
        raise OrderFileError(
            f"{where}: order {entry.order_id}: quantity {quantity} is smaller than the "
            f"{listed} serials listed — correct the quantity or the list"
        )
    if total < quantity:
        raise OrderFileError(
            f"{where}: order {entry.order_id}: quantity {quantity} but only {total} serials — "
            f"the order could never be completed; add the missing serials or lower the quantity"
        )
    return Order(
        order_id=entry.order_id,
        profile=profile.name,
        quantity=quantity,
        ranges=tuple(r for r, _line in entry.ranges),
        serials=tuple(s for s, _line in entry.serials),
        due=due,
    )


def _item(path: Path, line: int, order_id: str, item: str, profile: DeviceProfile) -> SerialRange | str:
    where = f"{path}, line {line}: order {order_id}"
    if "-" in item:
        parsed = _parse_range(item)
        if parsed is not None:
            if parsed.first > parsed.last:
                raise OrderFileError(
                    f"{where}: bad range {item}: it ends before it starts — write FROM-TO with "
                    f"the lower serial first"
                )
            if len(parsed) > MAX_RANGE_SERIALS:
                raise OrderFileError(
                    f"{where}: bad range {item}: {len(parsed):,} serials is more than an order can "
                    f"hold ({MAX_RANGE_SERIALS:,}) — check the number of digits"
                )
            for end in (parsed.serial(parsed.first), parsed.serial(parsed.last)):
                _valid(where, end, profile, f"range {item}")
            return parsed
        if not profile.serial_pattern.fullmatch(item):
            raise OrderFileError(
                f"{where}: bad range {item}: FROM and TO must be serials of the same length that "
                f"differ only in their last digits, like 202600000000001-202600000000005"
            )
    return _valid(where, item, profile, "serial")


def _valid(where: str, serial: str, profile: DeviceProfile, what: str) -> str:
    try:
        return profile.validate_serial(serial)
    except StationError as exc:
        raise OrderFileError(
            f"{where}: {what} {serial!r} is not a serial of profile {profile.name} ({exc})"
        ) from None


def _parse_range(text: str) -> SerialRange | None:
    """``FROM-TO``: two serials of one length, equal up to a run of trailing digits; None if it is not one."""
    for index, char in enumerate(text):
        if char != "-":
            continue
        first, last = text[:index], text[index + 1 :]
        if not first or len(first) != len(last):
            continue
        width = min(_digit_run(first), _digit_run(last))
        prefix = first[: len(first) - width]
        if width == 0 or prefix != last[: len(last) - width]:
            continue
        return SerialRange(prefix, int(first[len(prefix) :]), int(last[len(prefix) :]), width)
    return None


def _digit_run(text: str) -> int:
    """How many ASCII digits ``text`` ends with."""
    count = 0
    while count < len(text) and text[len(text) - 1 - count] in "0123456789":
        count += 1
    return count


def _listed_serials(entry: _Entry) -> Iterator[tuple[str, int]]:
    yield from entry.serials


def _check_ranges_disjoint(
    path: Path, entry: _Entry, order: Order, earlier: list[Order], lines: dict[str, int]
) -> None:
    """No serial twice in one file: ranges overlapping each other, or a range holding a listed serial."""
    before = [(r, other.order_id, lines[other.order_id]) for other in earlier for r in other.ranges]
    mine = [(r, order.order_id, line) for r, line in entry.ranges]
    for position, (current, _mine, line) in enumerate(mine):
        for other, other_id, other_line in mine[position + 1 :] + before:
            if (
                (current.prefix, current.width) == (other.prefix, other.width)
                and current.first <= other.last
                and other.first <= current.last
            ):
                shared = current.serial(max(current.first, other.first))
                raise OrderFileError(
                    f"{path}, line {line}: range {current.text} overlaps range {other.text} "
                    f"(order {other_id}, line {other_line}) — serial {shared} appears twice"
                )
    for serial, line in entry.serials:
        for current, range_id, range_line in mine + before:
            if serial in current:
                raise OrderFileError(
                    f"{path}, line {line}: serial {serial} appears twice (range {current.text} "
                    f"of order {range_id}, line {range_line}, holds it too)"
                )
    for previous in earlier:
        for serial in previous.serials:
            for current, _mine, line in mine:
                if serial in current:
                    raise OrderFileError(
                        f"{path}, line {line}: range {current.text} holds serial {serial}, which "
                        f"order {previous.order_id} (line {lines[previous.order_id]}) lists too — "
                        f"serial {serial} appears twice"
                    )


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


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _never(first: str) -> SerialRange:
    raise ValueError(f"recorded range starting {first!r} cannot be read back")


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
