"""Reading a work-order file (CSV or JSON) into checked orders: every serial valid for its profile, ranges
disjoint, each error naming the file and line.  Moved out of :mod:`station.orders`, which re-exports every name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from station.errors import StationError
from station.order_model import (
    Order,
    OrderFile,
    OrderFileError,
    SerialRange,
    _parse_range,
)
from station.profiles import DeviceProfile

ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A range this long is a typo (a digit too many), not an order.
MAX_RANGE_SERIALS = 1_000_000
CSV_COLUMNS = ("order", "profile", "quantity", "serials", "due")
REQUIRED_CSV_COLUMNS = ("order", "profile", "quantity", "serials")
# A serials cell lists ranges and serials separated by spaces, commas or semicolons.
_ITEM_SEPARATORS = re.compile(r"[\s,;]+")


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
            header = _csv_header(path, number, cells)
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


def _csv_header(path: Path, number: int, cells: list[str]) -> list[str]:
    """The column names of an order CSV's first row, refused unless they are the known columns, once each."""
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
    return header


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
    profile = _entry_profile(where, entry, profiles)
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
    _collect_items(path, entry, profile)
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


def _entry_profile(where: str, entry: _Entry, profiles: ProfileLookup) -> DeviceProfile:
    """The device profile an order names, refused (naming file and line) when it names none or an unknown one."""
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
    return profile


def _collect_items(path: Path, entry: _Entry, profile: DeviceProfile) -> None:
    """Sort an order's serial cells into ``entry.ranges`` and ``entry.serials``, each checked for ``profile``."""
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
