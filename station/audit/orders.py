"""The station's own order book: work orders kept in the audit log (SQLite), journalled like units.

Two tables join the audit log (both in its hash-chained journal, so ``station audit verify`` covers them):

* ``orders`` — one row per imported order: what it says (canonical JSON), who imported it, when, from which
  file (name and SHA-256), and whether it was closed (when, by whom, why);
* ``order_places`` — the place a unit takes in its order. A place is held while the unit is running, failed
  (resumable) or passed, and released when the unit is aborted or superseded.

That an order never has more boards than its quantity is decided in the database, not by a Python lock: a place
is a number 1…quantity (a trigger refuses a higher one) and a partial UNIQUE index lets one unit hold each
number — the same shape as the units' one-current-unit-per-serial index. Two stations racing for the last place
both try to take it; SQLite lets exactly one commit, and the other is refused as "order complete/full".

Only :mod:`station.audit` calls the ``claim_place``/``release_place`` functions, inside its own transactions; the
rest of the station uses :class:`SqliteOrderBook` (the :class:`station.orders.OrderBook` of one station).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from station.errors import StationError
from station.orders import (
    ImportResult,
    Order,
    OrderConflict,
    OrderFile,
    OrderRefused,
    OrderStatus,
    choose_order,
    content_differences,
)
from station.states import UnitState

if TYPE_CHECKING:
    import sqlite_utils  # the log's connection, passed in (a unit's worker never loads sqlite_utils)

    from station.audit import AuditLog

# Journalled tables of this module and how verify() names their rows.
ORDER_TABLES = {"orders": "work order", "order_places": "order place"}

ORDER_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS orders (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id TEXT NOT NULL UNIQUE,
        profile TEXT NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity >= 1),
        due TEXT,
        content TEXT NOT NULL,
        content_sha256 TEXT NOT NULL,
        source_file TEXT NOT NULL,
        file_sha256 TEXT NOT NULL,
        imported_by TEXT NOT NULL,
        imported_at TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
        closed_at TEXT,
        closed_by TEXT,
        close_reason TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS orders_state ON orders(state, id)",
    """
    CREATE TABLE IF NOT EXISTS order_places (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id TEXT NOT NULL REFERENCES orders(order_id),
        place INTEGER NOT NULL CHECK (place >= 1),
        unit_id INTEGER NOT NULL REFERENCES units(id),
        serial TEXT NOT NULL,
        taken_at TEXT NOT NULL,
        released_at TEXT
    )
    """,
    # The guarantee: each place of an order is held by at most one unit at a time...
    """
    CREATE UNIQUE INDEX IF NOT EXISTS order_places_one_unit_per_place
        ON order_places(order_id, place) WHERE released_at IS NULL
    """,
    # ...and there are only `quantity` places.
    """
    CREATE TRIGGER IF NOT EXISTS order_places_within_quantity BEFORE INSERT ON order_places
    WHEN NEW.place > (SELECT quantity FROM orders WHERE order_id = NEW.order_id)
    BEGIN SELECT RAISE(ABORT, 'an order has no place beyond its quantity'); END
    """,
    "CREATE INDEX IF NOT EXISTS order_places_order ON order_places(order_id, unit_id)",
    # A unit takes a place once, when it starts (a resumed unit keeps it): one row per unit at most. Exports read
    # the order of every unit they write through this index.
    "CREATE UNIQUE INDEX IF NOT EXISTS order_places_unit ON order_places(unit_id)",
    """
    CREATE TRIGGER IF NOT EXISTS orders_are_never_deleted BEFORE DELETE ON orders
    BEGIN SELECT RAISE(ABORT, 'work orders are never deleted from the audit log'); END
    """,
)

# Journals one row as it now is, inside the transaction that wrote it (AuditLog._append_event).
Journal = Callable[..., None]
# Takes the unit's place in the fleet too (station.fleet.orders.FleetOrderBook.take_place), or raises OrderRefused.
PlaceTaker = Callable[..., None]

_STATUS_SELECT = """
SELECT o.*,
       (SELECT count(*) FROM order_places AS p JOIN units AS u ON u.id = p.unit_id
        WHERE p.order_id = o.order_id AND p.released_at IS NULL AND u.state = ?) AS passed,
       (SELECT count(*) FROM order_places AS p JOIN units AS u ON u.id = p.unit_id
        WHERE p.order_id = o.order_id AND p.released_at IS NULL AND u.state = ?) AS running,
       (SELECT count(*) FROM order_places AS p JOIN units AS u ON u.id = p.unit_id
        WHERE p.order_id = o.order_id AND p.released_at IS NULL AND u.state = ?) AS failed,
       (SELECT count(*) FROM order_places AS p JOIN units AS u ON u.id = p.unit_id
        WHERE p.order_id = o.order_id AND u.state = ?) AS aborted
FROM orders AS o
"""
# The states _STATUS_SELECT counts, its first parameters.
_STATUS_STATES = [
    UnitState.PASSED.value,
    UnitState.RUNNING.value,
    UnitState.FAILED.value,
    UnitState.ABORTED.value,
]

_BARE_SELECT = "SELECT o.*, 0 AS passed, 0 AS running, 0 AS failed, 0 AS aborted FROM orders AS o"


def statuses(
    db: sqlite_utils.Database, *, state: str | None = None, counts: bool = True
) -> list[OrderStatus]:
    """Every order (or those in ``state``), newest first, with its progress counted from its places
    (``counts=False``: every count 0 — enough to know which order holds a serial, and much cheaper)."""
    where, params = (" WHERE o.state = ?", [state]) if state else ("", [])
    select, params = (_STATUS_SELECT, _STATUS_STATES + params) if counts else (_BARE_SELECT, params)
    return [_status(row) for row in db.query(select + where + " ORDER BY o.id DESC", params)]


def candidates(
    db: sqlite_utils.Database, serial: str, *, order_id: str | None, required: bool
) -> list[OrderStatus]:
    """What :func:`station.orders.choose_order` needs to decide for ``serial``, counted only where it matters.

    The accepted case — runs for every unit, inside its start transaction — counts the places of one order
    only; a refusal counts every order, to name the nearest ones with their progress.
    """
    if order_id is not None:
        named = _by_id(db, order_id)
        if named and named[0].is_open and serial in named[0].order:
            return named
        return statuses(db)
    holding = [status for status in statuses(db, state="open", counts=False) if serial in status.order]
    if len(holding) == 1:
        return _by_id(db, holding[0].order_id)
    if holding:
        return holding  # in several open orders: refused, whatever their progress
    return statuses(db) if required else []


def _by_id(db: sqlite_utils.Database, order_id: str) -> list[OrderStatus]:
    return [
        _status(row)
        for row in db.query(_STATUS_SELECT + " WHERE o.order_id = ?", [*_STATUS_STATES, order_id])
    ]


# long: the order-place rule as one decision table inside start_unit's transaction
def claim_place(
    db: sqlite_utils.Database,
    *,
    unit_id: int,
    serial: str,
    profile: str,
    order_id: str | None,
    required: bool,
    at: str,
    journal: Journal,
    central: PlaceTaker | None = None,
    reprovision: bool = False,
) -> str | None:
    """Give the new unit a place in its order (inside AuditLog.start_unit's transaction); return the order id.

    Raises :class:`OrderRefused` (the transaction, unit included, is then rolled back); returns None when the
    unit needs no order (orders not required and the serial in none).
    """
    chosen = choose_order(
        candidates(db, serial, order_id=order_id, required=required),
        serial,
        order_id=order_id,
        required=required,
    )
    if chosen is None:
        return None
    if chosen.order.profile != profile:
        raise OrderRefused(
            "profile",
            f"serial {serial} belongs to work order {chosen.order_id}, which builds "
            f"profile {chosen.order.profile}, not {profile} — use the order's profile (the fixture's "
            f"or the station's profile setting)",
        )
    held = {
        int(row[0])
        for row in db.execute(
            "SELECT place FROM order_places WHERE order_id = ? AND released_at IS NULL", [chosen.order_id]
        ).fetchall()
    }
    place = next((number for number in range(1, chosen.quantity + 1) if number not in held), None)
    if place is None:  # choose_order saw it free; only a concurrent writer could have taken it since
        raise OrderRefused(
            "full", f"work order {chosen.order_id} has no free place left — another unit took it"
        )
    try:
        pk = (
            db.table("order_places")
            .insert(
                {
                    "order_id": chosen.order_id,
                    "place": place,
                    "unit_id": unit_id,
                    "serial": serial,
                    "taken_at": at,
                }
            )
            .last_pk
        )
    except sqlite3.IntegrityError as exc:
        # The index or the trigger: another station took this place between our read and our write.
        raise OrderRefused(
            "full",
            f"work order {chosen.order_id}: another station took place {place} of "
            f"{chosen.quantity} at the same moment — scan the board again",
        ) from exc
    journal(db, at=at, kind="order.place_taken", table="order_places", pk=int(pk or 0))
    if central is not None:
        # The fleet decides across stations (station.fleet.orders); refused there, this transaction rolls back.
        central(order_id=chosen.order_id, serial=serial, unit_id=unit_id, reprovision=reprovision)
    return chosen.order_id


def release_place(db: sqlite_utils.Database, *, unit_id: int, at: str, journal: Journal) -> None:
    """The unit no longer counts in its order (aborted or superseded): its place is free again."""
    for (pk,) in db.execute(
        "SELECT id FROM order_places WHERE unit_id = ? AND released_at IS NULL", [unit_id]
    ).fetchall():
        db.table("order_places").update(int(pk), {"released_at": at})
        journal(db, at=at, kind="order.place_released", table="order_places", pk=int(pk))


def order_unit_clause(parameter: str = "order_id") -> str:
    """A condition on units ``u`` meaning "counted in the order :parameter" (places released or not)."""
    return f"u.id IN (SELECT p.unit_id FROM order_places AS p WHERE p.order_id = :{parameter})"


class SqliteOrderBook:
    """The orders of one station, in its audit log (see :class:`station.orders.OrderBook`).

    The audit log's companion: it uses the log's connection, lock and journal as :class:`AuditLog` does.
    """

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def import_orders(self, parsed: OrderFile, *, by: str) -> ImportResult:
        if not by.strip():
            raise StationError("who imports the orders is not known — give your name with --by NAME")
        imported: list[str] = []
        unchanged: list[str] = []
        conflicts: dict[str, list[str]] = {}
        with self.audit._change() as db:
            at = self.audit._now_text()
            for order in parsed.orders:
                row = db.execute("SELECT content FROM orders WHERE order_id = ?", [order.order_id]).fetchone()
                if row is not None:
                    recorded = Order.from_content(json.loads(row[0]))
                    if recorded.content_sha256 == order.content_sha256:
                        unchanged.append(order.order_id)
                    else:
                        conflicts[order.order_id] = content_differences(recorded, order) or [
                            "content differs"
                        ]
                    continue
                content = order.content()
                pk = (
                    db.table("orders")
                    .insert(
                        {
                            "order_id": order.order_id,
                            "profile": order.profile,
                            "quantity": order.quantity,
                            "due": content["due"],
                            "content": json.dumps(content, sort_keys=True, separators=(",", ":")),
                            "content_sha256": order.content_sha256,
                            "source_file": parsed.path.name,
                            "file_sha256": parsed.sha256,
                            "imported_by": by.strip(),
                            "imported_at": at,
                            "state": "open",
                        }
                    )
                    .last_pk
                )
                self.audit._append_event(db, at=at, kind="order.imported", table="orders", pk=int(pk or 0))
                imported.append(order.order_id)
            if conflicts:
                # Raised inside the transaction: the orders of this file inserted above are rolled back.
                raise OrderConflict(parsed.path, conflicts)
        return ImportResult(imported=tuple(imported), unchanged=tuple(unchanged))

    # Reads use a private snapshot connection, never the log's lock: a window asking for progress must not wait
    # for a unit's write.
    def orders(self, *, state: str | None = None) -> list[OrderStatus]:
        with self.audit._snapshot() as db:
            return statuses(db, state=state)

    def status(self, order_id: str) -> OrderStatus:
        with self.audit._snapshot() as db:
            rows = list(db.query(_STATUS_SELECT + " WHERE o.order_id = ?", [*_STATUS_STATES, order_id]))
        if not rows:
            raise StationError(f"there is no work order {order_id} — list them with: station order list")
        return _status(rows[0])

    def close(self, order_id: str, *, by: str, reason: str) -> OrderStatus:
        if not by.strip() or not reason.strip():
            raise StationError("closing an order needs who closes it (--by) and why (--reason)")
        with self.audit._change() as db:
            row = db.execute(
                "SELECT id, state, closed_at FROM orders WHERE order_id = ?", [order_id]
            ).fetchone()
            if row is None:
                raise StationError(f"there is no work order {order_id} — list them with: station order list")
            if row[1] == "closed":
                raise StationError(f"work order {order_id} was already closed ({row[2]}); nothing to do")
            at = self.audit._now_text()
            db.table("orders").update(
                int(row[0]),
                {"state": "closed", "closed_at": at, "closed_by": by.strip(), "close_reason": reason.strip()},
            )
            self.audit._append_event(db, at=at, kind="order.closed", table="orders", pk=int(row[0]))
        return self.status(order_id)

    def mirror(self, fleet_orders: list[OrderStatus]) -> None:
        """Record in this log the orders the fleet holds that it lacks, and the closures it has not seen
        (station.fleet.orders): units, exports and the window then work from the local log as without the fleet.
        An order recorded here with other content is left as it is (the fleet decides places)."""
        with self.audit._snapshot() as db:
            local = {
                str(row["order_id"]): str(row["state"])
                for row in db.query("SELECT order_id, state FROM orders")
            }
        due = [
            status
            for status in fleet_orders
            if status.order_id not in local or (status.state == "closed" and local[status.order_id] == "open")
        ]
        if not due:
            return
        with self.audit._change() as db:
            at = self.audit._now_text()
            for status in due:
                row = db.execute(
                    "SELECT id, state FROM orders WHERE order_id = ?", [status.order_id]
                ).fetchone()
                if row is None:
                    content = status.order.content()
                    pk = int(
                        db.table("orders")
                        .insert(
                            {
                                "order_id": status.order_id,
                                "profile": status.order.profile,
                                "quantity": status.quantity,
                                "due": content["due"],
                                "content": json.dumps(content, sort_keys=True, separators=(",", ":")),
                                "content_sha256": status.order.content_sha256,
                                "source_file": status.source_file,
                                "file_sha256": status.file_sha256,
                                "imported_by": f"{status.imported_by} (through the fleet)",
                                "imported_at": at,
                                "state": "open",
                            }
                        )
                        .last_pk
                        or 0
                    )
                    self.audit._append_event(db, at=at, kind="order.imported", table="orders", pk=pk)
                    row = (pk, "open")
                if status.state == "closed" and row[1] == "open":
                    db.table("orders").update(
                        int(row[0]),
                        {
                            "state": "closed",
                            "closed_at": at,
                            "closed_by": f"{status.closed_by} (through the fleet)",
                            "close_reason": status.close_reason or "closed in the fleet",
                        },
                    )
                    self.audit._append_event(db, at=at, kind="order.closed", table="orders", pk=int(row[0]))

    def order_for(self, serial: str, *, order_id: str | None = None, required: bool = False) -> Order | None:
        with self.audit._lock:
            found = candidates(self.audit._db, serial, order_id=order_id, required=required)
        chosen = choose_order(found, serial, order_id=order_id, required=required)
        return chosen.order if chosen else None

    def order_of_unit(self, unit_id: int) -> str | None:
        with self.audit._lock:
            row = self.audit._db.execute(
                "SELECT order_id FROM order_places WHERE unit_id = ?", [unit_id]
            ).fetchone()
        return None if row is None else str(row[0])


def _status(row: dict[str, Any]) -> OrderStatus:
    return OrderStatus(
        order=Order.from_content(json.loads(row["content"])),
        state=row["state"],
        imported_at=datetime.fromisoformat(row["imported_at"]),
        imported_by=row["imported_by"],
        source_file=row["source_file"],
        file_sha256=row["file_sha256"],
        closed_at=datetime.fromisoformat(row["closed_at"]) if row["closed_at"] else None,
        closed_by=row["closed_by"],
        close_reason=row["close_reason"],
        passed=int(row["passed"]),
        running=int(row["running"]),
        failed=int(row["failed"]),
        aborted=int(row["aborted"]),
    )
