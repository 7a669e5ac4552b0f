"""The audit log's connection, its lock and transactions, and the hash-chained journal every change writes:
what every part of :class:`~station.audit.AuditLog` builds on."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.audit.checkpoints import SCHEMA as CHECKPOINT_SCHEMA
from station.audit.checkpoints import (
    SIGNED_KINDS,
    CheckpointSigner,
    write_checkpoint,
)
from station.audit.orders import (
    ORDER_SCHEMA,
)
from station.audit.people import PEOPLE_SCHEMA
from station.audit.records import (
    GENESIS_HASH,
    AuditLogUnavailable,
    CertificateRecord,
    Unit,
    _canonical_json,
    _certificate_from_row,
    _event_hash,
    _timestamp,
    _unit_from_row,
    _utc_now,
)
from station.audit.schema import _CLAIM_WRITE_LOCK, _SCHEMA, _UNIT_SELECT, SCHEMA_VERSION, _insert
from station.audit.service import SERVICE_SCHEMA
from station.errors import StationError

if TYPE_CHECKING:
    # Imported where a connection is made: a unit's worker process uses this module's records, not SQLite.
    import sqlite_utils


# How long a write waits for another process' transaction before giving up ("database is locked").
# Below this much free space SQLite's "disk I/O error" means the disk is full.
DISK_FULL_BYTES = 1 << 20
BUSY_TIMEOUT_S = 5.0


def _connect(path: Path, *, check_same_thread: bool) -> sqlite_utils.Database:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=check_same_thread)
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    # FULL: a commit is on disk when it returns — a certificate is recorded before it is pushed to the board.
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    return db


class AuditCore:
    """The connection, transactions and journal of :class:`~station.audit.AuditLog` (see its docstring)."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime] | None = None) -> None:
        """Open the audit database at ``path``, creating it (mode 0600) and its schema when missing.

        ``clock`` returns the current time as an aware datetime; tests pass a fixed one.
        """
        self.path = Path(path)
        self._clock = clock or _utc_now
        # One connection shared by worker threads: every use of it holds this lock (never re-entered).
        self._lock = threading.Lock()
        # Signs the chain's head after every unit ending and revocation (station.audit.checkpoints), if attached.
        self._signer: CheckpointSigner | None = None
        self._signature_due = False
        # Each journalled table's primary key column (see _journal_row).
        self._primary_keys: dict[str, str] = {}
        # Threads inside grouped_commits(); the connection's synchronous setting is made theirs per change.
        self._grouping = threading.local()
        # The file (and its -wal/-shm companions, which SQLite creates with the file's mode) must be private
        # from birth; umask is process-wide, so AuditLogs are best opened before worker threads start.
        previous_umask = os.umask(0o077)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = _connect(self.path, check_same_thread=False)
            try:
                self._db.enable_wal()
                self._create_schema()
            except BaseException:
                self._db.close()
                raise
        except sqlite3.OperationalError as exc:
            mapped = self._unavailable(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            os.umask(previous_umask)

    def _unavailable(self, exc: sqlite3.OperationalError) -> AuditLogUnavailable | None:
        """What a person needs to hear when SQLite cannot write: fail closed, and say what to do."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            return AuditLogUnavailable(
                f"The audit log {self.path} stayed busy for {BUSY_TIMEOUT_S:g} s (another station program is "
                f"writing to it). Nothing was recorded. Press Retry; if it repeats, close other station windows."
            )
        try:
            disk_full = shutil.disk_usage(self.path.parent).free < DISK_FULL_BYTES
        except OSError:
            disk_full = False
        if "full" in text or disk_full:
            return AuditLogUnavailable(
                f"The disk holding the audit log {self.path} is full. Nothing was recorded. Free some space, "
                f"then press Retry."
            )
        if "readonly" in text or "read-only" in text or "disk I/O error" in text or "unable to open" in text:
            return AuditLogUnavailable(
                f"The audit log {self.path} cannot be written ({text}): the disk is read-only or failing. "
                "Nothing was recorded and no certificate left the station. Check the disk, then press Retry."
            )
        return None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def grouped_commits(self) -> Iterator[None]:
        """Changes this thread makes inside commit without waiting for the disk (SQLite ``synchronous=NORMAL``
        in WAL mode); other threads' changes meanwhile commit as ever (``synchronous=FULL``).

        They survive the station's process being killed at once (they are in the WAL); a power cut may lose
        them until the next ordinary (``synchronous=FULL``) commit or :meth:`make_durable`, which write them to
        disk.  The engine groups the calls of many units this way and makes them durable with one flush
        before it answers any of them (a certificate leaves the station only after its record is on disk);
        step records need no flush of their own at all.
        """
        previous = getattr(self._grouping, "active", False)
        self._grouping.active = True
        try:
            yield
        finally:
            self._grouping.active = previous

    def make_durable(self) -> None:
        """Write every change committed so far to disk — what a ``synchronous=FULL`` commit does for its own
        (in WAL mode: flush the WAL file; a checkpoint flushes the database file itself)."""
        try:
            descriptor = os.open(self.path.with_name(self.path.name + "-wal"), os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL: every commit has been checkpointed into the (flushed) database file
        except OSError as exc:
            raise self._unavailable(sqlite3.OperationalError(f"disk I/O error ({exc})")) or exc from exc
        try:
            os.fsync(descriptor)
        except OSError as exc:
            raise self._unavailable(sqlite3.OperationalError(f"disk I/O error ({exc})")) or exc from exc
        finally:
            os.close(descriptor)

    # ------------------------------------------------------------------------------- signed checkpoints

    def attach_checkpoint_signer(self, signer: CheckpointSigner | None) -> None:
        """Sign the chain's head with ``signer`` after every unit ending and revocation, in the same transaction."""
        with self._lock:
            self._signer = signer

    def checkpoint(self) -> int | None:
        """Sign the chain's current head now (e.g. after changes made without the token); return its sequence."""
        if self._signer is None:
            raise StationError("No signing key is attached to the audit log — unlock the station CA first.")
        with self._change() as db:
            self._signature_due = False
            return write_checkpoint(db, self._signer, at=self._now_text())

    # -------------------------------------------------------------------------------------- internals

    def _create_schema(self) -> None:
        with self._lock:
            found = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if found > SCHEMA_VERSION:
                raise StationError(
                    f"The audit log {self.path} was written by a newer version of the station (schema {found}, "
                    f"this version knows {SCHEMA_VERSION}). Update the station software; do not edit the file."
                )
            with self._db.atomic() as db:
                db.execute(_CLAIM_WRITE_LOCK)
                for statement in (
                    *_SCHEMA,
                    *ORDER_SCHEMA,
                    *CHECKPOINT_SCHEMA,
                    *PEOPLE_SCHEMA,
                    *SERVICE_SCHEMA,
                ):
                    db.execute(statement)

    @contextmanager
    def _change(self) -> Iterator[sqlite_utils.Database]:
        """One transaction for one change: its rows and their events commit together, or not at all."""
        grouped = getattr(self._grouping, "active", False)
        try:
            with self._lock:
                if grouped:
                    self._db.execute("PRAGMA synchronous = NORMAL")
                try:
                    with self._db.atomic() as db:
                        db.execute(_CLAIM_WRITE_LOCK)
                        self._signature_due = False
                        yield db
                        if self._signature_due and self._signer is not None:
                            self._sign_head(db)
                finally:
                    if grouped:
                        self._db.execute("PRAGMA synchronous = FULL")
        except sqlite3.OperationalError as exc:
            mapped = self._unavailable(exc)
            if mapped is None:
                raise
            raise mapped from exc

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite_utils.Database]:
        """A private read-only connection inside one read transaction: a consistent view for long reads."""
        db = _connect(self.path, check_same_thread=True)
        try:
            db.execute("PRAGMA query_only = ON")
            with db.atomic():
                yield db
        finally:
            db.close()

    def _sign_head(self, db: sqlite_utils.Database) -> None:
        try:
            write_checkpoint(db, self._signer, at=self._now_text())  # type: ignore[arg-type]
        except StationError:
            # The token went away: the change itself must not be lost. The next checkpoint signs this head too
            # (it covers everything before it); until then `station audit verify` reports it unsigned.
            pass

    def _now_text(self) -> str:
        return _timestamp(self._clock())

    def _unit(self, db: sqlite_utils.Database, unit_id: int) -> Unit:
        rows = list(db.query(_UNIT_SELECT + " WHERE u.id = ?", [unit_id]))
        if not rows:
            raise StationError(
                f"There is no unit {unit_id} in the audit log — check the number (station units)."
            )
        return _unit_from_row(rows[0])

    def _require_unit(self, db: sqlite_utils.Database, unit_id: int) -> None:
        """:meth:`_unit`'s check that the unit exists, without reading and parsing its row (a step record's)."""
        if db.execute("SELECT 1 FROM units WHERE id = ?", [unit_id]).fetchone() is None:
            raise StationError(
                f"There is no unit {unit_id} in the audit log — check the number (station units)."
            )

    def _certificate(self, db: sqlite_utils.Database, cert_id: int) -> CertificateRecord:
        return _certificate_from_row(db.table("certificates").get(cert_id))

    def _append_event(self, db: sqlite_utils.Database, *, at: str, kind: str, table: str, pk: int) -> None:
        """Journal the row ``table``/``pk`` as it now is; must run inside the change that wrote it."""
        row = self._journal_row(db, table, pk)
        # Orders and fixture host-key records belong to no unit; every other journalled row does.
        unit_id = pk if table == "units" else row.get("unit_id")
        payload = _canonical_json({"table": table, "pk": pk, "unit_id": unit_id, "row": row})
        head = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (int(head[0]) + 1, str(head[1])) if head else (1, GENESIS_HASH)
        if kind in SIGNED_KINDS:
            self._signature_due = True
        _insert(
            db,
            "events",
            {
                "seq": seq,
                "at": at,
                "kind": kind,
                "unit_id": unit_id,
                "payload": payload,
                "prev_hash": prev_hash,
                "hash": _event_hash(prev_hash=prev_hash, seq=seq, at=at, kind=kind, payload=payload),
            },
        )

    def _journal_row(self, db: sqlite_utils.Database, table: str, pk: int) -> dict[str, Any]:
        """The row as ``db.table(table).get(pk)`` gives it, without sqlite-utils' schema look-ups on every
        call (its primary key's name is looked up once per table): the engine journals every unit's rows."""
        key = self._primary_keys.get(table)
        if key is None:
            keys = db.table(table).pks
            if len(keys) != 1:
                return dict(db.table(table).get(pk))
            key = self._primary_keys.setdefault(table, keys[0])
        cursor = db.execute(f"SELECT * FROM [{table}] WHERE [{key}] = ?", [pk])
        values = cursor.fetchone()
        if values is None:
            from sqlite_utils.db import NotFoundError

            raise NotFoundError(f"no row {pk} in {table}")
        return dict(zip([column[0] for column in cursor.description], values, strict=True))
