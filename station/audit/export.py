"""Exports (CSV, JSON lines): the EXPORT_FIELDS of each unit, streamed from one snapshot, never anything secret."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from station.audit.core import AuditCore
from station.audit.queries import _unit_filter, _where
from station.audit.records import UnitFilter, _parse_time

if TYPE_CHECKING:
    # Imported where a connection is made: a unit's worker process uses this module's records, not SQLite.
    import sqlite_utils


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


# Unit columns holding free text that someone typed or configured: what a CSV export must keep a spreadsheet
# from running as a formula. (States, timestamps and hex digests cannot start with = + - @.)
_FREE_TEXT_COLUMNS = frozenset(
    {
        "serial",
        "profile",
        "device",
        "fixture",
        "batch",
        "operator",
        "station",
        "failed_step",
        "message",
        "reprovision_reason",
    }
)


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

    unit_columns = (
        "id",
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
        "failed_step",
        "message",
        "attempt",
    )
    return (
        f"SELECT {', '.join(column(name) for name in unit_columns)}, "
        f"c.serial_hex, c.fingerprint_sha256, c.revoked_at, {column('reprovision_reason')} "
        "FROM units AS u "
        "LEFT JOIN certificates AS c ON c.id = (SELECT max(id) FROM certificates WHERE unit_id = u.id)"
    )


# --------------------------------------------------------------------------------------------- records


class Exports(AuditCore):
    """CSV and JSON-lines exports (part of :class:`~station.audit.AuditLog`)."""

    # --------------------------------------------------------------------------------------- exports

    def export_csv(self, out: TextIO, filters: UnitFilter | None = None, **narrow: Any) -> int:
        """Write the units matching ``filters``, oldest first, as CSV for a spreadsheet; return how many.

        ``narrow`` narrows the filter by field name (``result="failed"``, ``since=…``: :class:`UnitFilter`).

        ``out`` should be opened with ``encoding="utf-8", newline=""``. The text starts with a BOM so that
        Excel reads it as UTF-8, and text cells that a spreadsheet would run as a formula are prefixed with '.
        """
        out.write("\ufeff")
        writer = csv.writer(out)
        writer.writerow(EXPORT_FIELDS)
        count = 0
        for row in self._export_rows(replace(filters or UnitFilter(), **narrow), for_csv=True):
            writer.writerow(row)
            count += 1
        return count

    def export_jsonl(
        self, out: TextIO, filters: UnitFilter | None = None, *, include_steps: bool = False, **narrow: Any
    ) -> int:
        """Write the units matching ``filters`` (narrowed by ``narrow``, as for :meth:`export_csv`), oldest first, as
        JSON Lines (raw values); return how many.

        With ``include_steps`` each object also has ``steps``: step, attempt, outcome and duration_s of every
        step record (never the excerpts).
        """
        count = 0
        for record in self.export_records(
            replace(filters or UnitFilter(), **narrow), include_steps=include_steps
        ):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        return count

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

    # long: one read snapshot: the query, the filters and the row shape must stay together
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
            unit_id,
            serial,
            state,
            profile,
            device,
            fixture,
            batch,
            operator,
            station,
            started,
            ended,
            failed_step,
            message,
            attempt,
            cert_serial,
            cert_fingerprint,
            revoked_at,
            reprovision_reason,
        ) in cursor:
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
                unit_id,
                serial,
                state,
                profile,
                device,
                fixture,
                batch,
                operator,
                station,
                started,
                ended,
                duration,
                failed_step,
                message,
                attempt,
                cert_serial,
                cert_fingerprint,
                revoked_at,
                reprovision_reason,
                soc_id,
                order_id,
            )
