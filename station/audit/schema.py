"""The audit log's tables, indexes and triggers (schema version in SQLite's user_version), and the one way a row
is inserted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from station.audit.orders import (
    ORDER_TABLES,
)
from station.audit.people import PEOPLE_TABLES
from station.audit.service import SERVICE_TABLES

if TYPE_CHECKING:
    # Imported where a connection is made: a unit's worker process uses this module's records, not SQLite.
    import sqlite_utils


# Version of the schema below, kept in SQLite's user_version header field.
SCHEMA_VERSION = 1


# Tables whose every row is journalled by events; all have an INTEGER PRIMARY KEY named id.
AUDITED_TABLES = {
    "units": "unit",
    "steps": "step record",
    "certificates": "certificate record",
    "label_prints": "label print",
    **ORDER_TABLES,
    # Board identity (station/identity_log.py): the silicon each unit ran on, the fixtures' host keys.
    "unit_identity": "board identity record",
    "fixture_host_keys": "fixture host-key record",
    # People (station/people.py): enrolments, credential changes, lockouts, sign-ins.
    **PEOPLE_TABLES,
    # The station service (station/audit/service.py): who asked for what, who ran each unit.
    **SERVICE_TABLES,
}

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


# Values SQLite stores as given (sqlite-utils would convert anything else, e.g. a dict to JSON text).
_PLAIN_VALUES = (str, int, float, bytes, type(None))


def _insert(db: sqlite_utils.Database, table: str, row: dict[str, Any]) -> int:
    """Insert one row; return its id."""
    if all(isinstance(value, _PLAIN_VALUES) for value in row.values()):
        # What sqlite-utils' insert would run, without its schema look-ups (a few per row).
        columns = ", ".join(f"[{name}]" for name in row)
        cursor = db.execute(
            f"INSERT INTO [{table}] ({columns}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
        if cursor.lastrowid is None:
            raise RuntimeError(f"SQLite returned no id for the new {table} row")
        return int(cursor.lastrowid)
    pk = db.table(table).insert(row).last_pk
    if pk is None:
        raise RuntimeError(f"SQLite returned no id for the new {table} row")
    return int(pk)
