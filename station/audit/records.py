"""What the audit log holds and answers with: unit, step, certificate and label records, filters, errors, and the
helpers that turn rows into records and records into the journal's canonical text."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.errors import StationError
from station.states import StepOutcome, UnitState

UNIT_STATES = (UnitState.RUNNING, UnitState.FAILED, UnitState.PASSED, UnitState.ABORTED, UnitState.SUPERSEDED)
UNIT_RESULTS = (UnitState.PASSED, UnitState.FAILED, UnitState.ABORTED)
STEP_OUTCOMES = (StepOutcome.PASSED, StepOutcome.FAILED, StepOutcome.SKIPPED, StepOutcome.RETRYING)


# prev_hash of event 1.
GENESIS_HASH = "0" * 64

# Revocation reason recorded when a board's newer certificate replaces an older one (an RFC 5280 reason name,
# so the CRL carries the reason code).
SUPERSEDED_REASON = "superseded"
# Revocation reason of the certificate of a unit that ended failed or aborted (given up, restarted, set aside):
# the board may hold it, but the line did not accept that board with it.
UNIT_ENDED_REASON = "cessationOfOperation"


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

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> UnitFilter:
        """The one way a filter is built from named values — a command's options (``vars(args)``), a request to the
        station service, a view's fields — so that no caller spells the fields out again.

        Keys are the field names, ``serial`` being the serial prefix (``--serial PREFIX``); ``since`` and ``until``
        are datetimes or ISO 8601 text.  Keys that name no field are not filters and are left alone; None or an
        empty text means any.
        """
        given: dict[str, Any] = {}
        for field in fields(cls):
            value = values.get(field.name)
            if value is None and field.name == "serial_prefix":
                value = values.get("serial")
            if value is None or value == "":
                continue
            if field.name in ("since", "until"):
                given[field.name] = (
                    value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
                )
            else:
                given[field.name] = str(value)
        return cls(**given)

    def to_mapping(self) -> dict[str, str]:
        """The fields given, as text ready for JSON (the words :meth:`from_mapping` reads back)."""
        mapping: dict[str, str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                key = "serial" if field.name == "serial_prefix" else field.name
                mapping[key] = value.isoformat() if isinstance(value, datetime) else str(value)
        return mapping


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
        elif unit.state == UnitState.RUNNING:
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
    return LabelPrint(
        id=row["id"],
        unit_id=row["unit_id"],
        at=_parse_time(row["at"]),
        by=row["by"],
        printer=row["printer"],
        reprint=bool(row["reprint"]),
        printed=bool(row["printed"]),
        message=row["message"],
    )


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
