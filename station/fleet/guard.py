"""The guard step's questions to the fleet, asked before a board is touched.

* Has this serial passed, or is it running, on another station? Is the board's SSH host key already known as
  another serial's? One call to ``fleet_check_unit`` answers both and *claims* the serial: the claims table's
  primary key makes exactly one of two stations that scan the same serial at the same moment proceed.
* Was the token's public key certified anywhere in the fleet (asked when the key is read back, at check_csr)?

When the fleet cannot be reached within its deadline the ``offline`` policy of ``[fleet]`` decides:
``allow-and-flag`` goes on with the local checks only and marks the guard record (the fleet lists such units, and
any clash they caused, under ``station fleet conflicts`` once the backlog drains); ``refuse`` stops the unit with
what to do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from station.errors import StationError
from station.fleet.connection import FleetError, FleetUnavailable, connect, deadline
from station.states import UnitState

if TYPE_CHECKING:
    import psycopg

    from station.config import FleetConfig

T = TypeVar("T")

CHECK_TIMEOUT_S = 3.0
# After a failed connection the guard does not try again for this long (each unit would otherwise wait for the
# connect timeout while the network is down); the forwarder keeps probing meanwhile.
OFFLINE_BACKOFF_S = 5.0
# Written into the guard step's record when the fleet was not asked; the fleet flags such units on arrival.
UNCHECKED_MARK = "fleet: not checked"


class FleetRefusal(StationError):
    """The fleet says this board must not be provisioned here now; the message names where and when."""


@dataclass(frozen=True)
class GuardVerdict:
    checked: bool
    text: str


class FleetGuard:
    """One connection per process, shared by the units' threads (checks are short and serialised)."""

    def __init__(self, fleet: FleetConfig) -> None:
        self.fleet = fleet
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._offline_until = 0.0
        self._offline_reason = ""

    def check_unit(
        self, *, serial: str, unit_id: int, reprovision: bool, host_key: str | None
    ) -> GuardVerdict:
        """Ask the fleet; raise :class:`FleetRefusal`, or return what to record (per the offline policy)."""
        try:
            row = self._ask(
                "SELECT * FROM fleet_check_unit(%s, %s, %s, %s)", [serial, unit_id, reprovision, host_key]
            )
        except (FleetUnavailable, FleetError) as exc:
            return self._offline(exc)
        assert row is not None
        granted, reason, other_station, other_line, other_serial, other_state, since = row
        if granted:
            return GuardVerdict(
                True, f"fleet: serial {serial} claimed for this station; no other station holds it"
            )
        where = f"station {other_station} (line {other_line or '—'}) since {_when(since)}"
        if reason == "host key":
            raise FleetRefusal(
                f"the fleet knows this board's host key as board {other_serial} ({other_state} on {where}) — the "
                f"label may be swapped or the board re-imaged with another identity; check the label, and re-onboard "
                f"the board on purpose only with quality assurance"
            )
        verb: dict[str, str] = {
            UnitState.PASSED: "already passed",
            UnitState.RUNNING: "is being provisioned",
            UnitState.FAILED: "has an unfinished unit",
        }
        raise FleetRefusal(
            f"board {serial} {verb.get(str(other_state), str(other_state))} on {where} — do not provision it twice: "
            + (
                "re-provision it with a reason if it must be enrolled again"
                if other_state == UnitState.PASSED
                else "finish or abort it there first"
            )
        )

    def public_key_holder(self, spki_sha256: str) -> str | None:
        """Where the fleet certified this public key (a sentence), or None. Offline: per the offline policy."""
        try:
            row = self._ask(
                """
                SELECT c.station, s.line, c.issued_at, u.serial FROM fleet_certificates c
                JOIN fleet_stations s ON s.name = c.station
                LEFT JOIN fleet_units u ON u.station = c.station AND u.unit_id = c.unit_id
                WHERE c.spki_sha256 = %s ORDER BY c.issued_at LIMIT 1
                """,
                [spki_sha256.lower()],
            )
        except (FleetUnavailable, FleetError) as exc:
            self._offline(exc)
            return None
        if row is None:
            return None
        station, line, issued_at, serial = row
        return f"board {serial} on station {station} (line {line or '—'}) on {_when(issued_at)}"

    def _offline(self, exc: StationError) -> GuardVerdict:
        if self.fleet.offline == "refuse":
            raise FleetRefusal(
                f"{exc} This station's offline policy is \"refuse\": no board is provisioned without the fleet's "
                f"check — restore the network or the fleet server, then press Retry"
            ) from None
        return GuardVerdict(
            False,
            f"{UNCHECKED_MARK} ({exc}); allowed by offline = allow-and-flag — the fleet flags this unit and "
            f"lists any clash after the backlog drains",
        )

    def _ask(self, query: str, params: list[Any]) -> tuple[Any, ...] | None:
        def one(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            row = conn.execute(query, params).fetchone()
            return None if row is None else tuple(row)

        return self.run(one, what="the guard's fleet check")

    def run(self, work: Callable[[psycopg.Connection[Any]], T], *, what: str) -> T:
        """Run ``work`` on this process's fleet connection, within the check deadline (:class:`FleetUnavailable`
        past it or while the fleet was just found unreachable; :class:`FleetError` when it refuses)."""
        with self._lock:
            if time.monotonic() < self._offline_until:
                raise FleetUnavailable(self._offline_reason)
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(
                        self.fleet.dsn, passfile=self.fleet.passfile, connect_timeout_s=int(CHECK_TIMEOUT_S)
                    )
                with deadline(self._conn, CHECK_TIMEOUT_S, what=what):
                    return work(self._conn)
            except FleetUnavailable as exc:
                self._close()
                self._offline_until = time.monotonic() + OFFLINE_BACKOFF_S
                self._offline_reason = str(exc)
                raise
            except FleetError:
                self._close()
                raise
            except Exception as exc:
                import psycopg

                self._close()
                if isinstance(exc, psycopg.Error):
                    raise FleetError(f"The fleet database refused {what}: {exc}") from None
                raise

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001, S110 - dropped anyway
                pass
            self._conn = None


def _when(moment: datetime | None) -> str:
    return "an unknown time" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M")


_guards: dict[tuple[str, str], FleetGuard] = {}
_guards_lock = threading.Lock()


def fleet_guard(fleet: FleetConfig) -> FleetGuard:
    """This process's guard for ``fleet`` (one connection per process and fleet)."""
    key = (fleet.dsn, fleet.station_name)
    with _guards_lock:
        guard = _guards.get(key)
        if guard is None or guard.fleet != fleet:
            guard = _guards[key] = FleetGuard(fleet)
        return guard
