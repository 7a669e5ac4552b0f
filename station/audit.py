"""The audit log: the station's record of every board it enrolled, and the only module that touches SQLite.

Four tables live in one SQLite file below the station home:

* ``units`` — one row per attempt to enrol a board (serial), with its state and outcome;
* ``steps`` — every step outcome of every unit (identify, guard, wipe, … tls_proof);
* ``certificates`` — every certificate the station issued, and its revocation;
* ``events`` — an append-only journal. Every change writes its table row(s) *and* one event per row, carrying
  the full new row, in the same transaction. Events are hash-chained (each hash covers the previous hash), so
  :meth:`AuditLog.verify` notices rows or events edited, deleted, added or reordered behind the station's back
  (DB browser, ``sqlite3`` shell, a restored old copy of one table).

Work orders add two journalled tables, ``orders`` and ``order_places`` (see :mod:`station.audit_orders`): a unit
takes its place in its order in the transaction that starts it.

This is tamper *evidence* against such edits, not a signature: somebody who knows this scheme can recompute a
whole forged chain, and removing the newest events together with their rows is only noticed through SQLite's
own ``sqlite_sequence`` bookkeeping. Anchoring the chain head outside the station would close that gap.

Sharing: one :class:`AuditLog` may be used by many worker threads (batch mode) — one connection, one lock.
Several processes (the GUI and a ``station`` command) may open the same file at once; SQLite's locking with a
busy timeout serialises their writes, and a partial UNIQUE index guarantees that a board (serial) has at most
one current unit, even when two stations scan it at the same moment.

Nothing secret is stored here: PINs and passphrases are masked upstream, and certificates are stored as
re-encoded certificates only (never whatever else the PEM text passed in contained).

A board has at most one valid certificate from this station: recording a new certificate for a board revokes
its earlier ones (reason ``superseded``) in the same transaction.

Quality leads read the log through filtered, paged queries (:meth:`AuditLog.units_page`,
:meth:`AuditLog.count_units`) and :meth:`AuditLog.yield_summary`, all aggregated in SQL on indexed columns so
that they stay fast on a log of a million units.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from station.audit_checkpoints import SCHEMA as CHECKPOINT_SCHEMA
from station.audit_checkpoints import (
    SIGNED_KINDS,
    CheckpointReport,
    CheckpointSigner,
    verify_checkpoints,
    write_checkpoint,
)
from station.audit_orders import (
    ORDER_SCHEMA,
    ORDER_TABLES,
    PlaceTaker,
    SqliteOrderBook,
    claim_place,
    order_unit_clause,
    release_place,
)
from station.audit_people import PEOPLE_SCHEMA, PEOPLE_TABLES
from station.audit_service import SERVICE_SCHEMA, SERVICE_TABLES
from station.errors import StationError
from station.files import fsync_directory
from station.orders import OrderStatus
from station.states import StepOutcome, UnitState

if TYPE_CHECKING:
    # Imported where a connection is made: a unit's worker process uses this module's records, not SQLite.
    import sqlite_utils

    from station.identity_log import IdentityConflicts, IdentityRecord

UNIT_STATES = ("running", "failed", "passed", "aborted", "superseded")
UNIT_RESULTS = ("passed", "failed", "aborted")
STEP_OUTCOMES = ("passed", "failed", "skipped", "retrying")

# How long a write waits for another process' transaction before giving up ("database is locked").
# Below this much free space SQLite's "disk I/O error" means the disk is full.
DISK_FULL_BYTES = 1 << 20
BUSY_TIMEOUT_S = 5.0

# Version of the schema below, kept in SQLite's user_version header field.
SCHEMA_VERSION = 1

# prev_hash of event 1.
GENESIS_HASH = "0" * 64

# Revocation reason recorded when a board's newer certificate replaces an older one (an RFC 5280 reason name,
# so the CRL carries the reason code).
SUPERSEDED_REASON = "superseded"
# Revocation reason of the certificate of a unit that ended failed or aborted (given up, restarted, set aside):
# the board may hold it, but the line did not accept that board with it.
UNIT_ENDED_REASON = "cessationOfOperation"

# What :meth:`AuditLog.units_page` can sort by, and the column each sorts on. Every one has an index that ends
# with the unit id, so ORDER BY <column>, id reads the index in order instead of sorting the table.
UNIT_SORT_KEYS = {
    "id": "u.id",
    "serial": "u.serial",
    "started_at": "u.started_at",
    "state": "u.state",
    "operator": "u.operator",
    "batch": "u.batch",
    "fixture": "u.fixture",
    "failed_step": "u.failed_step",
    "station": "u.station",
}

# The step whose duration distribution the yield summary reports: key generation on the token is the slow,
# hardware-bound step whose drift shows a failing batch of boards first.
KEYGEN_STEP = "keygen"
DURATION_QUANTILES = (0.5, 0.9, 0.95, 0.99)
DURATION_HISTOGRAM_BINS = 20

# The columns of an export, in this order: nothing beyond them ever leaves the station in an export.
EXPORT_FIELDS = (
    "unit_id",
    "serial",
    "state",
    "profile",
    "device",
    "fixture",
    "batch",
    "operator",
    "station",
    "started_at",
    "ended_at",
    "duration_s",
    "failed_step",
    "message",
    "attempt",
    "certificate_serial",
    "certificate_fingerprint",
    "revoked_at",
    "reprovision_reason",
    "soc_id",
    "order_id",
)

# Tables whose every row is journalled by events; all have an INTEGER PRIMARY KEY named id.
AUDITED_TABLES = {"units": "unit", "steps": "step record", "certificates": "certificate record",
                  "label_prints": "label print", **ORDER_TABLES,
                  # Board identity (station/identity_log.py): the silicon each unit ran on, the fixtures' host keys.
                  "unit_identity": "board identity record", "fixture_host_keys": "fixture host-key record",
                  # People (station/people.py): enrolments, credential changes, lockouts, sign-ins.
                  **PEOPLE_TABLES,
                  # The station service (station/audit_service.py): who asked for what, who ran each unit.
                  **SERVICE_TABLES}

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS units (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        serial TEXT NOT NULL,
        profile TEXT NOT NULL,
        device TEXT NOT NULL,
        fixture TEXT,
        batch TEXT,
        operator TEXT NOT NULL,
        station TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('running', 'failed', 'passed', 'aborted', 'superseded')),
        attempt INTEGER NOT NULL CHECK (attempt >= 1),
        started_at TEXT NOT NULL,
        ended_at TEXT,
        failed_step TEXT,
        message TEXT,
        host_key_type TEXT,
        host_key_fingerprint TEXT,
        reprovision_reason TEXT,
        superseded_by INTEGER REFERENCES units(id)
    )
    """,
    # The one guarantee that must hold between threads *and* processes: a board has at most one current
    # unit. A check-then-insert in Python could race; the index cannot.
    """
    CREATE UNIQUE INDEX IF NOT EXISTS units_one_current_per_serial
        ON units(serial) WHERE state IN ('running', 'failed', 'passed')
    """,
    "CREATE INDEX IF NOT EXISTS units_serial ON units(serial)",
    "CREATE INDEX IF NOT EXISTS units_started_at ON units(started_at)",
    "CREATE INDEX IF NOT EXISTS units_state ON units(state, id)",
    "CREATE INDEX IF NOT EXISTS units_operator ON units(operator, id)",
    "CREATE INDEX IF NOT EXISTS units_batch ON units(batch, id)",
    "CREATE INDEX IF NOT EXISTS units_fixture ON units(fixture, id)",
    "CREATE INDEX IF NOT EXISTS units_failed_step ON units(failed_step, id)",
    # Added after schema 1 shipped; IF NOT EXISTS builds it on the first open of an older file. Indexes are not
    # journalled, so verify() is unaffected.
    "CREATE INDEX IF NOT EXISTS units_station ON units(station, id)",
    # The yield summary's counts by state and attempt (with first and last start) read this index alone.
    "CREATE INDEX IF NOT EXISTS units_state_attempt ON units(state, attempt, started_at)",
    """
    CREATE TABLE IF NOT EXISTS steps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        unit_id INTEGER NOT NULL REFERENCES units(id),
        step TEXT NOT NULL,
        attempt INTEGER NOT NULL CHECK (attempt >= 1),
        outcome TEXT NOT NULL CHECK (outcome IN ('passed', 'failed', 'skipped', 'retrying')),
        started_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        output_sha256 TEXT,
        excerpt TEXT NOT NULL,
        message TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS steps_unit ON steps(unit_id, id)",
    "CREATE INDEX IF NOT EXISTS steps_step_outcome ON steps(step, outcome, id)",
    # Failed attempts by step for the yield summary: a short range of a covering index, whatever the log's size.
    "CREATE INDEX IF NOT EXISTS steps_outcome_step ON steps(outcome, step, unit_id)",
    """
    CREATE TABLE IF NOT EXISTS certificates (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        unit_id INTEGER NOT NULL REFERENCES units(id),
        serial_hex TEXT NOT NULL,
        fingerprint_sha256 TEXT NOT NULL UNIQUE,
        spki_sha256 TEXT NOT NULL UNIQUE,
        subject TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        pem TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        revoked_at TEXT,
        revocation_reason TEXT,
        revoked_by TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS certificates_unit ON certificates(unit_id, id)",
    "CREATE INDEX IF NOT EXISTS certificates_serial ON certificates(serial_hex)",
    "CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates(revoked_at) WHERE revoked_at IS NOT NULL",
    # Every label sent (or not sent) to a label printer for a unit: automatic prints on PASS and reprints.
    """
    CREATE TABLE IF NOT EXISTS label_prints (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        unit_id INTEGER NOT NULL REFERENCES units(id),
        at TEXT NOT NULL,
        by TEXT NOT NULL,
        printer TEXT NOT NULL,
        reprint INTEGER NOT NULL CHECK (reprint IN (0, 1)),
        printed INTEGER NOT NULL CHECK (printed IN (0, 1)),
        message TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS label_prints_unit ON label_prints(unit_id, id)",
    # Board identity (station/identity_log.py): the SoC unique id a unit read from the board, and each
    # pin of a fixture's host key (the inventory's history; the fixture file holds the current key).
    """
    CREATE TABLE IF NOT EXISTS unit_identity (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        unit_id INTEGER NOT NULL REFERENCES units(id),
        soc_id TEXT NOT NULL,
        soc_id_source TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS unit_identity_unit ON unit_identity(unit_id, id)",
    "CREATE INDEX IF NOT EXISTS unit_identity_soc ON unit_identity(soc_id, unit_id)",
    "CREATE INDEX IF NOT EXISTS units_host_key ON units(host_key_fingerprint) WHERE host_key_fingerprint IS NOT NULL",
    """
    CREATE TABLE IF NOT EXISTS fixture_host_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        fixture TEXT NOT NULL,
        device TEXT NOT NULL,
        key_type TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        previous_fingerprint TEXT,
        file TEXT NOT NULL,
        pinned_by TEXT NOT NULL,
        pinned_at TEXT NOT NULL
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS unit_identity_is_append_only_update BEFORE UPDATE ON unit_identity
    BEGIN SELECT RAISE(ABORT, 'board identity records are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS unit_identity_is_append_only_delete BEFORE DELETE ON unit_identity
    BEGIN SELECT RAISE(ABORT, 'board identity records are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS fixture_host_keys_are_append_only_update BEFORE UPDATE ON fixture_host_keys
    BEGIN SELECT RAISE(ABORT, 'fixture host-key records are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS fixture_host_keys_are_append_only_delete BEFORE DELETE ON fixture_host_keys
    BEGIN SELECT RAISE(ABORT, 'fixture host-key records are append-only'); END
    """,
    # The issuance quota counts certificates by issue time.
    "CREATE INDEX IF NOT EXISTS certificates_issued_at ON certificates(issued_at)",
    """
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        unit_id INTEGER,
        payload TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )
    """,
    # Guards against honest mistakes in a DB browser; verify() is what catches a determined editor.
    """
    CREATE TRIGGER IF NOT EXISTS events_are_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the audit event journal is append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS events_are_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the audit event journal is append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS steps_are_append_only_update BEFORE UPDATE ON steps
    BEGIN SELECT RAISE(ABORT, 'step records are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS steps_are_append_only_delete BEFORE DELETE ON steps
    BEGIN SELECT RAISE(ABORT, 'step records are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS units_are_never_deleted BEFORE DELETE ON units
    BEGIN SELECT RAISE(ABORT, 'units are never deleted from the audit log'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS certificates_are_never_deleted BEFORE DELETE ON certificates
    BEGIN SELECT RAISE(ABORT, 'certificates are never deleted from the audit log'); END
    """,
)

# Every change transaction starts with this statement. Setting user_version writes the file header, so the
# transaction holds SQLite's write lock from its first statement on. Without it, a transaction that reads first
# (the chain head, the unit's state) and writes later fails at once with "database is locked" — instead of
# waiting — whenever another process committed in between (WAL mode cannot upgrade a stale read snapshot).
_CLAIM_WRITE_LOCK = f"PRAGMA user_version = {SCHEMA_VERSION}"

_UNIT_SELECT = """
SELECT u.*,
       c.serial_hex AS certificate_serial,
       c.fingerprint_sha256 AS certificate_fingerprint,
       c.revoked_at AS certificate_revoked_at
FROM units AS u
LEFT JOIN certificates AS c ON c.id = (SELECT max(id) FROM certificates WHERE unit_id = u.id)
"""

# Unit columns holding free text that someone typed or configured: what a CSV export must keep a spreadsheet
# from running as a formula. (States, timestamps and hex digests cannot start with = + - @.)
_FREE_TEXT_COLUMNS = frozenset(
    {"serial", "profile", "device", "fixture", "batch", "operator", "station", "failed_step", "message",
     "reprovision_reason"}
)  # fmt: skip


def _export_select(*, neutralise: bool) -> str:
    """The export columns in EXPORT_FIELDS order except duration_s (computed), read as plain tuples.

    An export of a million units spends its time per row, so rows skip the Unit records and sqlite_utils'
    dicts — and for CSV, SQLite itself keeps a spreadsheet from running a cell as a formula (CSV injection)
    by prefixing text that starts with = + - @ tab or carriage return with '.
    """

    def column(name: str) -> str:
        if not neutralise or name not in _FREE_TEXT_COLUMNS:
            return f"u.{name}"
        return (
            f"CASE WHEN substr(u.{name}, 1, 1) IN ('=', '+', '-', '@', char(9), char(13)) "
            f"THEN '''' || u.{name} ELSE u.{name} END"
        )

    unit_columns = ("id", "serial", "state", "profile", "device", "fixture", "batch", "operator", "station",
                    "started_at", "ended_at", "failed_step", "message", "attempt")  # fmt: skip
    return (
        f"SELECT {', '.join(column(name) for name in unit_columns)}, "
        f"c.serial_hex, c.fingerprint_sha256, c.revoked_at, {column('reprovision_reason')} "
        "FROM units AS u "
        "LEFT JOIN certificates AS c ON c.id = (SELECT max(id) FROM certificates WHERE unit_id = u.id)"
    )


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Unit:
    """One attempt to enrol one board, as recorded."""

    id: int
    serial: str
    profile: str
    device: str
    fixture: str | None
    batch: str | None
    operator: str
    station: str
    state: UnitState
    attempt: int
    started_at: datetime
    ended_at: datetime | None
    failed_step: str | None
    message: str | None
    host_key_type: str | None
    host_key_fingerprint: str | None
    reprovision_reason: str | None
    superseded_by: int | None
    certificate_serial: str | None
    certificate_fingerprint: str | None
    certificate_revoked_at: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None while the unit has not ended."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class StepRecord:
    """One outcome of one step of a unit (a retried step has one record per try)."""

    id: int
    unit_id: int
    step: str
    attempt: int
    outcome: StepOutcome
    started_at: datetime
    ended_at: datetime
    output_sha256: str | None
    excerpt: str
    message: str

    @property
    def duration_s(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class CertificateRecord:
    """A certificate the station issued to a unit, and its revocation if any."""

    unit_id: int
    serial_number: int
    serial_hex: str
    fingerprint_sha256: str
    spki_sha256: str
    subject: str
    not_before: datetime
    not_after: datetime
    pem: str
    issued_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None
    revoked_by: str | None = None


@dataclass(frozen=True)
class LabelPrint:
    """A label sent to a label printer for a unit (``printed`` False: the printer refused, ``message`` says why)."""

    id: int
    unit_id: int
    at: datetime
    by: str
    printer: str
    reprint: bool
    printed: bool
    message: str


@dataclass(frozen=True)
class RevokedCertificate:
    """What a CRL needs of one revoked certificate."""

    serial_number: int
    revoked_at: datetime
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of :meth:`AuditLog.verify`: ``problem`` names the first broken record in plain words."""

    ok: bool
    events: int
    problem: str | None
    # Signed checkpoints checked (None: signatures were not checked) and the last event they cover.
    checkpoints: int | None = None
    last_signed_seq: int | None = None


@dataclass(frozen=True)
class AuditBackup:
    """Outcome of :meth:`AuditLog.backup`: the copy written, its size, and its own verification."""

    path: Path
    size_bytes: int
    report: VerifyReport


@dataclass(frozen=True)
class UnitFilter:
    """Which units a query, export or report covers: every field given narrows it, None means any.

    ``result`` is the unit's state; ``since`` (inclusive) and ``until`` (exclusive) bound its start.
    """

    serial_prefix: str | None = None
    result: str | None = None
    operator: str | None = None
    batch: str | None = None
    fixture: str | None = None
    failed_step: str | None = None
    station: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Units counted in this work order (see station.orders).
    order: str | None = None


@dataclass(frozen=True)
class HistogramBin:
    """Values ``low <= v < high`` (the last bin also holds ``high``) and how many there were."""

    low: float
    high: float
    count: int


@dataclass(frozen=True)
class DurationStats:
    """The distribution of one step's durations in seconds; every figure is None when there are none."""

    count: int
    min_s: float | None
    max_s: float | None
    mean_s: float | None
    # (p, value): nearest-rank quantiles, value = the ceil(p·count)-th smallest duration.
    quantiles: tuple[tuple[float, float], ...]
    histogram: tuple[HistogramBin, ...]

    def quantile(self, p: float) -> float | None:
        return dict(self.quantiles).get(p)


@dataclass(frozen=True)
class YieldSummary:
    """How a batch or a period went.

    Counts are of units (attempts to enrol a board) started in the period. A *superseded* unit counts as passed:
    only a passed unit can be superseded, by a later re-provisioning of its board. Rates are over *finished*
    units: a unit still running has no result yet, and counting it as "not passed" would make a live batch's
    yield drop by the number of boards on the fixtures.
    """

    since: datetime | None
    until: datetime | None
    batch: str | None
    units: int
    running: int
    passed: int
    passed_first_attempt: int
    failed: int
    aborted: int
    superseded: int
    # When the first and the last of these units started; None when there are none.
    first_started: datetime | None
    last_started: datetime | None
    # Failed attempts by the step that failed them, most first — including attempts later resumed or restarted.
    failures_by_step: tuple[tuple[str, int], ...]
    keygen: DurationStats

    @property
    def finished(self) -> int:
        return self.units - self.running

    @property
    def pass_rate(self) -> float | None:
        """Passed units / finished units; None when none has finished."""
        return self.passed / self.finished if self.finished else None

    @property
    def first_pass_yield(self) -> float | None:
        """Units that passed at their first attempt (never resumed) / finished units; None when none finished."""
        return self.passed_first_attempt / self.finished if self.finished else None


# ---------------------------------------------------------------------------------------------- errors


class SerialAlreadyPassed(StationError):
    """The board was already enrolled successfully; enrolling it again needs a reprovision reason."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        super().__init__(
            f"Board {unit.serial} was already provisioned successfully (unit {unit.id}, "
            f"{_local_text(unit.ended_at or unit.started_at)}). Scan the next board — or, if this board really "
            f'must be enrolled again, reprovision it with --reprovision --reason "…".'
        )


class UnitAlreadyActive(StationError):
    """The board already has an unfinished (running or failed) unit."""

    def __init__(self, serial: str, unit: Unit | None) -> None:
        self.serial = serial
        self.unit = unit
        if unit is None:
            message = (
                f"Board {serial} was started by another station or fixture at the same moment. "
                f"Check which fixture holds it (station units --serial {serial}) before scanning it again."
            )
        elif unit.state == "running":
            message = (
                f"Board {serial} is already being provisioned (unit {unit.id}, started "
                f"{_local_text(unit.started_at)} by {unit.operator} at {unit.station}). If that run was "
                f"interrupted (crash, power loss), use --resume to continue unit {unit.id}."
            )
        else:
            step = f" at step {unit.failed_step}" if unit.failed_step else ""
            message = (
                f"Board {serial} has an unfinished unit {unit.id} that failed{step}. Use --resume to continue "
                f"unit {unit.id} (Retry), or --restart to abandon it and start this board over."
            )
        super().__init__(message)


class AuditLogUnavailable(StationError):
    """The audit log could not be written just now (busy beyond the timeout, disk full); nothing was recorded."""


class PublicKeyReused(StationError):
    """A certificate for a public key that already has one: two boards (or two tries) share a key."""

    def __init__(self, spki_sha256: str, holder: CertificateRecord | None) -> None:
        self.spki_sha256 = spki_sha256
        self.holder = holder
        owner = f" (issued to unit {holder.unit_id}, {holder.subject})" if holder else ""
        super().__init__(
            f"This public key already has a certificate{owner}; a device key must be unique. Nothing was "
            f"issued. Do not push the certificate: run the keygen step again on this board so it makes a new key."
        )


# ------------------------------------------------------------------------------------------- the log


class AuditLog:
    """The station's audit database: units, their steps, certificates, and the hash-chained event journal.

    Every public method is safe to call from several threads at once.
    """

    def __init__(self, path: Path, *, clock: Callable[[], datetime] | None = None) -> None:
        """Open the audit database at ``path``, creating it (mode 0600) and its schema when missing.

        ``clock`` returns the current time as an aware datetime; tests pass a fixed one.
        """
        self.path = Path(path)
        self._clock = clock or _utc_now
        # One connection shared by worker threads: every use of it holds this lock (never re-entered).
        self._lock = threading.Lock()
        # Signs the chain's head after every unit ending and revocation (station.audit_checkpoints), if attached.
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

    @property
    def orders(self) -> SqliteOrderBook:
        """The work orders recorded in this log (station.orders)."""
        return SqliteOrderBook(self)

    def unit_work_order(self, unit_id: int) -> OrderStatus | None:
        """The work order a unit holds a place in, as it stands now (None: the unit is in no order)."""
        book = self.orders
        order_id = book.order_of_unit(unit_id)
        return None if order_id is None else book.status(order_id)

    # -- board identity (station/identity_log.py): what a unit's steps ask, also from a worker ----------

    def record_soc_id(self, unit_id: int, *, soc_id: str, source: str) -> None:
        """Record the SoC unique id unit ``unit_id`` read from its board (once per distinct id)."""
        from station.identity_log import IdentityLog

        IdentityLog(self).record_soc_id(unit_id, soc_id=soc_id, source=source)

    def unit_soc_id(self, unit_id: int) -> IdentityRecord | None:
        """The SoC id unit ``unit_id`` last recorded (None: none yet)."""
        from station.identity_log import IdentityLog

        return IdentityLog(self).soc_id_of(unit_id)

    def identity_conflicts(
        self, unit_id: int, *, soc_id: str | None, host_key_fingerprint: str | None
    ) -> IdentityConflicts:
        """Other enrolments that unit ``unit_id``'s board (SoC id, host key) or serial clash with."""
        from station.identity_log import IdentityLog

        return IdentityLog(self).conflicts(unit_id, soc_id=soc_id, host_key_fingerprint=host_key_fingerprint)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    # ----------------------------------------------------------------------------------------- units

    def start_unit(
        self,
        *,
        serial: str,
        profile: str,
        device: str,
        operator: str,
        station: str,
        fixture: str | None = None,
        batch: str | None = None,
        reprovision_reason: str | None = None,
        order: str | None = None,
        orders_required: bool = False,
        take_place: PlaceTaker | None = None,
    ) -> Unit:
        """Record that provisioning of board ``serial`` starts now; return the new running unit.

        Refused with :class:`SerialAlreadyPassed` when the board already passed and no reprovision reason is
        given, and with :class:`UnitAlreadyActive` while the board has a running or failed unit. With a
        reason, the passed unit becomes 'superseded' by the new one in the same transaction.

        The unit takes a place in its work order (``order``, or the open order holding the serial) in the same
        transaction; :class:`station.orders.OrderRefused` (nothing recorded) when it may not — no open order
        holds the serial while ``orders_required``, the order is closed, complete or for another profile.
        ``take_place`` (with ``[fleet]``: station.fleet.orders) takes the place in the fleet too, inside the same
        transaction — refused there, nothing is recorded here either.
        """
        for name, value in (
            ("serial", serial),
            ("profile", profile),
            ("device", device),
            ("operator", operator),
            ("station", station),
        ):
            if not value or not value.strip():
                raise ValueError(f"start_unit needs a non-empty {name}")
        reason = reprovision_reason.strip() if reprovision_reason else None
        try:
            with self._change() as db:
                at = self._now_text()
                superseded: int | None = None
                if reason:
                    row = db.execute(
                        "SELECT id FROM units WHERE serial = ? AND state = 'passed'", [serial]
                    ).fetchone()
                    if row is not None:
                        superseded = int(row[0])
                        # Leaves the current-unit index first, so the new unit can take its place.
                        db.table("units").update(superseded, {"state": "superseded"})
                unit_id = _insert(
                    db,
                    "units",
                    {
                        "serial": serial,
                        "profile": profile,
                        "device": device,
                        "fixture": fixture,
                        "batch": batch,
                        "operator": operator,
                        "station": station,
                        "state": "running",
                        "attempt": 1,
                        "started_at": at,
                        "reprovision_reason": reason or None,
                    },
                )
                if superseded is not None:
                    db.table("units").update(superseded, {"superseded_by": unit_id})
                    self._append_event(db, at=at, kind="unit.superseded", table="units", pk=superseded)
                    release_place(db, unit_id=superseded, at=at, journal=self._append_event)
                self._append_event(db, at=at, kind="unit.started", table="units", pk=unit_id)
                claim_place(db, unit_id=unit_id, serial=serial, profile=profile, order_id=order,
                            required=orders_required, at=at, journal=self._append_event, central=take_place,
                            reprovision=reason is not None)
                return self._unit(db, unit_id)
        except sqlite3.IntegrityError as exc:
            if "units.serial" not in str(exc):
                raise
            current = self.find_unit(serial)
            if current is not None and current.state == "passed":
                raise SerialAlreadyPassed(current) from None
            raise UnitAlreadyActive(serial, current) from None

    def resume_unit(self, unit_id: int) -> Unit:
        """Continue a failed unit (or one left 'running' by a crash): running again, attempt + 1."""
        with self._change() as db:
            unit = self._unit(db, unit_id)
            if unit.state not in ("failed", "running"):
                raise StationError(
                    f"Unit {unit_id} (board {unit.serial}) is {unit.state} and cannot be resumed — only a failed "
                    f"or interrupted unit can. Start a new unit for the board instead."
                )
            db.table("units").update(
                unit_id,
                {
                    "state": "running",
                    "attempt": unit.attempt + 1,
                    "ended_at": None,
                    "failed_step": None,
                    "message": None,
                },
            )
            self._append_event(db, at=self._now_text(), kind="unit.resumed", table="units", pk=unit_id)
            return self._unit(db, unit_id)

    def finish_unit(
        self,
        unit_id: int,
        *,
        result: str,
        failed_step: str | None = None,
        message: str | None = None,
        revocation_reason: str | None = None,
    ) -> Unit:
        """End a unit as passed, failed or aborted.

        A running unit can end any way; a failed unit can only be aborted (the board is given up or will be
        started over).  A unit ending failed or aborted has its certificates revoked in the same transaction
        (``revocation_reason``, else ``cessationOfOperation``): whichever executor ends the unit, a board set
        aside keeps no valid identity.  Resuming it makes a new key and certificate.
        """
        if result not in UNIT_RESULTS:
            raise ValueError(f"result must be one of {', '.join(UNIT_RESULTS)}, not {result!r}")
        if result == "passed" and failed_step is not None:
            raise ValueError("a passed unit has no failed step")
        with self._change() as db:
            unit = self._unit(db, unit_id)
            allowed = (
                UNIT_RESULTS if unit.state == "running" else ("aborted",) if unit.state == "failed" else ()
            )
            if result not in allowed:
                raise StationError(
                    f"Unit {unit_id} (board {unit.serial}) is {unit.state}; it cannot be marked {result}."
                    + (" Resume it first." if unit.state == "failed" else "")
                )
            at = self._now_text()
            db.table("units").update(
                unit_id, {"state": result, "ended_at": at, "failed_step": failed_step, "message": message}
            )
            self._append_event(db, at=at, kind=f"unit.{result}", table="units", pk=unit_id)
            if result == "aborted":
                release_place(db, unit_id=unit_id, at=at, journal=self._append_event)
            if result != "passed":
                # Same transaction: a board the line set aside never holds a certificate that is still valid.
                self._revoke_unit_certificates(
                    db, unit, at=at, reason=revocation_reason or UNIT_ENDED_REASON, by=f"station (unit {result})"
                )
            return self._unit(db, unit_id)

    def _revoke_unit_certificates(
        self, db: sqlite_utils.Database, unit: Unit, *, at: str, reason: str, by: str
    ) -> None:
        """Revoke every still-valid certificate issued to ``unit`` (it ended failed or aborted)."""
        rows = db.execute(
            "SELECT id FROM certificates WHERE unit_id = ? AND revoked_at IS NULL ORDER BY id", [unit.id]
        ).fetchall()
        for (cert_id,) in rows:
            db.table("certificates").update(
                cert_id, {"revoked_at": at, "revocation_reason": reason, "revoked_by": by}
            )
            self._append_event(db, at=at, kind="certificate.revoked", table="certificates", pk=int(cert_id))

    def pin_host_key(self, unit_id: int, *, key_type: str, fingerprint: str) -> None:
        """Remember the SSH host key the device showed; a different key later in the same unit is refused."""
        if not key_type or not fingerprint:
            raise ValueError("pin_host_key needs a key type and a fingerprint")
        with self._change() as db:
            unit = self._unit(db, unit_id)
            if unit.host_key_fingerprint is not None:
                if (unit.host_key_type, unit.host_key_fingerprint) == (key_type, fingerprint):
                    return
                raise StationError(
                    f"The device of unit {unit_id} (board {unit.serial}) now shows host key {key_type} "
                    f"{fingerprint}, but {unit.host_key_type} {unit.host_key_fingerprint} was pinned earlier in "
                    f"this unit. Another machine may be answering at its address — stop, check the fixture "
                    f"cabling and network, then resume."
                )
            if unit.state != "running":
                raise StationError(f"Unit {unit_id} is {unit.state}; host keys are pinned while a unit runs.")
            db.table("units").update(
                unit_id, {"host_key_type": key_type, "host_key_fingerprint": fingerprint}
            )
            self._append_event(
                db, at=self._now_text(), kind="unit.host_key_pinned", table="units", pk=unit_id
            )

    def unit(self, unit_id: int) -> Unit:
        with self._lock:
            return self._unit(self._db, unit_id)

    def find_unit(self, serial: str) -> Unit | None:
        """The current unit of a board: running, failed or passed (and not superseded); None if none."""
        with self._lock:
            rows = list(
                self._db.query(
                    _UNIT_SELECT + " WHERE u.serial = ? AND u.state IN ('running', 'failed', 'passed')",
                    [serial],
                )
            )
        return _unit_from_row(rows[0]) if rows else None

    def units(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        serial_prefix: str | None = None,
        result: str | None = None,
        operator: str | None = None,
        batch: str | None = None,
        fixture: str | None = None,
        failed_step: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Unit]:
        """Units matching every given filter, newest first.

        ``result`` filters on the unit's state; ``since`` (inclusive) and ``until`` (exclusive) on its start.
        """
        return self.units_page(
            offset=offset,
            limit=limit,
            filters=UnitFilter(
                serial_prefix=serial_prefix,
                result=result,
                operator=operator,
                batch=batch,
                fixture=fixture,
                failed_step=failed_step,
                since=since,
                until=until,
            ),
        )

    def units_page(
        self,
        *,
        offset: int = 0,
        limit: int = 200,
        order_by: str = "id",
        descending: bool = True,
        filters: UnitFilter | None = None,
    ) -> list[Unit]:
        """One page of the units matching ``filters``, sorted by ``order_by`` (a key of UNIT_SORT_KEYS).

        Ties (and rows without a batch, fixture or failed step) are ordered by unit id in the same direction,
        so pages never overlap or skip a unit while nothing is added. New units arriving between two pages
        shift a newest-first listing by that many rows: callers that page lazily re-query on refresh.
        """
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        column = UNIT_SORT_KEYS.get(order_by)
        if column is None:
            raise ValueError(f"order_by must be one of {', '.join(UNIT_SORT_KEYS)}, not {order_by!r}")
        direction = "DESC" if descending else "ASC"
        clauses, params = _unit_filter(filters or UnitFilter())
        params.update(limit=limit, offset=offset)
        order = f"u.id {direction}" if column == "u.id" else f"{column} {direction}, u.id {direction}"
        # Ids first, rows after: the filter, sort and OFFSET run on narrow index entries, and only the page's
        # rows are read whole and joined to their certificate.
        page = f"SELECT u.id FROM units AS u{_where(clauses)} ORDER BY {order} LIMIT :limit OFFSET :offset"
        sql = _UNIT_SELECT + f" WHERE u.id IN ({page}) ORDER BY {order}"
        with self._lock:
            rows = list(self._db.query(sql, params))
        return [_unit_from_row(row) for row in rows]

    def count_units(self, filters: UnitFilter | None = None) -> int:
        """How many units match ``filters``."""
        clauses, params = _unit_filter(filters or UnitFilter())
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM units AS u" + _where(clauses), params).fetchone()
        return int(row[0])

    def unfinished_units(self) -> list[Unit]:
        """Units that are running or failed, oldest first — what a station offers to resume after a restart."""
        with self._lock:
            rows = list(
                self._db.query(_UNIT_SELECT + " WHERE u.state IN ('running', 'failed') ORDER BY u.id")
            )
        return [_unit_from_row(row) for row in rows]

    # ----------------------------------------------------------------------------------------- steps

    def record_step(
        self,
        unit_id: int,
        *,
        step: str,
        attempt: int,
        outcome: str,
        started_at: datetime,
        ended_at: datetime,
        output_sha256: str | None = None,
        excerpt: str = "",
        message: str = "",
    ) -> None:
        """Record one outcome of one step. ``excerpt`` is stored as given: mask secrets before calling."""
        if outcome not in STEP_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(STEP_OUTCOMES)}, not {outcome!r}")
        if not step:
            raise ValueError("record_step needs a step name")
        row = {
            "unit_id": unit_id,
            "step": step,
            "attempt": attempt,
            "outcome": outcome,
            "started_at": _timestamp(started_at),
            "ended_at": _timestamp(ended_at),
            "output_sha256": output_sha256,
            "excerpt": excerpt,
            "message": message,
        }
        with self._change() as db:
            self._unit(db, unit_id)
            step_id = _insert(db, "steps", row)
            self._append_event(db, at=self._now_text(), kind="step.recorded", table="steps", pk=step_id)

    def steps(self, unit_id: int) -> list[StepRecord]:
        """Every step record of a unit, in the order they were recorded."""
        with self._lock:
            rows = list(self._db.query("SELECT * FROM steps WHERE unit_id = ? ORDER BY id", [unit_id]))
        return [_step_from_row(row) for row in rows]

    def step_durations(self, *, profile: str, step: str, limit: int = 50) -> list[float]:
        """Durations in seconds of the most recent passed runs of ``step`` under ``profile``, newest first."""
        with self._lock:
            rows = list(
                self._db.query(
                    """
                    SELECT s.started_at, s.ended_at FROM steps AS s JOIN units AS u ON u.id = s.unit_id
                    WHERE s.step = ? AND s.outcome = 'passed' AND u.profile = ?
                    ORDER BY s.id DESC LIMIT ?
                    """,
                    [step, profile, limit],
                )
            )
        return [(_parse_time(r["ended_at"]) - _parse_time(r["started_at"])).total_seconds() for r in rows]

    # ---------------------------------------------------------------------------------- certificates

    def record_certificate(self, unit_id: int, *, certificate_pem: bytes) -> CertificateRecord:
        """Record a certificate issued to a running unit; it is on disk (fsync'd) when this returns.

        The caller pushes the certificate to the device only afterwards, so no certificate is ever in the
        field without a record. A public key that already has a certificate raises :class:`PublicKeyReused`.
        """
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        spki_sha256 = hashlib.sha256(spki).hexdigest()
        row = {
            "unit_id": unit_id,
            # Hex text: certificate serials are up to 159 bits, beyond SQLite's 64-bit integers.
            "serial_hex": format(certificate.serial_number, "x"),
            "fingerprint_sha256": certificate.fingerprint(hashes.SHA256()).hex(),
            "spki_sha256": spki_sha256,
            "subject": certificate.subject.rfc4514_string(),
            "not_before": _timestamp(certificate.not_valid_before_utc),
            "not_after": _timestamp(certificate.not_valid_after_utc),
            # Re-encoded: only the certificate is kept, whatever else the PEM text held.
            "pem": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        }
        try:
            with self._change() as db:
                unit = self._unit(db, unit_id)
                if unit.state != "running":
                    raise StationError(
                        f"Unit {unit_id} (board {unit.serial}) is {unit.state}; certificates are issued only to a "
                        f"running unit. Nothing was recorded — do not push this certificate."
                    )
                at = self._now_text()
                cert_id = _insert(db, "certificates", {**row, "issued_at": at})
                self._append_event(db, at=at, kind="certificate.issued", table="certificates", pk=cert_id)
                self._revoke_superseded(db, unit, at=at, newest=cert_id)
                return self._certificate(db, cert_id)
        except sqlite3.IntegrityError as exc:
            if "certificates.spki_sha256" not in str(exc) and "certificates.fingerprint_sha256" not in str(
                exc
            ):
                raise
            with self._lock:
                holders = list(
                    self._db.query("SELECT * FROM certificates WHERE spki_sha256 = ?", [spki_sha256])
                )
            raise PublicKeyReused(
                spki_sha256, _certificate_from_row(holders[0]) if holders else None
            ) from None

    def _revoke_superseded(self, db: sqlite_utils.Database, unit: Unit, *, at: str, newest: int) -> None:
        """Revoke (reason 'superseded') every earlier valid certificate of the unit's board.

        Done when the replacement is recorded, not when a re-provisioning starts: until then the board may
        still hold its old key and certificate (a re-provisioning given up before its wipe step leaves the
        board as it was), and revoking early would break a working board for nothing. From here on the old
        key is gone (keygen runs on a wiped token) and the new certificate replaces the old one — the same
        holds for a certificate issued earlier in the same unit, before a resume made a new key.
        """
        earlier = db.execute(
            """
            SELECT c.id FROM certificates AS c JOIN units AS u ON u.id = c.unit_id
            WHERE u.serial = ? AND c.revoked_at IS NULL AND c.id <> ? ORDER BY c.id
            """,
            [unit.serial, newest],
        ).fetchall()
        for (cert_id,) in earlier:
            db.table("certificates").update(
                cert_id,
                {"revoked_at": at, "revocation_reason": SUPERSEDED_REASON, "revoked_by": unit.operator},
            )
            self._append_event(
                db, at=at, kind="certificate.superseded", table="certificates", pk=int(cert_id)
            )

    def public_key_seen(self, spki_sha256: str) -> bool:
        """True if a certificate was already issued for the public key with this SPKI SHA-256 (hex)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM certificates WHERE spki_sha256 = ?", [spki_sha256.lower()]
            ).fetchone()
        return row is not None

    def certificate_for_unit(self, unit_id: int) -> CertificateRecord | None:
        """The newest certificate issued to a unit, or None."""
        with self._lock:
            rows = list(
                self._db.query(
                    "SELECT * FROM certificates WHERE unit_id = ? ORDER BY id DESC LIMIT 1", [unit_id]
                )
            )
        return _certificate_from_row(rows[0]) if rows else None

    def revoke(self, *, serial: str, reason: str, by: str) -> CertificateRecord:
        """Revoke the newest certificate issued to board ``serial``; return it as revoked."""
        if not reason.strip() or not by.strip():
            raise ValueError("a revocation needs a reason and the name of who revokes")
        with self._change() as db:
            row = db.execute(
                """
                SELECT c.id FROM certificates AS c JOIN units AS u ON u.id = c.unit_id
                WHERE u.serial = ? ORDER BY c.id DESC LIMIT 1
                """,
                [serial],
            ).fetchone()
            if row is None:
                raise StationError(
                    f"No certificate was issued to board {serial} by this station — check the serial. "
                    f"Nothing was revoked."
                )
            cert_id = int(row[0])
            current = self._certificate(db, cert_id)
            if current.revoked_at is not None:
                raise StationError(
                    f"The certificate of board {serial} (serial {current.serial_hex}) was already revoked on "
                    f"{_local_text(current.revoked_at)} ({current.revocation_reason}). Nothing to do."
                )
            at = self._now_text()
            db.table("certificates").update(
                cert_id, {"revoked_at": at, "revocation_reason": reason, "revoked_by": by}
            )
            self._append_event(db, at=at, kind="certificate.revoked", table="certificates", pk=cert_id)
            return self._certificate(db, cert_id)

    def record_label_print(
        self, unit_id: int, *, by: str, printer: str, reprint: bool, printed: bool, message: str
    ) -> LabelPrint:
        """Journal one label sent to (or refused by) a label printer for unit ``unit_id``."""
        with self._change() as db:
            self._unit(db, unit_id)
            at = self._now_text()
            pk = _insert(db, "label_prints", {"unit_id": unit_id, "at": at, "by": by, "printer": printer,
                                              "reprint": int(reprint), "printed": int(printed), "message": message})
            self._append_event(db, at=at, kind="label.reprinted" if reprint else "label.printed",
                               table="label_prints", pk=pk)
            return _label_print_from_row(db.table("label_prints").get(pk))

    def label_prints(self, unit_id: int) -> list[LabelPrint]:
        """The unit's label prints, oldest first."""
        with self._lock:
            rows = self._db.query("SELECT * FROM label_prints WHERE unit_id = ? ORDER BY id", [unit_id])
            return [_label_print_from_row(row) for row in rows]
    def certificates_issued_since(self, moment: datetime) -> int:
        """How many certificates were recorded at or after ``moment`` (the issuance quota's count)."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM certificates WHERE issued_at >= ?", [_timestamp(moment)]
            ).fetchone()
        return int(row[0])

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

    def revoked_certificates(self) -> list[RevokedCertificate]:
        """Every revoked certificate, in the order of revocation (what the CRL lists)."""
        with self._lock:
            rows = list(
                self._db.query(
                    "SELECT serial_hex, revoked_at, revocation_reason FROM certificates "
                    "WHERE revoked_at IS NOT NULL ORDER BY revoked_at, id"
                )
            )
        return [
            RevokedCertificate(
                serial_number=int(r["serial_hex"], 16),
                revoked_at=_parse_time(r["revoked_at"]),
                reason=r["revocation_reason"],
            )
            for r in rows
        ]

    # ----------------------------------------------------------------------------------------- yield

    def yield_summary(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        batch: str | None = None,
        order: str | None = None,
    ) -> YieldSummary:
        """How the units started in ``[since, until)`` (and of ``batch``, if given) went; see YieldSummary.

        Everything is counted in SQL, on its own connection and snapshot, so a summary of a million units
        neither loads them into memory nor holds up the workers writing meanwhile.
        """
        clauses, params = _unit_filter(UnitFilter(batch=batch, since=since, until=until, order=order))
        # Steps are narrowed to the units in scope with IN (subquery), not a join: SQLite then either probes
        # the steps index per unit id or checks ids against a list, and never scans steps once per unit.
        in_scope = f" AND s.unit_id IN (SELECT u.id FROM units AS u{_where(clauses)})" if clauses else ""
        with self._snapshot() as db:
            groups = db.execute(
                "SELECT u.state, u.attempt, count(*), min(u.started_at), max(u.started_at) FROM units AS u"
                + _where(clauses)
                + " GROUP BY u.state, u.attempt",
                params,
            ).fetchall()
            failures = db.execute(
                "SELECT s.step, count(*) FROM steps AS s WHERE s.outcome = 'failed'"
                + in_scope
                + " GROUP BY s.step ORDER BY count(*) DESC, s.step",
                params,
            ).fetchall()
            keygen = _duration_stats(db, step=KEYGEN_STEP, in_scope=in_scope, params=params)
        by_state: dict[str, int] = {}
        first_attempt_passes = 0
        for state, attempt, count, _first, _last in groups:
            by_state[state] = by_state.get(state, 0) + int(count)
            if state in ("passed", "superseded") and attempt == 1:
                first_attempt_passes += int(count)
        starts = [group[3] for group in groups] + [group[4] for group in groups]
        return YieldSummary(
            since=since,
            until=until,
            batch=batch,
            units=sum(by_state.values()),
            running=by_state.get("running", 0),
            passed=by_state.get("passed", 0) + by_state.get("superseded", 0),
            passed_first_attempt=first_attempt_passes,
            failed=by_state.get("failed", 0),
            aborted=by_state.get("aborted", 0),
            superseded=by_state.get("superseded", 0),
            first_started=_parse_optional_time(min(starts)) if starts else None,
            last_started=_parse_optional_time(max(starts)) if starts else None,
            failures_by_step=tuple((str(step), int(count)) for step, count in failures),
            keygen=keygen,
        )

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
        (:func:`station.audit_checkpoints.verify_checkpoints`).  Runs on its own connection and snapshot, so
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
            ok=problem is None, events=events, problem=problem,
            checkpoints=signed.checkpoints if signed else None,
            last_signed_seq=signed.last_signed_seq if signed else None,
        )  # fmt: skip

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
            for leftover in (temporary, Path(f"{temporary}-journal"), Path(f"{temporary}-wal"),
                             Path(f"{temporary}-shm")):  # fmt: skip
                leftover.unlink(missing_ok=True)
        # The rename itself must reach the disk too, or a power cut could bring back the old backup.
        fsync_directory(target.parent)
        return AuditBackup(
            path=target,
            size_bytes=target.stat().st_size,
            report=VerifyReport(ok=problem is None, events=events, problem=problem),
        )

    # --------------------------------------------------------------------------------------- exports

    def export_csv(
        self,
        out: TextIO,
        *,
        serial_prefix: str | None = None,
        result: str | None = None,
        operator: str | None = None,
        batch: str | None = None,
        fixture: str | None = None,
        failed_step: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        station: str | None = None,
        order: str | None = None,
    ) -> int:
        """Write matching units, oldest first, as CSV for a spreadsheet; return how many.

        ``out`` should be opened with ``encoding="utf-8", newline=""``. The text starts with a BOM so that
        Excel reads it as UTF-8, and text cells that a spreadsheet would run as a formula are prefixed with '.
        """
        out.write("\ufeff")
        writer = csv.writer(out)
        writer.writerow(EXPORT_FIELDS)
        count = 0
        filters = UnitFilter(
            serial_prefix=serial_prefix,
            result=result,
            operator=operator,
            batch=batch,
            fixture=fixture,
            failed_step=failed_step,
            station=station,
            since=since,
            until=until,
            order=order,
        )
        for row in self._export_rows(filters, for_csv=True):
            writer.writerow(row)
            count += 1
        return count

    def export_jsonl(
        self,
        out: TextIO,
        *,
        serial_prefix: str | None = None,
        result: str | None = None,
        operator: str | None = None,
        batch: str | None = None,
        fixture: str | None = None,
        failed_step: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        station: str | None = None,
        include_steps: bool = False,
        order: str | None = None,
    ) -> int:
        """Write matching units, oldest first, as JSON Lines (raw values); return how many.

        With ``include_steps`` each object also has ``steps``: step, attempt, outcome and duration_s of every
        step record (never the excerpts).
        """
        count = 0
        for record in self.export_records(
            UnitFilter(
                serial_prefix=serial_prefix,
                result=result,
                operator=operator,
                batch=batch,
                fixture=fixture,
                failed_step=failed_step,
                station=station,
                since=since,
                until=until,
                order=order,
            ),
            include_steps=include_steps,
        ):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        return count

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
                for statement in (*_SCHEMA, *ORDER_SCHEMA, *CHECKPOINT_SCHEMA, *PEOPLE_SCHEMA, *SERVICE_SCHEMA):
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

    def export_records(
        self, filters: UnitFilter | None = None, *, include_steps: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Stream export records (the EXPORT_FIELDS of each unit, oldest first) from one consistent snapshot.

        Never all rows in memory; never anything secret (no excerpts, keys, PINs or passphrases). Exhaust or
        close the iterator: it holds a read transaction open until then.
        """
        if not include_steps:
            for row in self._export_rows(filters or UnitFilter()):
                yield dict(zip(EXPORT_FIELDS, row, strict=True))
            return
        with self._snapshot() as db:
            for row in self._export_rows(filters or UnitFilter(), db=db):
                record = dict(zip(EXPORT_FIELDS, row, strict=True))
                record["steps"] = [
                    {
                        "step": step,
                        "attempt": attempt,
                        "outcome": outcome,
                        "duration_s": round((_parse_time(ended) - _parse_time(started)).total_seconds(), 3),
                    }
                    for step, attempt, outcome, started, ended in db.execute(
                        "SELECT step, attempt, outcome, started_at, ended_at FROM steps WHERE unit_id = ? ORDER BY id",
                        [row[0]],
                    ).fetchall()
                ]
                yield record

    def _export_rows(
        self, filters: UnitFilter, *, db: sqlite_utils.Database | None = None, for_csv: bool = False
    ) -> Iterator[tuple[Any, ...]]:
        """Export rows as tuples in EXPORT_FIELDS order, oldest first, from one snapshot (``db``'s, if given).

        ``for_csv`` prefixes free text that a spreadsheet would run as a formula with '.
        """
        if db is None:
            with self._snapshot() as snapshot:
                yield from self._export_rows(filters, db=snapshot, for_csv=for_csv)
            return
        clauses, params = _unit_filter(filters)
        parse = datetime.fromisoformat
        # A plain sqlite3 cursor: tuples, no per-row dict.
        cursor = db.conn.execute(
            _export_select(neutralise=for_csv) + _where(clauses) + " ORDER BY u.id", params
        )
        # Each unit's work order, merged in by unit id (both sides sorted): a lookup per unit would cost a
        # quarter more on a million units.
        places = db.conn.execute("SELECT unit_id, order_id FROM order_places ORDER BY unit_id")
        place = places.fetchone()
        # Each unit's SoC id (its latest record), merged in the same way.
        identities = db.conn.execute("SELECT unit_id, soc_id FROM unit_identity ORDER BY unit_id, id")
        identity = identities.fetchone()
        for (
            unit_id, serial, state, profile, device, fixture, batch, operator, station, started, ended,
            failed_step, message, attempt, cert_serial, cert_fingerprint, revoked_at, reprovision_reason,
        ) in cursor:  # fmt: skip
            while place is not None and place[0] < unit_id:
                place = places.fetchone()
            order_id = place[1] if place is not None and place[0] == unit_id else None
            soc_id = None
            while identity is not None and identity[0] <= unit_id:
                if identity[0] == unit_id:
                    soc_id = identity[1]
                identity = identities.fetchone()
            duration = None if ended is None else round((parse(ended) - parse(started)).total_seconds(), 3)
            yield (
                unit_id, serial, state, profile, device, fixture, batch, operator, station, started, ended,
                duration, failed_step, message, attempt, cert_serial, cert_fingerprint, revoked_at,
                reprovision_reason, soc_id, order_id,
            )  # fmt: skip


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
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fleet_outbox'").fetchone() is None:
        return 0
    row = db.execute("SELECT forwarded_seq FROM fleet_outbox WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------------------- verification


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


def _connect(path: Path, *, check_same_thread: bool) -> sqlite_utils.Database:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=check_same_thread)
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    # FULL: a commit is on disk when it returns — a certificate is recorded before it is pushed to the board.
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    return db


# Values SQLite stores as given (sqlite-utils would convert anything else, e.g. a dict to JSON text).
_PLAIN_VALUES = (str, int, float, bytes, type(None))


def _insert(db: sqlite_utils.Database, table: str, row: dict[str, Any]) -> int:
    """Insert one row; return its id."""
    if all(isinstance(value, _PLAIN_VALUES) for value in row.values()):
        # What sqlite-utils' insert would run, without its schema look-ups (a few per row).
        columns = ", ".join(f"[{name}]" for name in row)
        cursor = db.execute(f"INSERT INTO [{table}] ({columns}) VALUES ({', '.join('?' * len(row))})",
                            list(row.values()))
        if cursor.lastrowid is None:
            raise RuntimeError(f"SQLite returned no id for the new {table} row")
        return int(cursor.lastrowid)
    pk = db.table(table).insert(row).last_pk
    if pk is None:
        raise RuntimeError(f"SQLite returned no id for the new {table} row")
    return int(pk)


def _unit_filter(filters: UnitFilter) -> tuple[list[str], dict[str, Any]]:
    """Conditions (on alias ``u``) and their parameters; every filter has an index to use."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if filters.serial_prefix:
        # GLOB (unlike LIKE) is case-sensitive, so SQLite can answer a prefix from the serial index.
        clauses.append("u.serial GLOB :serial_glob")
        params["serial_glob"] = "".join(f"[{c}]" if c in "*?[" else c for c in filters.serial_prefix) + "*"
    if filters.result is not None:
        if filters.result not in UNIT_STATES:
            raise ValueError(f"result must be one of {', '.join(UNIT_STATES)}, not {filters.result!r}")
        clauses.append("u.state = :state")
        params["state"] = filters.result
    for column, value in (
        ("operator", filters.operator),
        ("batch", filters.batch),
        ("fixture", filters.fixture),
        ("failed_step", filters.failed_step),
        ("station", filters.station),
    ):
        if value is not None:
            clauses.append(f"u.{column} = :{column}")
            params[column] = value
    if filters.order is not None:
        clauses.append(order_unit_clause("order"))
        params["order"] = filters.order
    if filters.since is not None:
        clauses.append("u.started_at >= :since")
        params["since"] = _timestamp(filters.since)
    if filters.until is not None:
        clauses.append("u.started_at < :until")
        params["until"] = _timestamp(filters.until)
    return clauses, params


def _where(clauses: list[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""


def _duration_stats(
    db: sqlite_utils.Database, *, step: str, in_scope: str, params: dict[str, Any]
) -> DurationStats:
    """Count, range, mean, nearest-rank quantiles and a histogram of the passed runs of ``step``.

    SQLite groups the durations by millisecond — a few thousand distinct values however many runs there were —
    and every figure is computed from those groups in one pass, exactly.
    """
    # julianday() keeps milliseconds, which is all a duration in a report needs; rounding to them also keeps
    # float noise (29.99999 for 30 s) from moving a duration into the bin below.
    groups = [
        (float(value), int(count))
        for value, count in db.execute(
            "SELECT round((julianday(s.ended_at) - julianday(s.started_at)) * 86400.0, 3) AS d, count(*) "
            "FROM steps AS s WHERE s.step = :duration_step AND s.outcome = 'passed'"
            + in_scope
            + " GROUP BY d ORDER BY d",
            {**params, "duration_step": step},
        ).fetchall()
    ]
    return duration_stats(groups)


def duration_stats(groups: list[tuple[float, int]]) -> DurationStats:
    """The figures of durations given as (seconds, how many) sorted by seconds — shared by the local log and the
    fleet (station.fleet.queries), so that both scopes compute quantiles and histogram bins the same way."""
    count = sum(n for _, n in groups)
    if not count:
        return DurationStats(0, None, None, None, (), ())
    low, high = groups[0][0], groups[-1][0]
    ranks = {p: max(1, math.ceil(p * count)) for p in DURATION_QUANTILES}
    found: dict[float, float] = {}
    seen = 0
    for value, n in groups:
        seen += n
        for p, rank in ranks.items():
            if p not in found and seen >= rank:
                found[p] = value
    width, first = _histogram_grid(low, high, DURATION_HISTOGRAM_BINS)
    bins = max(1, math.ceil((high - first) / width - 1e-9))
    counts = [0] * bins
    for value, n in groups:
        # The epsilon keeps a value on a bin edge in the bin that starts there; the top edge joins the last bin.
        counts[min(max(int((value - first) / width + 1e-9), 0), bins - 1)] += n
    return DurationStats(
        count=count,
        min_s=round(low, 3),
        max_s=round(high, 3),
        mean_s=round(sum(value * n for value, n in groups) / count, 3),
        quantiles=tuple((p, round(found[p], 3)) for p in DURATION_QUANTILES),
        histogram=tuple(
            HistogramBin(
                low=round(first + i * width, 6), high=round(first + (i + 1) * width, 6), count=counts[i]
            )
            for i in range(bins)
        ),
    )


def _histogram_grid(low: float, high: float, bins: int) -> tuple[float, float]:
    """A round bin width (1, 2, 2.5 or 5 × 10^k) giving at most ``bins`` bins, and the first bin's start."""
    span = high - low
    if span <= 0:
        width = 10 ** math.floor(math.log10(abs(low))) if low else 1.0
        return width, math.floor(low / width) * width
    raw = span / bins
    magnitude = 10 ** math.floor(math.log10(raw))
    width = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / width) * width
    # Snapping the start down can spill one bin over; the next round width fits.
    if math.ceil((high - first) / width - 1e-9) > bins:
        width = next(m * magnitude for m in (2, 2.5, 5, 10, 20) if m * magnitude > width)
        first = math.floor(low / width) * width
    return width, first


def _unit_from_row(row: dict[str, Any]) -> Unit:
    return Unit(
        id=row["id"],
        serial=row["serial"],
        profile=row["profile"],
        device=row["device"],
        fixture=row["fixture"],
        batch=row["batch"],
        operator=row["operator"],
        station=row["station"],
        state=UnitState(row["state"]),
        attempt=row["attempt"],
        started_at=_parse_time(row["started_at"]),
        ended_at=_parse_optional_time(row["ended_at"]),
        failed_step=row["failed_step"],
        message=row["message"],
        host_key_type=row["host_key_type"],
        host_key_fingerprint=row["host_key_fingerprint"],
        reprovision_reason=row["reprovision_reason"],
        superseded_by=row["superseded_by"],
        certificate_serial=row["certificate_serial"],
        certificate_fingerprint=row["certificate_fingerprint"],
        certificate_revoked_at=_parse_optional_time(row["certificate_revoked_at"]),
    )


def _step_from_row(row: dict[str, Any]) -> StepRecord:
    return StepRecord(
        id=row["id"],
        unit_id=row["unit_id"],
        step=row["step"],
        attempt=row["attempt"],
        outcome=StepOutcome(row["outcome"]),
        started_at=_parse_time(row["started_at"]),
        ended_at=_parse_time(row["ended_at"]),
        output_sha256=row["output_sha256"],
        excerpt=row["excerpt"],
        message=row["message"],
    )


def _label_print_from_row(row: dict[str, Any]) -> LabelPrint:
    return LabelPrint(id=row["id"], unit_id=row["unit_id"], at=_parse_time(row["at"]), by=row["by"],
                      printer=row["printer"], reprint=bool(row["reprint"]), printed=bool(row["printed"]),
                      message=row["message"])


def _certificate_from_row(row: dict[str, Any]) -> CertificateRecord:
    return CertificateRecord(
        unit_id=row["unit_id"],
        serial_number=int(row["serial_hex"], 16),
        serial_hex=row["serial_hex"],
        fingerprint_sha256=row["fingerprint_sha256"],
        spki_sha256=row["spki_sha256"],
        subject=row["subject"],
        not_before=_parse_time(row["not_before"]),
        not_after=_parse_time(row["not_after"]),
        pem=row["pem"],
        issued_at=_parse_time(row["issued_at"]),
        revoked_at=_parse_optional_time(row["revoked_at"]),
        revocation_reason=row["revocation_reason"],
        revoked_by=row["revoked_by"],
    )


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _event_hash(*, prev_hash: str, seq: int, at: str, kind: str, payload: str) -> str:
    # Newline-separated: none of the parts can contain one (hex, digits, ISO time, a kind name, compact JSON).
    material = "\n".join((prev_hash, str(seq), at, kind, payload))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds, so that text order is time order."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamps must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _parse_optional_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _local_text(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")
