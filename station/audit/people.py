"""The audit log's record of people: every enrolment, credential change or reset, removal, lockout,
unlock, sign-in (and refused sign-in) and sign-out, with who did it — never the secret.

Part of the audit (its table is created and verified by :mod:`station.audit`, every row journalled in
the hash chain); the decisions are :mod:`station.people`'s.  The credentials themselves are NOT here:
they live in the people store (``HOME/people.db``), which is never exported, backed up with the audit
log or forwarded to a fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from station.audit import AuditLog

# Journalled tables of this module and how verify() names their rows.
PEOPLE_TABLES = {"people_events": "people record"}

PEOPLE_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS people_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        person TEXT NOT NULL,
        role TEXT NOT NULL,
        by TEXT NOT NULL,
        account TEXT NOT NULL,
        detail TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS people_events_person ON people_events(person, id)",
    """
    CREATE TRIGGER IF NOT EXISTS people_events_are_append_only_update BEFORE UPDATE ON people_events
    BEGIN SELECT RAISE(ABORT, 'people records are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS people_events_are_append_only_delete BEFORE DELETE ON people_events
    BEGIN SELECT RAISE(ABORT, 'people records are append-only'); END
    """,
)


@dataclass(frozen=True)
class PeopleEvent:
    """One journalled people record: ``by`` is who did it (a signed-in person or an OS account),
    ``account`` the OS account the request came from (a shared kiosk account, the service's caller)."""

    id: int
    at: datetime
    action: str
    person: str
    role: str
    by: str
    account: str
    detail: str


def record_people_event(
    audit: AuditLog, *, action: str, person: str, role: str, by: str, account: str, detail: str = ""
) -> PeopleEvent:
    """Journal one people record in the audit log (its own transaction)."""
    from station.audit import _insert

    with audit._change() as db:
        at = audit._now_text()
        pk = _insert(
            db,
            "people_events",
            {
                "at": at,
                "action": action,
                "person": person,
                "role": role,
                "by": by,
                "account": account,
                "detail": detail,
            },
        )
        audit._append_event(db, at=at, kind=f"people.{action}", table="people_events", pk=pk)
        return _event_from_row(db.table("people_events").get(pk))


def people_events(audit: AuditLog, *, person: str | None = None, limit: int = 200) -> list[PeopleEvent]:
    """The newest people records first (of one person, or of everyone)."""
    sql = (
        "SELECT * FROM people_events"
        + (" WHERE person = ?" if person is not None else "")
        + " ORDER BY id DESC"
    )
    params: list[Any] = [person] if person is not None else []
    with audit._lock:
        rows = list(audit._db.query(f"{sql} LIMIT ?", [*params, limit]))
    return [_event_from_row(row) for row in rows]


def _event_from_row(row: dict[str, Any]) -> PeopleEvent:
    from station.audit import _parse_time

    return PeopleEvent(
        id=int(row["id"]),
        at=_parse_time(row["at"]),
        action=row["action"],
        person=row["person"],
        role=row["role"],
        by=row["by"],
        account=row["account"],
        detail=row["detail"],
    )
