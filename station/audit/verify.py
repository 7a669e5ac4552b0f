"""Integrity: the event chain, the tables against what the events recorded, signed checkpoints; online backup."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from station.audit.checkpoints import (
    CheckpointReport,
    verify_checkpoints,
)
from station.audit.core import AuditCore
from station.audit.records import GENESIS_HASH, AuditBackup, VerifyReport, _canonical_json, _event_hash
from station.audit.schema import AUDITED_TABLES
from station.errors import StationError
from station.files import fsync_directory

if TYPE_CHECKING:
    # Imported where a connection is made: a unit's worker process uses this module's records, not SQLite.
    import sqlite_utils


def _verify_chain(db: sqlite_utils.Database) -> tuple[int, str | None]:
    """Walk the events in order; return how many are sound and the first problem, if any."""
    expected = 1
    prev_hash = GENESIS_HASH
    for event in db.query("SELECT seq, at, kind, unit_id, payload, prev_hash, hash FROM events ORDER BY seq"):
        seq = int(event["seq"])
        if seq != expected:
            gap = (
                f"event {expected} is missing"
                if seq == expected + 1
                else f"events {expected}–{seq - 1} are missing"
            )
            return (
                expected - 1,
                f"{gap} (the journal jumps to event {seq}) — events were deleted outside the station",
            )
        if event["prev_hash"] != prev_hash:
            return expected - 1, (
                f"event {seq} does not follow event {seq - 1} (its link to the previous event is broken) — events "
                f"were inserted, deleted or reordered outside the station"
            )
        recomputed = _event_hash(
            prev_hash=event["prev_hash"],
            seq=seq,
            at=event["at"],
            kind=event["kind"],
            payload=event["payload"],
        )
        if recomputed != event["hash"]:
            return expected - 1, (
                f"event {seq}: hash does not match its content — the record was edited outside the station"
            )
        problem = _payload_problem(event)
        if problem is not None:
            return expected - 1, f"event {seq}: {problem} — the record was edited outside the station"
        prev_hash = event["hash"]
        expected += 1
    count = expected - 1
    # AUTOINCREMENT remembers the highest seq ever written, even after the newest events were deleted.
    written = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    if written is not None and int(written[0]) > count:
        return count, (
            f"the journal ends at event {count} but event {written[0]} was written — the newest events were deleted "
            f"outside the station"
        )
    return count, None


def _payload_problem(event: dict[str, Any]) -> str | None:
    try:
        payload = json.loads(event["payload"])
    except ValueError:
        return "its content is not a valid record"
    if not isinstance(payload, dict) or payload.get("table") not in AUDITED_TABLES:
        return "it records no known table"
    row = payload.get("row")
    pk = payload.get("pk")
    if not isinstance(row, dict) or not isinstance(pk, int) or row.get("id") != pk:
        return "its content is not a valid record"
    if event["unit_id"] != payload.get("unit_id"):
        return "its unit number does not match its content"
    return None


def _verify_tables(db: sqlite_utils.Database) -> str | None:
    """Replay: the last event of every row must hold exactly the row's current values, and vice versa."""
    for table, label in AUDITED_TABLES.items():
        # Both sides come sorted by primary key, so a merge walk needs no memory per row. The bare `payload`
        # column comes from the row holding max(seq) — documented SQLite behaviour.
        recorded = iter(
            db.query(
                "SELECT json_extract(payload, '$.pk') AS pk, max(seq) AS seq, payload FROM events "
                "WHERE json_extract(payload, '$.table') = ? GROUP BY 1 ORDER BY 1",
                [table],
            )
        )
        current = iter(db.query(f"SELECT * FROM {table} ORDER BY id"))  # table comes from AUDITED_TABLES
        event = next(recorded, None)
        row = next(current, None)
        while event is not None or row is not None:
            if row is None or (event is not None and event["pk"] < row["id"]):
                assert event is not None
                return (
                    f"{label} {event['pk']} was deleted outside the station (event {event['seq']} recorded it "
                    f"last)"
                )
            if event is None or row["id"] < event["pk"]:
                return f"{label} {row['id']} was added outside the station (no event records it)"
            expected_row = json.loads(event["payload"])["row"]
            if _canonical_json(row) != _canonical_json(expected_row):
                return _row_problem(label, row, expected_row, event["seq"])
            event = next(recorded, None)
            row = next(current, None)
    return None


def _row_problem(label: str, row: dict[str, Any], recorded: dict[str, Any], seq: int) -> str:
    """Say in plain words how a table row differs from what its last event recorded."""
    name = f"{label} {row['id']}"
    added = [column for column in row if column not in recorded]
    if added:
        return (
            f"{name} has column {', '.join(added)}, which event {seq} did not record — the table was altered "
            f"outside the station"
        )
    missing = [column for column in recorded if column not in row]
    if missing:
        return (
            f"{name} lacks column {', '.join(missing)}, which event {seq} recorded — the table was altered "
            f"outside the station"
        )
    changes = [
        f"{column} is {row[column]!r} but event {seq} recorded {recorded[column]!r}"
        for column in row
        if row[column] != recorded[column]
    ]
    detail = "; ".join(changes) if changes else f"it differs from what event {seq} recorded"
    return f"{name} was edited outside the station: {detail}"


# ------------------------------------------------------------------------------------------- helpers


class Integrity(AuditCore):
    """verify() and backup() (part of :class:`~station.audit.AuditLog`)."""

    # ------------------------------------------------------------------------------------- integrity

    def verify(
        self,
        *,
        trusted: list[x509.Certificate] | None = None,
        require_signed_since: datetime | None = None,
    ) -> VerifyReport:
        """Check the event chain, then that the tables hold exactly what the events recorded.

        With ``trusted`` (the station CA's certificate chain) the signed checkpoints are checked too — and with
        ``require_signed_since``, that every unit ending and revocation since then is signed
        (:func:`station.audit.checkpoints.verify_checkpoints`).  Runs on its own connection and snapshot, so
        workers keep writing meanwhile; memory stays flat however long the log is.
        """
        signed: CheckpointReport | None = None
        with self._snapshot() as db:
            events, problem = _verify_chain(db)
            if problem is None:
                problem = _verify_tables(db)
            if problem is None and trusted is not None:
                signed = verify_checkpoints(db, trusted, require_signed_since=require_signed_since)
                problem = signed.problem
        return VerifyReport(
            ok=problem is None,
            events=events,
            problem=problem,
            checkpoints=signed.checkpoints if signed else None,
            last_signed_seq=signed.last_signed_seq if signed else None,
        )

    def backup(self, path: Path) -> AuditBackup:
        """Write a consistent copy of the whole log to ``path`` with SQLite's online backup; ``path`` is replaced
        whole, or left as it was if anything fails.

        Copying audit.db while a station runs is not a backup: the latest commits may still be in audit.db-wal,
        and a page may be caught half-written. The backup API copies committed pages only, from one read
        snapshot, while other processes keep writing. The copy is one self-contained file (rollback journal, not
        WAL), private to its owner like the log itself, and is checked (SQLite's integrity check, then the hash
        chain and the tables as :meth:`verify` does) before it replaces ``path``. A copy of a log that fails
        :meth:`verify` is still written — it is evidence — and its report says what is wrong.
        """
        target = Path(path).expanduser()
        if not target.parent.is_dir():
            raise StationError(
                f"Cannot write the backup {target}: the folder {target.parent} does not exist. Create it or pick "
                f"another."
            )
        if target.is_dir():
            raise StationError(f"Cannot write the backup {target}: it is a folder. Give a file name.")
        if target.resolve() in {self.path.resolve(), Path(f"{self.path.resolve()}-wal")}:
            raise StationError(f"{target} is the live audit log itself; write the backup to another file.")
        fd, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        os.close(fd)
        temporary = Path(temporary_name)
        try:
            copy = sqlite3.connect(temporary)
            try:
                # Under the lock: this station's own connection is never in the middle of a transaction while
                # its pages are copied (other processes' transactions are SQLite's to isolate).
                with self._lock:
                    self._db.conn.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")
                damage = [str(row[0]) for row in copy.execute("PRAGMA integrity_check")]
                if damage != ["ok"]:
                    raise StationError(
                        f"The copy of the audit log failed SQLite's integrity check ({'; '.join(damage[:3])}) — "
                        f"the disk holding {self.path} or {target.parent} may be failing. Nothing was replaced."
                    )
                import sqlite_utils

                db = sqlite_utils.Database(copy)
                events, problem = _verify_chain(db)
                if problem is None:
                    problem = _verify_tables(db)
                copy.commit()
            finally:
                copy.close()
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temporary, target)
        except sqlite3.Error as exc:
            raise StationError(
                f"Could not write the backup {target} ({exc}) — check there is space in {target.parent} and that "
                f"it is writable, then try again. Nothing was replaced."
            ) from exc
        finally:
            for leftover in (
                temporary,
                Path(f"{temporary}-journal"),
                Path(f"{temporary}-wal"),
                Path(f"{temporary}-shm"),
            ):
                leftover.unlink(missing_ok=True)
        # The rename itself must reach the disk too, or a power cut could bring back the old backup.
        fsync_directory(target.parent)
        return AuditBackup(
            path=target,
            size_bytes=target.stat().st_size,
            report=VerifyReport(ok=problem is None, events=events, problem=problem),
        )
