"""Reading units, steps, certificates and label prints back: single look-ups and the filtered, paged queries
the audit view and exports use (every filter and sort key has an index)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from station.audit.core import AuditCore
from station.audit.orders import (
    order_unit_clause,
)
from station.audit.records import (
    UNIT_STATES,
    CertificateRecord,
    LabelPrint,
    RevokedCertificate,
    StepRecord,
    Unit,
    UnitFilter,
    _certificate_from_row,
    _label_print_from_row,
    _parse_time,
    _step_from_row,
    _timestamp,
    _unit_from_row,
)
from station.audit.schema import _UNIT_SELECT
from station.states import StepOutcome, UnitState

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


class UnitQueries(AuditCore):
    """Reads of units, steps, certificates and label prints (part of :class:`~station.audit.AuditLog`)."""

    def unit(self, unit_id: int) -> Unit:
        with self._lock:
            return self._unit(self._db, unit_id)

    def find_unit(self, serial: str) -> Unit | None:
        """The current unit of a board: running, failed or passed (and not superseded); None if none."""
        with self._lock:
            rows = list(
                # The words as literals, not parameters: only then can SQLite prove the query lies inside the
                # partial index units_one_current_per_serial (schema.py) and use it.
                self._db.query(
                    _UNIT_SELECT + " WHERE u.serial = ? AND u.state IN ('running', 'failed', 'passed')",
                    [serial],
                )
            )
        return _unit_from_row(rows[0]) if rows else None

    def units(
        self, filters: UnitFilter | None = None, *, limit: int = 50, offset: int = 0, **narrow: Any
    ) -> list[Unit]:
        """Units matching ``filters``, newest first; ``narrow`` narrows it by field name (``result="failed"``:
        :class:`UnitFilter`, whose ``result`` is the unit's state, ``since``/``until`` bounds on its start)."""
        return self.units_page(offset=offset, limit=limit, filters=replace(filters or UnitFilter(), **narrow))

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
                self._db.query(
                    _UNIT_SELECT + " WHERE u.state IN (?, ?) ORDER BY u.id",
                    [UnitState.RUNNING.value, UnitState.FAILED.value],
                )
            )
        return [_unit_from_row(row) for row in rows]

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
                    WHERE s.step = ? AND s.outcome = ? AND u.profile = ?
                    ORDER BY s.id DESC LIMIT ?
                    """,
                    [step, StepOutcome.PASSED.value, profile, limit],
                )
            )
        return [(_parse_time(r["ended_at"]) - _parse_time(r["started_at"])).total_seconds() for r in rows]

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

    def label_prints(self, unit_id: int, *, last: int | None = None) -> list[LabelPrint]:
        """The unit's label prints, oldest first (only its ``last`` most recent ones when given)."""
        with self._lock:
            if last is None:
                rows = self._db.query("SELECT * FROM label_prints WHERE unit_id = ? ORDER BY id", [unit_id])
                return [_label_print_from_row(row) for row in rows]
            newest = self._db.query(
                "SELECT * FROM label_prints WHERE unit_id = ? ORDER BY id DESC LIMIT ?",
                [unit_id, max(0, last)],
            )
            return [_label_print_from_row(row) for row in reversed(list(newest))]

    def certificates_issued_since(self, moment: datetime) -> int:
        """How many certificates were recorded at or after ``moment`` (the issuance quota's count)."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM certificates WHERE issued_at >= ?", [_timestamp(moment)]
            ).fetchone()
        return int(row[0])

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
