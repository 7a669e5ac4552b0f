"""The station service's records in the audit log: who asked for what, and which OS account ran each unit.

Two append-only tables join the audit log (journalled in its hash chain, so ``station audit verify`` covers
them):

* ``service_requests`` — one row per request to the station service that matters: the OS account the kernel
  named (SO_PEERCRED uid, its login name, the client's pid), the request, the role it needs, whether it was
  allowed, and what it was about (a serial, a unit, a reason).  Every refusal is one of them.
* ``unit_accounts`` — the OS account that asked for each unit the service ran (the unit's ``operator`` stays
  what the technician typed or signed in as).

:mod:`station.audit` creates and verifies the tables; writing them is here (:class:`ServiceRecords`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from station.audit import AuditLog

SERVICE_TABLES = {"service_requests": "service request record", "unit_accounts": "unit account record"}

SERVICE_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS service_requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        account TEXT NOT NULL,
        uid INTEGER NOT NULL,
        pid INTEGER NOT NULL,
        op TEXT NOT NULL,
        role_needed TEXT,
        allowed INTEGER NOT NULL CHECK (allowed IN (0, 1)),
        detail TEXT NOT NULL,
        unit_id INTEGER
    )
    """,
    "CREATE INDEX IF NOT EXISTS service_requests_account ON service_requests(account, id)",
    """
    CREATE TABLE IF NOT EXISTS unit_accounts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        unit_id INTEGER NOT NULL REFERENCES units(id),
        account TEXT NOT NULL,
        uid INTEGER NOT NULL,
        request_id INTEGER,
        recorded_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS unit_accounts_unit ON unit_accounts(unit_id, id)",
    """
    CREATE TRIGGER IF NOT EXISTS service_requests_are_append_only_update BEFORE UPDATE ON service_requests
    BEGIN SELECT RAISE(ABORT, 'service request records are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS service_requests_are_append_only_delete BEFORE DELETE ON service_requests
    BEGIN SELECT RAISE(ABORT, 'service request records are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS unit_accounts_are_append_only_update BEFORE UPDATE ON unit_accounts
    BEGIN SELECT RAISE(ABORT, 'unit account records are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS unit_accounts_are_append_only_delete BEFORE DELETE ON unit_accounts
    BEGIN SELECT RAISE(ABORT, 'unit account records are append-only'); END
    """,
)


@dataclass(frozen=True)
class Caller:
    """Who is at the other end of a connection, as the kernel said (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int
    account: str


@dataclass(frozen=True)
class RequestRecord:
    id: int
    at: str
    account: str
    uid: int
    pid: int
    op: str
    role_needed: str | None
    allowed: bool
    detail: dict[str, Any]
    unit_id: int | None


class ServiceRecords:
    """Writes and reads the service's tables through one :class:`AuditLog` (its connection, lock, journal)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def record_request(
        self,
        caller: Caller,
        *,
        op: str,
        role_needed: str | None,
        allowed: bool,
        detail: dict[str, Any] | None = None,
        unit_id: int | None = None,
    ) -> int:
        from station.audit import _insert

        audit = self.audit
        with audit._change() as db:
            at = audit._now_text()
            pk = _insert(
                db,
                "service_requests",
                {
                    "at": at,
                    "account": caller.account,
                    "uid": caller.uid,
                    "pid": caller.pid,
                    "op": op,
                    "role_needed": role_needed,
                    "allowed": int(allowed),
                    "detail": json.dumps(detail or {}, sort_keys=True, default=str),
                    "unit_id": unit_id,
                },
            )
            audit._append_event(
                db,
                at=at,
                kind="service.request" if allowed else "service.refused",
                table="service_requests",
                pk=pk,
            )
        return pk

    def record_unit_account(self, unit_id: int, caller: Caller, *, request_id: int | None) -> None:
        from station.audit import _insert

        audit = self.audit
        with audit._change() as db:
            at = audit._now_text()
            pk = _insert(
                db,
                "unit_accounts",
                {
                    "unit_id": unit_id,
                    "account": caller.account,
                    "uid": caller.uid,
                    "request_id": request_id,
                    "recorded_at": at,
                },
            )
            audit._append_event(db, at=at, kind="unit.account", table="unit_accounts", pk=pk)

    def requests(self, *, limit: int = 100) -> list[RequestRecord]:
        audit = self.audit
        with audit._lock:
            rows = list(audit._db.query("SELECT * FROM service_requests ORDER BY id DESC LIMIT ?", [limit]))
        return [
            RequestRecord(
                id=row["id"],
                at=row["at"],
                account=row["account"],
                uid=row["uid"],
                pid=row["pid"],
                op=row["op"],
                role_needed=row["role_needed"],
                allowed=bool(row["allowed"]),
                detail=json.loads(row["detail"]),
                unit_id=row["unit_id"],
            )
            for row in rows
        ]

    def unit_accounts(self, unit_id: int) -> list[str]:
        audit = self.audit
        with audit._lock:
            rows = audit._db.execute(
                "SELECT account FROM unit_accounts WHERE unit_id = ? ORDER BY id", [unit_id]
            ).fetchall()
        return [str(row[0]) for row in rows]
