"""The audit log: the station's record of every board it enrolled, and the only module that touches SQLite.

Four tables live in one SQLite file below the station home:

* ``units`` — one row per attempt to enrol a board (serial), with its state and outcome;
* ``steps`` — every step outcome of every unit (identify, guard, wipe, … tls_proof);
* ``certificates`` — every certificate the station issued, and its revocation;
* ``events`` — an append-only journal. Every change writes its table row(s) *and* one event per row, carrying
  the full new row, in the same transaction. Events are hash-chained (each hash covers the previous hash), so
  :meth:`AuditLog.verify` notices rows or events edited, deleted, added or reordered behind the station's back
  (DB browser, ``sqlite3`` shell, a restored old copy of one table).

Work orders add two journalled tables, ``orders`` and ``order_places`` (see :mod:`station.audit.orders`): a unit
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

The package, one module per idea: :mod:`~station.audit.log` (:class:`AuditLog` and its writes) composed of
:mod:`~station.audit.core` (connection, lock, transactions, the journal), :mod:`~station.audit.queries`,
:mod:`~station.audit.stats`, :mod:`~station.audit.verify`, :mod:`~station.audit.export` and
:mod:`~station.audit.fleet`; :mod:`~station.audit.schema` (DDL) and :mod:`~station.audit.records` (record types);
the journalled tables of orders, people and the service, and signed checkpoints, beside them.  Every name is
re-exported here; a test that patches a module constant (``BUSY_TIMEOUT_S``) patches the module that reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from station.lazy_names import lazy_names

if TYPE_CHECKING:
    from station.audit.core import BUSY_TIMEOUT_S, DISK_FULL_BYTES
    from station.audit.export import EXPORT_FIELDS
    from station.audit.log import AuditLog
    from station.audit.queries import UNIT_SORT_KEYS
    from station.audit.records import (
        GENESIS_HASH,
        STEP_OUTCOMES,
        SUPERSEDED_REASON,
        UNIT_ENDED_REASON,
        UNIT_RESULTS,
        UNIT_STATES,
        AuditBackup,
        AuditLogUnavailable,
        CertificateRecord,
        LabelPrint,
        PublicKeyReused,
        RevokedCertificate,
        SerialAlreadyPassed,
        StepRecord,
        Unit,
        UnitAlreadyActive,
        UnitFilter,
        VerifyReport,
    )
    from station.audit.records import _canonical_json as _canonical_json
    from station.audit.records import _event_hash as _event_hash
    from station.audit.records import _local_text as _local_text
    from station.audit.records import _parse_time as _parse_time
    from station.audit.records import _unit_from_row as _unit_from_row
    from station.audit.schema import AUDITED_TABLES, SCHEMA_VERSION
    from station.audit.schema import _insert as _insert
    from station.audit.stats import (
        DURATION_HISTOGRAM_BINS,
        DURATION_QUANTILES,
        KEYGEN_STEP,
        DurationStats,
        HistogramBin,
        YieldSummary,
        duration_stats,
    )

__all__ = [
    "AUDITED_TABLES",
    "AuditBackup",
    "AuditLog",
    "AuditLogUnavailable",
    "BUSY_TIMEOUT_S",
    "CertificateRecord",
    "DISK_FULL_BYTES",
    "DURATION_HISTOGRAM_BINS",
    "DURATION_QUANTILES",
    "DurationStats",
    "EXPORT_FIELDS",
    "GENESIS_HASH",
    "HistogramBin",
    "KEYGEN_STEP",
    "LabelPrint",
    "PublicKeyReused",
    "RevokedCertificate",
    "SCHEMA_VERSION",
    "STEP_OUTCOMES",
    "SUPERSEDED_REASON",
    "SerialAlreadyPassed",
    "StepRecord",
    "UNIT_ENDED_REASON",
    "UNIT_RESULTS",
    "UNIT_SORT_KEYS",
    "UNIT_STATES",
    "Unit",
    "UnitAlreadyActive",
    "UnitFilter",
    "VerifyReport",
    "YieldSummary",
    "duration_stats",
]

# Where each name lives.  The names are loaded on first use: a unit's worker process needs the record types
# (station.audit.records) and never the log itself, its SQLite schema or sqlite_utils — which its fork server
# would otherwise hold, and every worker copy at its fork and tear down at its exit.
_HOMES = {
    "BUSY_TIMEOUT_S": "core",
    "DISK_FULL_BYTES": "core",
    "EXPORT_FIELDS": "export",
    "AuditLog": "log",
    "UNIT_SORT_KEYS": "queries",
    "GENESIS_HASH": "records",
    "STEP_OUTCOMES": "records",
    "SUPERSEDED_REASON": "records",
    "UNIT_ENDED_REASON": "records",
    "UNIT_RESULTS": "records",
    "UNIT_STATES": "records",
    "AuditBackup": "records",
    "AuditLogUnavailable": "records",
    "CertificateRecord": "records",
    "LabelPrint": "records",
    "PublicKeyReused": "records",
    "RevokedCertificate": "records",
    "SerialAlreadyPassed": "records",
    "StepRecord": "records",
    "Unit": "records",
    "UnitAlreadyActive": "records",
    "UnitFilter": "records",
    "VerifyReport": "records",
    "_canonical_json": "records",
    "_event_hash": "records",
    "_local_text": "records",
    "_parse_time": "records",
    "_unit_from_row": "records",
    "AUDITED_TABLES": "schema",
    "SCHEMA_VERSION": "schema",
    "_insert": "schema",
    "DURATION_HISTOGRAM_BINS": "stats",
    "DURATION_QUANTILES": "stats",
    "KEYGEN_STEP": "stats",
    "DurationStats": "stats",
    "HistogramBin": "stats",
    "YieldSummary": "stats",
    "duration_stats": "stats",
}


__getattr__ = lazy_names(__name__, _HOMES)
