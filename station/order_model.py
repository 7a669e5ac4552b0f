"""Work orders as records: a serial range, an order and its content fingerprint, an order file's orders, an
order's progress, an import's result, and the errors a work order raises.  Moved out of :mod:`station.orders`,
which re-exports every name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from station.errors import ConfigError, StationError

ORDER_STATES = ("open", "closed")


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


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _never(first: str) -> SerialRange:
    raise ValueError(f"recorded range starting {first!r} cannot be read back")
