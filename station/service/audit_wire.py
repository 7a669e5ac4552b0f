"""The audit tab's reads as they travel over the station service's socket: a unit filter in, units, a unit's
detail and a yield summary out — each encoded by the service and rebuilt, checked, by the window.

Both directions are bounded and checked, because each side is the other's untrusted input:

* :func:`filter_from_args` is the one place a :class:`~station.audit.UnitFilter` is built from a request's
  arguments (the service's audit reads and ``audit_export``): every text bounded and printable, ``result`` a
  unit state, dates ISO 8601 with ``since`` before ``until`` — otherwise a :class:`BadRequest` saying which
  field and what to do.
* The ``*_to_wire`` functions cut long texts (a step's output excerpt, a message) to the bounds below before they
  leave the service; the ``*_from_wire`` functions refuse an answer that is not what they expect (a wrong type,
  an unknown state, too many rows) with :class:`MalformedAnswer`, and cut texts again, so a damaged or hostile
  answer never reaches a widget unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from station.audit import CertificateRecord, LabelPrint, StepRecord, Unit, UnitFilter, YieldSummary
from station.audit.stats import DurationStats, HistogramBin
from station.errors import StationError
from station.identity_log import IdentityRecord
from station.states import StepOutcome, UnitState

# The most units one page answer holds (a client asking for more gets this many; the answer says so).
PAGE_CAP = 500
# The most step records one unit's detail holds (a unit retried beyond this is cut, and the answer says so).
STEPS_CAP = 400
# Texts: a filter field; a name-like field of a record (serial, operator, profile…); a unit's or step's message;
# a step's output excerpt; a certificate's PEM.
FILTER_TEXT_CAP = 128
NAME_CAP = 256
MESSAGE_CAP = 2048
EXCERPT_CAP = 32 * 1024
PEM_CAP = 16 * 1024
# A yield summary's failure rows and histogram bins.
ROWS_CAP = 200
# A unit's label prints (``label_prints``): the newest this many, each message cut to LABEL_MESSAGE_CAP (a tooltip).
LABEL_PRINTS_CAP = 20
LABEL_MESSAGE_CAP = 300
# The deepest offset a page may start at (far beyond any log; refuses nonsense before it reaches SQL).
OFFSET_CAP = 100_000_000
CUT = " …[cut]"

# The filter fields a request may give, as UnitFilter names them (dates as ISO 8601 text).
FILTER_TEXTS = ("serial_prefix", "result", "operator", "batch", "fixture", "failed_step", "station", "order")
FILTER_DATES = ("since", "until")


class BadRequest(StationError):
    """A request's arguments are not acceptable; the message names the field and says what to send."""


class MalformedAnswer(StationError):
    """The station service's answer is not what this client expects (a different version, or damage)."""


def cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters long (marked when cut)."""
    return text if len(text) <= limit else text[: max(0, limit - len(CUT))] + CUT


# ------------------------------------------------------------------------------------------------ filters


def filter_from_args(args: dict[str, Any]) -> UnitFilter:
    """The unit filter a request asks for (keys as :class:`UnitFilter`'s fields; absent or empty = any)."""
    values: dict[str, Any] = {}
    if args.get("serial_prefix") in (None, ""):
        # UnitFilter.to_mapping's word for it (the command line's --serial), the one vocabulary on the wire
        args = {**args, "serial_prefix": args.get("serial")}
    for name in FILTER_TEXTS:
        value = args.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise BadRequest(f"the filter {name} must be text, not {type(value).__name__}")
        value = value.strip()
        if len(value) > FILTER_TEXT_CAP:
            raise BadRequest(
                f"the filter {name} is {len(value)} characters long — at most {FILTER_TEXT_CAP}; shorten it"
            )
        if not value.isprintable():
            raise BadRequest(f"the filter {name} contains control characters — type plain text")
        if value:
            values[name] = value
    if "result" in values and values["result"] not in UnitState.__members__.values():
        raise BadRequest(
            f"the result filter {values['result']!r} is not a unit state — use one of "
            f"{', '.join(state.value for state in UnitState)}"
        )
    for name in FILTER_DATES:
        value = args.get(name)
        if value is None or value == "":
            continue
        moment = _moment(value, what=f"the filter {name}")
        # A time without its offset is the station's local time, as on the command line.
        values[name] = moment if moment.tzinfo is not None else moment.astimezone()
    since, until = values.get("since"), values.get("until")
    if since is not None and until is not None and since >= until:
        raise BadRequest(
            "the filter's From date is not before its To date — pick a From date before the To date"
        )
    return UnitFilter.from_mapping(values)


def filter_to_args(filters: UnitFilter) -> dict[str, Any]:
    """A filter as a request's arguments (only the fields given; :meth:`UnitFilter.to_mapping`'s words, which
    :func:`filter_from_args` reads back)."""
    return dict(filters.to_mapping())


def page_bounds(args: dict[str, Any], *, cap: int = PAGE_CAP) -> tuple[int, int]:
    """(offset, limit) of a page request: whole numbers, offset ≥ 0, 1 ≤ limit (more than ``cap`` is cut)."""
    offset, limit = args.get("offset", 0), args.get("limit", 200)
    for name, value in (("offset", offset), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{name} must be a whole number, not {value!r}")
    if not 0 <= offset <= OFFSET_CAP:
        raise BadRequest(f"offset must be between 0 and {OFFSET_CAP}, not {offset}")
    if limit < 1:
        raise BadRequest(f"limit must be at least 1, not {limit}")
    return offset, min(limit, cap)


def _moment(value: object, *, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise BadRequest(f"{what} must be an ISO 8601 date-time (text), not {value!r}"[:300])
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"{what} {value!r} is not an ISO 8601 date-time (such as 2026-03-02T08:00:00+00:00)"
        ) from None


# ------------------------------------------------------------------------------------------ the service side


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _text(value: str | None, limit: int = NAME_CAP) -> str | None:
    return None if value is None else cut(value, limit)


def unit_to_wire(unit: Unit) -> dict[str, Any]:
    return {
        "id": unit.id,
        "serial": cut(unit.serial, NAME_CAP),
        "profile": cut(unit.profile, NAME_CAP),
        "device": cut(unit.device, NAME_CAP),
        "fixture": _text(unit.fixture),
        "batch": _text(unit.batch),
        "operator": cut(unit.operator, NAME_CAP),
        "station": cut(unit.station, NAME_CAP),
        "state": str(unit.state),
        "attempt": unit.attempt,
        "started_at": unit.started_at.isoformat(),
        "ended_at": _time(unit.ended_at),
        "failed_step": _text(unit.failed_step),
        "message": _text(unit.message, MESSAGE_CAP),
        "host_key_type": _text(unit.host_key_type),
        "host_key_fingerprint": _text(unit.host_key_fingerprint),
        "reprovision_reason": _text(unit.reprovision_reason, MESSAGE_CAP),
        "superseded_by": unit.superseded_by,
        "certificate_serial": _text(unit.certificate_serial),
        "certificate_fingerprint": _text(unit.certificate_fingerprint),
        "certificate_revoked_at": _time(unit.certificate_revoked_at),
    }


def step_to_wire(step: StepRecord) -> dict[str, Any]:
    return {
        "id": step.id,
        "unit_id": step.unit_id,
        "step": cut(step.step, NAME_CAP),
        "attempt": step.attempt,
        "outcome": str(step.outcome),
        "started_at": step.started_at.isoformat(),
        "ended_at": step.ended_at.isoformat(),
        "output_sha256": step.output_sha256,
        "excerpt": cut(step.excerpt, EXCERPT_CAP),
        "message": cut(step.message, MESSAGE_CAP),
    }


def certificate_to_wire(record: CertificateRecord) -> dict[str, Any]:
    return {
        "unit_id": record.unit_id,
        # As text: a certificate serial is up to 159 bits, beyond what every JSON reader keeps exactly.
        "serial_number": str(record.serial_number),
        "serial_hex": cut(record.serial_hex, NAME_CAP),
        "fingerprint_sha256": cut(record.fingerprint_sha256, NAME_CAP),
        "spki_sha256": cut(record.spki_sha256, NAME_CAP),
        "subject": cut(record.subject, NAME_CAP),
        "not_before": record.not_before.isoformat(),
        "not_after": record.not_after.isoformat(),
        "pem": record.pem if len(record.pem) <= PEM_CAP else "",
        "issued_at": record.issued_at.isoformat(),
        "revoked_at": _time(record.revoked_at),
        "revocation_reason": _text(record.revocation_reason, MESSAGE_CAP),
        "revoked_by": _text(record.revoked_by),
    }


def identity_to_wire(identity: IdentityRecord | None) -> dict[str, Any] | None:
    if identity is None:
        return None
    return {
        "unit_id": identity.unit_id,
        "soc_id": cut(identity.soc_id, NAME_CAP),
        "source": cut(identity.source, NAME_CAP),
        "recorded_at": identity.recorded_at.isoformat(),
    }


def yield_to_wire(summary: YieldSummary) -> dict[str, Any]:
    keygen = summary.keygen
    return {
        "since": _time(summary.since),
        "until": _time(summary.until),
        "batch": _text(summary.batch),
        "units": summary.units,
        "running": summary.running,
        "passed": summary.passed,
        "passed_first_attempt": summary.passed_first_attempt,
        "failed": summary.failed,
        "aborted": summary.aborted,
        "superseded": summary.superseded,
        "first_started": _time(summary.first_started),
        "last_started": _time(summary.last_started),
        "failures_by_step": [
            [cut(step, NAME_CAP), count] for step, count in summary.failures_by_step[:ROWS_CAP]
        ],
        "keygen": {
            "count": keygen.count,
            "min_s": keygen.min_s,
            "max_s": keygen.max_s,
            "mean_s": keygen.mean_s,
            "quantiles": [[p, value] for p, value in keygen.quantiles[:ROWS_CAP]],
            "histogram": [[b.low, b.high, b.count] for b in keygen.histogram[:ROWS_CAP]],
        },
    }


# ------------------------------------------------------------------------------------------- the client side


@dataclass(frozen=True)
class UnitDetail:
    """What the audit view shows of one unit: its record, steps, certificate, work order and SoC identity."""

    unit: Unit
    steps: tuple[StepRecord, ...]
    certificate: CertificateRecord | None
    order: str | None
    identity: IdentityRecord | None
    # Step records left out (a unit retried more than STEPS_CAP times).
    steps_left_out: int = 0


class _Fields:
    """Typed access to one answer object; anything unexpected is a MalformedAnswer naming the field."""

    def __init__(self, data: object, what: str) -> None:
        if not isinstance(data, dict):
            raise MalformedAnswer(
                f"the station service's {what} is not an object — is the service the same version?"
            )
        self.data = data
        self.what = what

    def _bad(self, key: str, expected: str) -> MalformedAnswer:
        return MalformedAnswer(
            f"the station service's {self.what} has a malformed {key} (expected {expected}) — is the service the "
            "same version as this window? Restart both, then try again"
        )

    def whole(self, key: str, *, optional: bool = False) -> Any:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "a whole number")
        return value

    def number(self, key: str, *, optional: bool = False) -> Any:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, "a number")
        return float(value)

    def text(self, key: str, limit: int = NAME_CAP, *, optional: bool = False) -> Any:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self._bad(key, "text")
        return cut(value, limit)

    def time(self, key: str, *, optional: bool = False) -> Any:
        value = self.data.get(key)
        if value is None and optional:
            return None
        try:
            moment = _moment(value, what=key)
        except BadRequest:
            raise self._bad(key, "an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise self._bad(key, "a time with its offset")
        return moment

    def rows(self, key: str, cap: int) -> list[Any]:
        value = self.data.get(key)
        if not isinstance(value, list):
            raise self._bad(key, "a list")
        if len(value) > cap:
            raise self._bad(key, f"at most {cap} rows")
        return value


def unit_from_wire(data: object) -> Unit:
    r = _Fields(data, "unit")
    state = r.text("state")
    if state not in UnitState.__members__.values():
        raise r._bad("state", "a unit state")
    return Unit(
        id=r.whole("id"),
        serial=r.text("serial"),
        profile=r.text("profile"),
        device=r.text("device"),
        fixture=r.text("fixture", optional=True),
        batch=r.text("batch", optional=True),
        operator=r.text("operator"),
        station=r.text("station"),
        state=UnitState(state),
        attempt=r.whole("attempt"),
        started_at=r.time("started_at"),
        ended_at=r.time("ended_at", optional=True),
        failed_step=r.text("failed_step", optional=True),
        message=r.text("message", MESSAGE_CAP, optional=True),
        host_key_type=r.text("host_key_type", optional=True),
        host_key_fingerprint=r.text("host_key_fingerprint", optional=True),
        reprovision_reason=r.text("reprovision_reason", MESSAGE_CAP, optional=True),
        superseded_by=r.whole("superseded_by", optional=True),
        certificate_serial=r.text("certificate_serial", optional=True),
        certificate_fingerprint=r.text("certificate_fingerprint", optional=True),
        certificate_revoked_at=r.time("certificate_revoked_at", optional=True),
    )


def units_from_wire(data: object, *, cap: int = PAGE_CAP) -> list[Unit]:
    r = _Fields(data, "page of units")
    return [unit_from_wire(row) for row in r.rows("units", cap)]


def step_from_wire(data: object) -> StepRecord:
    r = _Fields(data, "step record")
    outcome = r.text("outcome")
    if outcome not in StepOutcome.__members__.values():
        raise r._bad("outcome", "a step outcome")
    return StepRecord(
        id=r.whole("id"),
        unit_id=r.whole("unit_id"),
        step=r.text("step"),
        attempt=r.whole("attempt"),
        outcome=StepOutcome(outcome),
        started_at=r.time("started_at"),
        ended_at=r.time("ended_at"),
        output_sha256=r.text("output_sha256", optional=True),
        excerpt=r.text("excerpt", EXCERPT_CAP),
        message=r.text("message", MESSAGE_CAP),
    )


def certificate_from_wire(data: object) -> CertificateRecord:
    r = _Fields(data, "certificate record")
    serial = r.text("serial_number")
    if not serial.isdigit():
        raise r._bad("serial_number", "decimal digits")
    pem = r.text("pem", PEM_CAP)
    return CertificateRecord(
        unit_id=r.whole("unit_id"),
        serial_number=int(serial),
        serial_hex=r.text("serial_hex"),
        fingerprint_sha256=r.text("fingerprint_sha256"),
        spki_sha256=r.text("spki_sha256"),
        subject=r.text("subject"),
        not_before=r.time("not_before"),
        not_after=r.time("not_after"),
        pem=pem,
        issued_at=r.time("issued_at"),
        revoked_at=r.time("revoked_at", optional=True),
        revocation_reason=r.text("revocation_reason", MESSAGE_CAP, optional=True),
        revoked_by=r.text("revoked_by", optional=True),
    )


def identity_from_wire(data: object) -> IdentityRecord | None:
    if data is None:
        return None
    r = _Fields(data, "identity record")
    return IdentityRecord(
        unit_id=r.whole("unit_id"),
        soc_id=r.text("soc_id"),
        source=r.text("source"),
        recorded_at=r.time("recorded_at"),
    )


def detail_to_wire(detail: UnitDetail) -> dict[str, Any]:
    return {
        "unit": unit_to_wire(detail.unit),
        "steps": [step_to_wire(step) for step in detail.steps[:STEPS_CAP]],
        "steps_left_out": detail.steps_left_out + max(0, len(detail.steps) - STEPS_CAP),
        "certificate": None if detail.certificate is None else certificate_to_wire(detail.certificate),
        "order": _text(detail.order),
        "identity": identity_to_wire(detail.identity),
    }


def detail_from_wire(data: object) -> UnitDetail:
    r = _Fields(data, "unit detail")
    certificate = r.data.get("certificate")
    return UnitDetail(
        unit=unit_from_wire(r.data.get("unit")),
        steps=tuple(step_from_wire(step) for step in r.rows("steps", STEPS_CAP)),
        certificate=None if certificate is None else certificate_from_wire(certificate),
        order=r.text("order", optional=True),
        identity=identity_from_wire(r.data.get("identity")),
        steps_left_out=r.whole("steps_left_out"),
    )


def _pairs(rows: list[Any], what: str, size: int) -> list[list[Any]]:
    for row in rows:
        if not isinstance(row, list) or len(row) != size:
            raise MalformedAnswer(f"the station service's yield summary has a malformed {what} row")
    return rows


def yield_from_wire(data: object) -> YieldSummary:
    r = _Fields(data, "yield summary")
    k = _Fields(r.data.get("keygen"), "key-generation statistics")
    failures = _pairs(r.rows("failures_by_step", ROWS_CAP), "failures", 2)
    quantiles = _pairs(k.rows("quantiles", ROWS_CAP), "quantile", 2)
    bins = _pairs(k.rows("histogram", ROWS_CAP), "histogram", 3)
    try:
        keygen = DurationStats(
            count=k.whole("count"),
            min_s=k.number("min_s", optional=True),
            max_s=k.number("max_s", optional=True),
            mean_s=k.number("mean_s", optional=True),
            quantiles=tuple((float(p), float(value)) for p, value in quantiles),
            histogram=tuple(HistogramBin(float(low), float(high), int(count)) for low, high, count in bins),
        )
        failures_by_step = tuple((cut(str(step), NAME_CAP), int(count)) for step, count in failures)
    except (TypeError, ValueError):
        raise MalformedAnswer("the station service's yield summary has a malformed number") from None
    return YieldSummary(
        since=r.time("since", optional=True),
        until=r.time("until", optional=True),
        batch=r.text("batch", optional=True),
        units=r.whole("units"),
        running=r.whole("running"),
        passed=r.whole("passed"),
        passed_first_attempt=r.whole("passed_first_attempt"),
        failed=r.whole("failed"),
        aborted=r.whole("aborted"),
        superseded=r.whole("superseded"),
        first_started=r.time("first_started", optional=True),
        last_started=r.time("last_started", optional=True),
        failures_by_step=failures_by_step,
        keygen=keygen,
    )


# ------------------------------------------------------------------------------------- a unit's label prints


@dataclass(frozen=True)
class LabelHistory:
    """A unit's label prints as the window shows them beside "Reprint label": the newest (at most
    :data:`LABEL_PRINTS_CAP`, oldest first), and whether earlier ones were left out."""

    unit_id: int
    serial: str
    prints: tuple[LabelPrint, ...]
    earlier: bool = False


def label_print_to_wire(record: LabelPrint) -> dict[str, Any]:
    return {
        "id": record.id,
        "unit_id": record.unit_id,
        "at": record.at.isoformat(),
        "by": cut(record.by, NAME_CAP),
        "printer": cut(record.printer, NAME_CAP),
        "reprint": record.reprint,
        "printed": record.printed,
        "message": cut(record.message, LABEL_MESSAGE_CAP),
    }


def label_history_to_wire(unit: Unit, prints: list[LabelPrint]) -> dict[str, Any]:
    """``prints``: the unit's newest prints, oldest first — one more than :data:`LABEL_PRINTS_CAP` says that
    earlier ones are left out."""
    shown = prints[-LABEL_PRINTS_CAP:]
    return {
        "unit": unit.id,
        "serial": cut(unit.serial, NAME_CAP),
        "prints": [label_print_to_wire(record) for record in shown],
        "earlier": len(prints) > len(shown),
    }


def label_print_from_wire(data: object) -> LabelPrint:
    r = _Fields(data, "label print")
    flags = {}
    for key in ("reprint", "printed"):
        value = r.data.get(key)
        if not isinstance(value, bool):
            raise r._bad(key, "true or false")
        flags[key] = value
    return LabelPrint(
        id=r.whole("id"),
        unit_id=r.whole("unit_id"),
        at=r.time("at"),
        by=r.text("by"),
        printer=r.text("printer"),
        reprint=flags["reprint"],
        printed=flags["printed"],
        message=r.text("message", LABEL_MESSAGE_CAP),
    )


def label_history_from_wire(data: object) -> LabelHistory:
    r = _Fields(data, "label history")
    earlier = r.data.get("earlier")
    if not isinstance(earlier, bool):
        raise r._bad("earlier", "true or false")
    return LabelHistory(
        unit_id=r.whole("unit"),
        serial=r.text("serial"),
        prints=tuple(label_print_from_wire(record) for record in r.rows("prints", LABEL_PRINTS_CAP)),
        earlier=earlier,
    )
