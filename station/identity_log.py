"""The audit log's board-identity records: the SoC id of each unit and the fixtures' host-key pins.

Part of the audit (its tables are created and verified by :mod:`station.audit`, every row journalled in
the hash chain); kept in its own module so the identity questions sit in one place:
which earlier units share this SoC id, this serial or this host key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from station.audit.records import Unit, _local_text, _parse_time, _unit_from_row
from station.audit.schema import _insert

if TYPE_CHECKING:
    from station.audit import AuditLog  # a unit's worker uses the record types here, never the log

_UNIT_COLUMNS = """
SELECT u.*, NULL AS certificate_serial, NULL AS certificate_fingerprint, NULL AS certificate_revoked_at
FROM units AS u
"""


@dataclass(frozen=True)
class IdentityRecord:
    unit_id: int
    soc_id: str
    source: str
    recorded_at: datetime


@dataclass(frozen=True)
class HostKeyPin:
    fixture: str
    device: str
    key_type: str
    fingerprint: str
    previous_fingerprint: str | None
    file: str
    pinned_by: str
    pinned_at: datetime


@dataclass(frozen=True)
class IdentityConflicts:
    """What the audit log says about a unit's board against the other enrolments (answer of
    :meth:`AuditLog.identity_conflicts`, the one question a unit's guard asks — in a worker, over its pipe)."""

    # Passed units of other serials that ran on this SoC: the same board under another label.
    same_soc_other_serial: tuple[Unit, ...] = ()
    # Passed units of this serial on another SoC, each with that SoC id: this label on another board.
    same_serial_other_soc: tuple[tuple[Unit, str | None], ...] = ()
    # Passed units of other serials whose board showed this SSH host key.
    same_host_key_other_serial: tuple[Unit, ...] = ()


def when(unit: Unit) -> str:
    """When a unit ended (or started), as a person reads it."""
    return _local_text(unit.ended_at or unit.started_at)


class IdentityLog:
    """Identity questions and records over one :class:`AuditLog` (same connection, lock and journal)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def record_soc_id(self, unit_id: int, *, soc_id: str, source: str) -> None:
        """Record the SoC id a unit read; the same id again (a resumed unit) is not recorded twice."""
        audit = self.audit
        with audit._change() as db:
            row = db.execute(
                "SELECT soc_id FROM unit_identity WHERE unit_id = ? ORDER BY id DESC LIMIT 1", [unit_id]
            ).fetchone()
            if row is not None and row[0] == soc_id:
                return
            at = audit._now_text()
            pk = _insert(
                db,
                "unit_identity",
                {"unit_id": unit_id, "soc_id": soc_id, "soc_id_source": source, "recorded_at": at},
            )
            audit._append_event(db, at=at, kind="unit.soc_id_read", table="unit_identity", pk=pk)

    def soc_id_of(self, unit_id: int) -> IdentityRecord | None:
        with self.audit._lock:
            row = self.audit._db.execute(
                "SELECT unit_id, soc_id, soc_id_source, recorded_at FROM unit_identity WHERE unit_id = ? "
                "ORDER BY id DESC LIMIT 1",
                [unit_id],
            ).fetchone()
        if row is None:
            return None
        return IdentityRecord(int(row[0]), str(row[1]), str(row[2]), _parse_time(str(row[3])))

    def passed_units_with_soc_id(self, soc_id: str, *, other_than_serial: str) -> list[Unit]:
        """Passed units of other serials that ran on this SoC: the same board under another label."""
        return self._units(
            "WHERE u.state = 'passed' AND u.serial <> ? AND u.id IN "
            "(SELECT unit_id FROM unit_identity WHERE soc_id = ?) ORDER BY u.id DESC LIMIT 5",
            [other_than_serial, soc_id],
        )

    def passed_units_of_serial_on_other_soc(self, serial: str, soc_id: str) -> list[Unit]:
        """Passed units of this serial whose board had another SoC id: this label on another board."""
        return self._units(
            "WHERE u.serial = ? AND u.state = 'passed' AND EXISTS (SELECT 1 FROM unit_identity AS i "
            "WHERE i.unit_id = u.id AND i.soc_id <> ?) ORDER BY u.id DESC LIMIT 5",
            [serial, soc_id],
        )

    def passed_units_with_host_key(self, fingerprint: str, *, other_than_serial: str) -> list[Unit]:
        """Passed units of other serials whose board showed this SSH host key."""
        return self._units(
            "WHERE u.host_key_fingerprint = ? AND u.state = 'passed' AND u.serial <> ? ORDER BY u.id DESC LIMIT 5",
            [fingerprint, other_than_serial],
        )

    def conflicts(
        self, unit_id: int, *, soc_id: str | None, host_key_fingerprint: str | None
    ) -> IdentityConflicts:
        """Everything the guard checks for unit ``unit_id``'s board (its serial is the unit's own)."""
        serial = self.audit.unit(unit_id).serial
        same_label: list[tuple[Unit, str | None]] = []
        if soc_id:
            for other in self.passed_units_of_serial_on_other_soc(serial, soc_id):
                earlier = self.soc_id_of(other.id)
                same_label.append((other, earlier.soc_id if earlier else None))
        return IdentityConflicts(
            same_soc_other_serial=tuple(self.passed_units_with_soc_id(soc_id, other_than_serial=serial))
            if soc_id
            else (),
            same_serial_other_soc=tuple(same_label),
            same_host_key_other_serial=tuple(
                self.passed_units_with_host_key(host_key_fingerprint, other_than_serial=serial)
            )
            if host_key_fingerprint
            else (),
        )

    def record_host_key_pin(
        self,
        *,
        fixture: str,
        device: str,
        key_type: str,
        fingerprint: str,
        previous: str | None,
        file: str,
        by: str,
    ) -> None:
        audit = self.audit
        with audit._change() as db:
            at = audit._now_text()
            pk = _insert(
                db,
                "fixture_host_keys",
                {
                    "fixture": fixture,
                    "device": device,
                    "key_type": key_type,
                    "fingerprint": fingerprint,
                    "previous_fingerprint": previous,
                    "file": file,
                    "pinned_by": by,
                    "pinned_at": at,
                },
            )
            audit._append_event(db, at=at, kind="fixture.host_key_pinned", table="fixture_host_keys", pk=pk)

    def host_key_pins(self, fixture: str | None = None) -> list[HostKeyPin]:
        """Every pin (of one fixture, or all), newest first."""
        sql = (
            "SELECT * FROM fixture_host_keys"
            + (" WHERE fixture = ?" if fixture else "")
            + " ORDER BY id DESC"
        )
        with self.audit._lock:
            rows = list(self.audit._db.query(sql, [fixture] if fixture else []))
        return [
            HostKeyPin(
                fixture=row["fixture"],
                device=row["device"],
                key_type=row["key_type"],
                fingerprint=row["fingerprint"],
                previous_fingerprint=row["previous_fingerprint"],
                file=row["file"],
                pinned_by=row["pinned_by"],
                pinned_at=_parse_time(row["pinned_at"]),
            )
            for row in rows
        ]

    def _units(self, where: str, params: list[object]) -> list[Unit]:
        with self.audit._lock:
            rows = list(self.audit._db.query(_UNIT_COLUMNS + where, params))
        return [_unit_from_row(row) for row in rows]
