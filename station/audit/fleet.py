"""Store-and-forward to the fleet: the journal read in order, and how far the forwarder got."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from station.audit.core import AuditCore

if TYPE_CHECKING:
    # Imported where a connection is made: a unit's worker process uses this module's records, not SQLite.
    import sqlite_utils


# ------------------------------------------------------------------------------------ fleet outbox

# Not journalled and not part of verify(): how far the fleet forwarder got. A new table (created on first use,
# so older logs need no migration); the journal itself is never changed by forwarding.
_FLEET_OUTBOX = """
CREATE TABLE IF NOT EXISTS fleet_outbox (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    forwarded_seq INTEGER NOT NULL,
    updated_at TEXT NOT NULL
)
"""


def _create_fleet_outbox(db: sqlite_utils.Database) -> None:
    db.execute(_FLEET_OUTBOX)


def _fleet_mark(db: sqlite_utils.Database) -> int:
    if (
        db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fleet_outbox'").fetchone()
        is None
    ):
        return 0
    row = db.execute("SELECT forwarded_seq FROM fleet_outbox WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------------------- verification


class FleetForwarding(AuditCore):
    """What the fleet forwarder reads and marks (part of :class:`~station.audit.AuditLog`)."""

    # ------------------------------------------------------------------------ fleet store-and-forward

    def events_after(self, seq: int, *, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` journal events with a sequence number above ``seq``, in order (the fleet forwarder's
        read; its own snapshot, so it never waits for or holds up the workers)."""
        with self._snapshot() as db:
            return list(
                db.query(
                    "SELECT seq, at, kind, unit_id, payload, prev_hash, hash FROM events WHERE seq > ? "
                    "ORDER BY seq LIMIT ?",
                    [seq, limit],
                )
            )

    def event_hashes(self, first: int, last: int) -> dict[int, str]:
        """The hashes of events ``first``..``last`` (for comparing the local journal with the fleet's copy)."""
        with self._snapshot() as db:
            return {
                int(seq): str(digest)
                for seq, digest in db.execute(
                    "SELECT seq, hash FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq", [first, last]
                ).fetchall()
            }

    def fleet_backlog(self) -> tuple[int, int, int, str | None]:
        """(forwarded up to, newest event, events not yet forwarded, time of the oldest of those)."""
        with self._snapshot() as db:
            mark = _fleet_mark(db)
            head = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
            newest = int(head[0])
            oldest = db.execute("SELECT at FROM events WHERE seq > ? ORDER BY seq LIMIT 1", [mark]).fetchone()
        return mark, newest, max(0, newest - mark), (str(oldest[0]) if oldest else None)

    def set_fleet_mark(self, seq: int) -> None:
        """Remember that the fleet holds every event up to ``seq``. Never moves back; a crash before this commit
        only means the events are sent again, which the fleet ignores (idempotent by station and sequence)."""
        with self._change() as db:
            _create_fleet_outbox(db)
            db.execute(
                "INSERT INTO fleet_outbox (id, forwarded_seq, updated_at) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET forwarded_seq = max(forwarded_seq, excluded.forwarded_seq), "
                "updated_at = excluded.updated_at",
                [seq, self._now_text()],
            )
