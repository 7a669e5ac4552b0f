"""Store-and-forward: every event of the local audit journal goes to the fleet, in order, exactly once.

A background thread of whichever station process writes the audit log (the CLI or the GUI) reads the local
``events`` table by sequence number after its mark, inserts them into ``fleet_journal`` in batches — ``ON
CONFLICT (station, seq) DO NOTHING``, so a batch sent twice (a crash after the central commit but before the
local mark) changes nothing — then checks that the fleet holds exactly the hashes it holds locally, and only then
moves the local mark. While the fleet is down, stopped, slow or paused the events simply wait in the local log
(every call has a deadline, see :mod:`station.fleet.connection`); the backlog drains when it answers again.

If the fleet holds a *different* event under one of our sequence numbers, the local log was rewritten or an old
backup restored: forwarding stops (it would otherwise bury the evidence) and the status says which event.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from station.errors import StationError
from station.fleet.connection import FleetError, FleetUnavailable, connect, deadline, first_line

if TYPE_CHECKING:
    import psycopg

    from station.audit import AuditLog
    from station.config import FleetConfig

BATCH_EVENTS = 500
POLL_S = 0.25
SEND_TIMEOUT_S = 10.0
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)
STOP_DRAIN_S = 3.0
STOP_JOIN_S = 2.0

# Test hook (as station.steps.crash_point): STATION_TEST_KILL_AT=fleet_committed kills the process right after
# the fleet committed a batch and before the local mark moved.
KILL_AT_ENV = "STATION_TEST_KILL_AT"

_INSERT = (
    "INSERT INTO fleet_journal (station, seq, at, kind, unit_id, payload, prev_hash, hash) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (station, seq) DO NOTHING"
)


@dataclass(frozen=True)
class FleetStatus:
    """What the status bar and ``station fleet status`` show."""

    state: str  # "online", "offline", "diverged", "starting"
    backlog: int
    oldest_unsent_at: datetime | None
    forwarded_seq: int
    newest_seq: int
    message: str = ""
    last_contact: datetime | None = None

    def oldest_age_s(self, now: datetime | None = None) -> float | None:
        if self.oldest_unsent_at is None:
            return None
        return max(0.0, ((now or datetime.now(UTC)) - self.oldest_unsent_at).total_seconds())

    def summary(self) -> str:
        age = self.oldest_age_s()
        pending = f"{self.backlog} event{'' if self.backlog == 1 else 's'} to send"
        if age is not None:
            pending += f", oldest {format_age(age)} old"
        word = {
            "online": "fleet online",
            "offline": "fleet OFFLINE",
            "diverged": "fleet: LOCAL LOG DIFFERS",
            "starting": "fleet: connecting",
        }.get(self.state, self.state)
        return f"{word} · {pending}"


def format_age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class Divergence(StationError):
    """The fleet holds another event under one of this station's sequence numbers."""

    def __init__(self, seq: int, detail: str) -> None:
        super().__init__(
            f"event {seq} of the local audit log differs from the fleet's copy ({detail}) — the local log was "
            f"rewritten or an old backup restored. Forwarding stopped; run `station audit verify` and tell quality "
            f"assurance."
        )
        self.seq = seq


class Forwarder:
    """The background sender of one station process. :meth:`start` once, :meth:`stop` once."""

    def __init__(self, fleet: FleetConfig, audit: AuditLog) -> None:
        self.fleet = fleet
        self.audit = audit
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._head_checked = False
        mark, newest, backlog, oldest = audit.fleet_backlog()
        self._status = FleetStatus("starting", backlog, _parse(oldest), mark, newest)
        self._status_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ control

    def start(self) -> Forwarder:
        self._thread = threading.Thread(target=self._run, name="fleet-forwarder", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, *, drain_s: float = STOP_DRAIN_S) -> None:
        """Send what can be sent within ``drain_s``, then end the thread. The rest waits in the local log."""
        if self._thread is None:
            return
        if (
            self.status().state != "offline"
        ):  # offline: the events wait for the next program; do not hold this one
            self.flush(drain_s)
        self._stopping.set()
        self._wake.set()
        # Bounded: a send stuck on a frozen server ends at its own deadline, and the thread is a daemon — what it
        # had not committed is still in the local log for the next program.
        self._thread.join(STOP_JOIN_S)
        if not self._thread.is_alive():
            self._drop_connection()
        self._thread = None

    def flush(self, timeout_s: float) -> bool:
        """Wait until every event written so far is in the fleet, at most ``timeout_s``; True if it is."""
        target = self.audit.fleet_backlog()[1]
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            status = self.status()
            if status.forwarded_seq >= target:
                return True
            if status.state == "diverged":
                return False
            self._wake.set()
            time.sleep(0.02)
        return self.status().forwarded_seq >= target

    def status(self) -> FleetStatus:
        """The latest status, without I/O (safe to call from the GUI thread)."""
        with self._status_lock:
            return self._status

    # --------------------------------------------------------------------------------------- the thread

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                sent = self.send_once()
                failures = 0
                if sent:
                    continue  # more may be waiting: no pause between full batches
            except Divergence as exc:
                self._set(state="diverged", message=str(exc))
                self._drop_connection()
                self._wake.wait(5.0)
                self._wake.clear()
                continue
            except (FleetUnavailable, FleetError) as exc:
                self._drop_connection()
                self._set(state="offline", message=str(exc))
                delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
                failures += 1
                self._stopping.wait(delay)
                continue
            except Exception as exc:  # noqa: BLE001 - the line must never stop because forwarding failed
                self._drop_connection()
                self._set(state="offline", message=f"forwarding failed unexpectedly: {first_line(exc)}")
                self._stopping.wait(RETRY_DELAYS_S[-1])
                continue
            self._wake.wait(POLL_S)
            self._wake.clear()

    # long: one forwarding round in order: check the fleet's head, send a batch in one transaction, check it, move the mark
    def send_once(self) -> int:
        """Send one batch of the backlog; return how many events the fleet now holds that it did not before."""
        mark, newest, backlog, oldest = self.audit.fleet_backlog()
        self._set(backlog=backlog, oldest_unsent_at=_parse(oldest), forwarded_seq=mark, newest_seq=newest)
        conn = self._connection()
        if not self._head_checked:
            # A log restored from an old backup is a prefix of what the fleet holds: refuse to write new events
            # under sequence numbers the fleet already has (they would differ) and say so at once.
            with deadline(conn, SEND_TIMEOUT_S, what="reading this station's head in the fleet"):
                row = conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM fleet_journal WHERE station = %s",
                    [self.fleet.station_name],
                ).fetchone()
            fleet_head = int(row[0]) if row else 0
            if fleet_head > newest:
                raise Divergence(
                    newest + 1, f"the fleet holds events up to {fleet_head}, the local log ends at {newest}"
                )
            self._head_checked = True
        events = self.audit.events_after(mark, limit=BATCH_EVENTS)
        if not events:
            self._set(state="online", message="", last_contact=datetime.now(UTC))
            return 0
        station = self.fleet.station_name
        rows = [
            (station, e["seq"], e["at"], e["kind"], e["unit_id"], e["payload"], e["prev_hash"], e["hash"])
            for e in events
        ]
        first, last = int(events[0]["seq"]), int(events[-1]["seq"])
        with deadline(conn, SEND_TIMEOUT_S, what=f"sending events {first}–{last}"):
            with conn.transaction():
                with conn.cursor() as cursor:
                    cursor.executemany(_INSERT, rows)
                central = dict(
                    conn.execute(
                        "SELECT seq, hash FROM fleet_journal WHERE station = %s AND seq BETWEEN %s AND %s",
                        [station, first, last],
                    ).fetchall()
                )
        if os.environ.get(KILL_AT_ENV) == "fleet_committed":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        for event in events:
            held = central.get(int(event["seq"]))
            if held != event["hash"]:
                raise Divergence(
                    int(event["seq"]),
                    "the fleet holds hash " + (held or "nothing")[:16] + "…, this "
                    "station " + str(event["hash"])[:16] + "…",
                )
        self.audit.set_fleet_mark(last)
        mark, newest, backlog, oldest = self.audit.fleet_backlog()
        self._set(
            state="online",
            message="",
            backlog=backlog,
            oldest_unsent_at=_parse(oldest),
            forwarded_seq=mark,
            newest_seq=newest,
            last_contact=datetime.now(UTC),
        )
        return len(events)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = connect(self.fleet.dsn, passfile=self.fleet.passfile)
        try:
            with deadline(conn, SEND_TIMEOUT_S, what="checking this station's registration"):
                row = conn.execute(
                    "SELECT 1 FROM fleet_stations WHERE name = %s", [self.fleet.station_name]
                ).fetchone()
        except BaseException:
            conn.close()
            raise
        if row is None:
            conn.close()
            raise FleetError(
                f"station {self.fleet.station_name!r} is not registered in the fleet — run `station fleet init` "
                f"(the events wait in the local log meanwhile)"
            )
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        self._head_checked = False
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001, S110 - a broken connection may fail to close; it is dropped anyway
                pass
            self._conn = None

    def _set(self, **changes: Any) -> None:
        with self._status_lock:
            self._status = replace(self._status, **changes)


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# --------------------------------------------------------------------------------- one per process

_running: dict[str, Forwarder] = {}
_running_lock = threading.Lock()


def start_forwarder(fleet: FleetConfig | None, audit: AuditLog) -> Forwarder | None:
    """Start this process's forwarder for ``audit`` (None without ``[fleet]``): the one place it is started."""
    if fleet is None:
        return None
    key = str(audit.path)
    with _running_lock:
        forwarder = _running.get(key)
        if forwarder is None:
            forwarder = Forwarder(fleet, audit).start()
            _running[key] = forwarder
        return forwarder


def stop_forwarder(forwarder: Forwarder | None, *, drain_s: float = STOP_DRAIN_S) -> None:
    """Stop it (after sending what can be sent within ``drain_s``): the one place it is stopped."""
    if forwarder is None:
        return
    with _running_lock:
        for key, running in list(_running.items()):
            if running is forwarder:
                del _running[key]
    forwarder.stop(drain_s=drain_s)


def running_forwarder(audit_path: str) -> Forwarder | None:
    with _running_lock:
        return _running.get(audit_path)
