"""Work orders kept by the fleet: imported once, seen and enforced by every station (schema: order_schema.py).

With ``[fleet]`` configured the station's :class:`station.orders.OrderBook` is :class:`FleetOrderBook`:

* ``station order import`` writes the orders to the fleet (all or none, in one transaction; a conflicting
  re-import is refused with the differences, as locally) and then records them in the local audit log too — the
  hash chain and ``station audit verify`` cover them as before;
* ``order list|show|close`` read and close the fleet's orders; every order the fleet holds is mirrored into the
  local log (imported, closed) when the station reads them, so units, exports, reports and the window keep working
  from the local log;
* a unit's start takes a place in its order in the fleet (``fleet_take_order_place``, decided in PostgreSQL under a
  row lock on the order) inside the local transaction that records the unit: refused there, the unit is not
  recorded and its board is not touched. A serial holds one place per order, whichever station builds it.

Offline (the fleet unreachable within its deadline) follows ``[fleet] offline``: ``refuse`` refuses the unit with
what to do; ``allow-and-flag`` takes the place locally only — the journal carries it to the fleet when the backlog
drains, and the fleet lists an order over-filled that way under ``station fleet conflicts``. Importing and closing
orders always need the fleet (no board waits for them; an order changed on one station only would split the fleet).
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

from station.errors import StationError
from station.fleet.connection import FleetError, FleetUnavailable
from station.fleet.guard import FleetGuard
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
    import psycopg

    from station.audit import AuditLog
    from station.audit.orders import SqliteOrderBook
    from station.config import FleetConfig, StationConfig
    from station.orders import OrderBook

_STATUSES = """
SELECT o.order_id, o.content, o.source_file, o.file_sha256, o.imported_by, o.imported_at,
       c.closed_at, c.closed_by, c.reason,
       count(p.serial) FILTER (WHERE p.released_at IS NULL AND h.state = %s),
       count(p.serial) FILTER (WHERE p.released_at IS NULL AND h.state = %s),
       count(p.serial) FILTER (WHERE p.released_at IS NULL AND h.state = %s),
       count(p.serial) FILTER (WHERE h.state = %s)
FROM fleet_orders o
LEFT JOIN fleet_order_closures c ON c.order_id = o.order_id
LEFT JOIN fleet_order_places p ON p.order_id = o.order_id
LEFT JOIN LATERAL (SELECT fleet_order_holder_state(p.station, p.unit_id, p.serial) AS state) h ON true
{where}
GROUP BY o.order_id, c.order_id
ORDER BY o.imported_at DESC, o.order_id DESC
"""
# The states _STATUSES counts, its first parameters.
_STATUS_STATES = [
    UnitState.PASSED.value,
    UnitState.RUNNING.value,
    UnitState.FAILED.value,
    UnitState.ABORTED.value,
]


# A unit's admission reads the fleet's orders to choose one (a pre-check: the place itself is decided by
# fleet_take_order_place); within this many seconds a burst of admissions shares one read.
STATUS_TTL_S = 1.0

_guards: dict[tuple[str, str], FleetGuard] = {}
_cache: dict[tuple[str, str], tuple[float, list[OrderStatus]]] = {}
_lock = threading.Lock()
_cache_lock = threading.Lock()


def _guard(fleet: FleetConfig) -> FleetGuard:
    """This process's connection for work orders — its own, so that order reads and places never wait behind
    (or hold up) the guard step's fleet checks; same deadlines and offline back-off."""
    key = (fleet.dsn, fleet.station_name)
    with _lock:
        guard = _guards.get(key)
        if guard is None or guard.fleet != fleet:
            guard = _guards[key] = FleetGuard(fleet)
        return guard


def order_book(audit: AuditLog, config: StationConfig) -> OrderBook:
    """The station's order book: the fleet's when ``[fleet]`` is configured, else the audit log's own."""
    if config.fleet is None:
        return audit.orders
    return FleetOrderBook(audit, config.fleet)


class FleetOrderBook:
    """The fleet's orders (a :class:`station.orders.OrderBook`), mirrored into this station's audit log."""

    def __init__(self, audit: AuditLog, fleet: FleetConfig) -> None:
        self.local: SqliteOrderBook = audit.orders
        self.fleet = fleet
        # Set when a read fell back to this station's copy because the fleet did not answer (the CLI says so).
        self.offline_reason: str | None = None

    # -- the OrderBook protocol -----------------------------------------------------------------------

    def import_orders(self, parsed: OrderFile, *, by: str) -> ImportResult:
        if not by.strip():
            raise StationError("who imports the orders is not known — give your name with --by NAME")

        def work(conn: psycopg.Connection[Any]) -> tuple[list[str], list[str], dict[str, list[str]]]:
            import psycopg

            imported: list[str] = []
            unchanged: list[str] = []
            conflicts: dict[str, list[str]] = {}
            with conn.transaction():
                for order in parsed.orders:
                    content = order.content()
                    outcome, recorded = conn.execute(
                        "SELECT * FROM fleet_import_order(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        [
                            order.order_id,
                            order.profile,
                            order.quantity,
                            content["due"],
                            json.dumps(content, sort_keys=True, separators=(",", ":")),
                            order.content_sha256,
                            parsed.path.name,
                            parsed.sha256,
                            by.strip(),
                        ],
                    ).fetchone() or ("conflict", None)
                    if outcome == "imported":
                        imported.append(order.order_id)
                    elif outcome == "unchanged":
                        unchanged.append(order.order_id)
                    else:
                        before = Order.from_content(json.loads(recorded)) if recorded else None
                        conflicts[order.order_id] = (
                            content_differences(before, order) if before else []
                        ) or ["content differs"]
                if conflicts:
                    raise psycopg.Rollback()  # all or none: this file's new orders are not kept either
            return imported, unchanged, conflicts

        try:
            imported, unchanged, conflicts = _guard(self.fleet).run(work, what="importing work orders")
        except (FleetUnavailable, FleetError) as exc:
            raise StationError(
                f"{exc} Work orders live in the fleet ([fleet] in station.toml): nothing was imported — import the "
                f"file again when the fleet answers (station fleet status shows it)"
            ) from None
        if conflicts:
            raise OrderConflict(parsed.path, conflicts)
        # This station's copy, in its audit log (who, when, file, SHA-256), as without the fleet.
        self.local.import_orders(parsed, by=by)
        return ImportResult(imported=tuple(imported), unchanged=tuple(unchanged))

    def orders(self, *, state: str | None = None) -> list[OrderStatus]:
        try:
            found = self._central()
        except (FleetUnavailable, FleetError) as exc:
            self.offline_reason = str(exc)
            return self.local.orders(state=state)
        return [status for status in found if state is None or status.state == state]

    def status(self, order_id: str) -> OrderStatus:
        try:
            found = self._central(order_id)
        except (FleetUnavailable, FleetError) as exc:
            self.offline_reason = str(exc)
            return self.local.status(order_id)
        if not found:
            raise StationError(f"the fleet has no work order {order_id} — list them with: station order list")
        return found[0]

    def close(self, order_id: str, *, by: str, reason: str) -> OrderStatus:
        if not by.strip() or not reason.strip():
            raise StationError("closing an order needs who closes it (--by) and why (--reason)")
        try:
            row = _guard(self.fleet).run(
                lambda conn: conn.execute(
                    "SELECT * FROM fleet_close_order(%s, %s, %s)", [order_id, by.strip(), reason.strip()]
                ).fetchone(),
                what="closing a work order",
            )
        except (FleetUnavailable, FleetError) as exc:
            raise StationError(
                f"{exc} Work orders live in the fleet: the order was not closed — close it again when the fleet "
                f"answers (until then the other stations go on building it)"
            ) from None
        outcome, closed_at, _closed_by, _reason = row or ("unknown", None, None, None)
        if outcome == "unknown":
            raise StationError(f"the fleet has no work order {order_id} — list them with: station order list")
        if outcome == "already":
            raise StationError(f"work order {order_id} was already closed ({closed_at}); nothing to do")
        return self.status(order_id)  # mirrors the closure into the local log

    def order_for(self, serial: str, *, order_id: str | None = None, required: bool = False) -> Order | None:
        try:
            found = self._central_recent()
        except (FleetUnavailable, FleetError) as exc:
            # This station's copy of the orders: a board that needs no order is left to the guard's fleet check.
            local = self.local.order_for(serial, order_id=order_id, required=required)
            if self.fleet.offline == "refuse" and (local is not None or order_id is not None or required):
                raise OrderRefused("offline", self._offline_refusal(exc)) from None
            return local
        chosen = choose_order(found, serial, order_id=order_id, required=required)
        return chosen.order if chosen else None

    def order_of_unit(self, unit_id: int) -> str | None:
        return self.local.order_of_unit(unit_id)

    # -- the place a unit takes (AuditLog.start_unit's hook) --------------------------------------------

    # long: the fleet call and every offline-policy outcome in one place, so no refusal path is missed
    def take_place(self, *, order_id: str, serial: str, unit_id: int, reprovision: bool) -> None:
        """Take (or keep) ``serial``'s place in ``order_id`` in the fleet for unit ``unit_id``; raise
        :class:`OrderRefused` when the fleet refuses — or cannot be asked and the offline policy is "refuse"."""
        try:
            row = _guard(self.fleet).run(
                lambda conn: conn.execute(
                    "SELECT * FROM fleet_take_order_place(%s, %s, %s, %s)",
                    [order_id, serial, unit_id, reprovision],
                ).fetchone(),
                what="taking a place in the work order",
            )
        except (FleetUnavailable, FleetError) as exc:
            if self.fleet.offline == "refuse":
                raise OrderRefused("offline", self._offline_refusal(exc)) from None
            return  # allow-and-flag: the local place stands; the fleet checks it when the journal arrives
        assert row is not None
        (
            granted,
            outcome,
            quantity,
            held,
            passed,
            other_station,
            other_unit,
            other_state,
            closed_at,
            closed_by,
            close_reason,
        ) = row
        if granted:
            return
        if outcome == "unknown":
            raise OrderRefused(
                "unknown",
                f"work order {order_id} is known on this station only, not in the fleet "
                f"(imported before the station joined it?) — import its file again (station order "
                f"import FILE): then every station counts its boards",
            )
        if outcome == "closed":
            when = closed_at.astimezone().strftime("%Y-%m-%d %H:%M") if closed_at else "?"
            raise OrderRefused(
                "closed",
                f"work order {order_id} was closed on {when} by {closed_by} (station "
                f"{other_station}: {close_reason}): it accepts no further board — pick an open "
                f"order, or ask the quality lead for a new order",
            )
        if outcome == "held":
            raise OrderRefused(
                "held",
                f"serial {serial} already holds a place in work order {order_id} on station "
                f"{other_station} (unit {other_unit}, {other_state}) — a serial counts once in an "
                f"order: finish or abort it there first",
            )
        if outcome == "complete":
            raise OrderRefused(
                "complete",
                f"work order {order_id} is complete ({passed} of {quantity} passed "
                f"across the fleet): it accepts no further board — set this board aside and pick "
                f"the next order",
            )
        raise OrderRefused(
            "full",
            f"work order {order_id} has no free place: {passed} passed and "
            f"{held - passed} still being worked on across the fleet make its quantity {quantity} — "
            f"finish (Retry) or abort those boards first",
        )

    # -- reading the fleet ----------------------------------------------------------------------------

    def _central(self, order_id: str | None = None) -> list[OrderStatus]:
        where, params = ("WHERE o.order_id = %s", [order_id]) if order_id else ("", [])
        rows = _guard(self.fleet).run(
            lambda conn: conn.execute(_STATUSES.format(where=where), [*_STATUS_STATES, *params]).fetchall(),  # noqa: S608 - fixed text
            what="reading the work orders",
        )
        found = [_status(tuple(row)) for row in rows]
        self.local.mirror(found)
        return found

    def _central_recent(self) -> list[OrderStatus]:
        """The fleet's orders as read at most STATUS_TTL_S ago (admissions in a burst share one read)."""
        key = (self.fleet.dsn, self.fleet.station_name)
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < STATUS_TTL_S:
                return hit[1]
            found = self._central()
            _cache[key] = (time.monotonic(), found)
            return found

    def _offline_refusal(self, exc: StationError) -> str:
        return (
            f'{exc} This station\'s offline policy is "refuse": work orders are counted by the fleet, and no '
            f"board is enrolled without it — restore the network or the fleet server, then scan the board "
            f"again (nothing touched it)"
        )


def _status(row: tuple[Any, ...]) -> OrderStatus:
    (
        _order_id,
        content,
        source_file,
        file_sha256,
        imported_by,
        imported_at,
        closed_at,
        closed_by,
        reason,
        passed,
        running,
        failed,
        aborted,
    ) = row
    return OrderStatus(
        order=Order.from_content(json.loads(content)),
        state="closed" if closed_at is not None else "open",
        imported_at=imported_at,
        imported_by=imported_by,
        source_file=source_file,
        file_sha256=file_sha256,
        closed_at=closed_at,
        closed_by=closed_by,
        close_reason=reason,
        passed=int(passed),
        running=int(running),
        failed=int(failed),
        aborted=int(aborted),
    )
