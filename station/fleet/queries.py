"""What quality leads and auditors ask the fleet: chains, conflicts, units across stations, exports.

Everything is computed in SQL on indexed columns of the derived tables (``fleet_units``, ``fleet_certificates``)
or, for the chains, in one ordered pass over each station's journal on the server.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from station.fleet.connection import deadline
from station.states import StepOutcome, UnitState

if TYPE_CHECKING:
    import psycopg

    from station.audit import AuditLog, YieldSummary

GENESIS_HASH = "0" * 64
VERIFY_TIMEOUT_S = 600.0
QUERY_TIMEOUT_S = 60.0

FLEET_EXPORT_FIELDS = (
    "station",
    "line",
    "unit_id",
    "serial",
    "state",
    "profile",
    "device",
    "fixture",
    "batch",
    "operator",
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
)

# What a CSV cell must not start with (a spreadsheet would run it as a formula).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ChainReport:
    station: str
    line: str
    events: int
    head_seq: int
    head_hash: str | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chains(conn: psycopg.Connection[Any]) -> list[ChainReport]:
    """Every station's chain in the fleet: starts at 1, no gap, each event links to the previous one, each hash
    matches its content (recomputed on the server: the same formula as the station's)."""
    reports = []
    with deadline(conn, VERIFY_TIMEOUT_S, what="fleet verify"):
        stations = conn.execute("SELECT name, line FROM fleet_stations ORDER BY name").fetchall()
        for name, line in stations:
            head = conn.execute(
                "SELECT count(*), coalesce(max(seq), 0) FROM fleet_journal WHERE station = %s", [name]
            ).fetchone()
            assert head is not None
            count, head_seq = int(head[0]), int(head[1])
            bad = conn.execute(
                r"""
                SELECT seq, expected_seq, prev_hash, expected_prev, hash,
                       encode(sha256(convert_to(prev_hash || E'\n' || seq || E'\n' || at || E'\n' || kind || E'\n'
                                                || payload, 'UTF8')), 'hex') AS recomputed
                FROM (
                    SELECT seq, prev_hash, hash, at, kind, payload,
                           coalesce(lag(seq) OVER w, 0) + 1 AS expected_seq,
                           coalesce(lag(hash) OVER w, %s) AS expected_prev
                    FROM fleet_journal WHERE station = %s WINDOW w AS (ORDER BY seq)
                ) AS chain
                WHERE seq <> expected_seq OR prev_hash <> expected_prev
                   OR hash <> encode(sha256(convert_to(prev_hash || E'\n' || seq || E'\n' || at || E'\n' || kind
                                                       || E'\n' || payload, 'UTF8')), 'hex')
                ORDER BY seq LIMIT 1
                """,
                [GENESIS_HASH, name],
            ).fetchone()
            head_hash_row = conn.execute(
                "SELECT hash FROM fleet_journal WHERE station = %s AND seq = %s", [name, head_seq]
            ).fetchone()
            problem = None
            if bad is not None:
                seq, expected_seq, prev_hash, expected_prev, digest, recomputed = bad
                if seq != expected_seq:
                    problem = f"events {expected_seq}–{seq - 1} are missing (the journal jumps to {seq})"
                elif prev_hash != expected_prev:
                    problem = f"event {seq} does not follow event {seq - 1}"
                else:
                    problem = f"event {seq}: hash does not match its content"
            reports.append(
                ChainReport(
                    name,
                    line,
                    count,
                    head_seq,
                    None if head_hash_row is None else str(head_hash_row[0]),
                    problem,
                )
            )
    return reports


@dataclass(frozen=True)
class Comparison:
    """The local log against the fleet's copy of this station's journal."""

    local_events: int
    fleet_events: int
    first_difference: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def compare_with_fleet(audit: AuditLog, conn: psycopg.Connection[Any], station: str) -> Comparison:
    """Walk both journals in order and name the first event that differs.

    A local rewrite (the chain recomputed) differs at the first edited event; a restored old backup ends before
    the fleet's copy does (or differs where it has since written new events under reused numbers). Local events
    the fleet does not have yet are the backlog, not a problem.
    """
    chunk = 5000
    with deadline(conn, VERIFY_TIMEOUT_S, what="comparing the local log with the fleet"):
        row = conn.execute(
            "SELECT count(*), coalesce(max(seq), 0) FROM fleet_journal WHERE station = %s", [station]
        ).fetchone()
        assert row is not None
        fleet_count, fleet_head = int(row[0]), int(row[1])
        local_head = audit.fleet_backlog()[1]
        first = 1
        while first <= fleet_head:
            last = first + chunk - 1
            central = dict(
                conn.execute(
                    "SELECT seq, hash FROM fleet_journal WHERE station = %s AND seq BETWEEN %s AND %s",
                    [station, first, last],
                ).fetchall()
            )
            local = audit.event_hashes(first, last)
            for seq in range(first, min(last, fleet_head) + 1):
                mine, theirs = local.get(seq), central.get(seq)
                if theirs is None:
                    continue  # a gap in the fleet's copy: fleet verify reports it
                if mine is None:
                    return Comparison(
                        local_head,
                        fleet_count,
                        seq,
                        (
                            f"the fleet holds event {seq} of this station but the local log "
                            + (f"ends at event {local_head}" if seq > local_head else f"has no event {seq}")
                            + " — an old backup was restored or events were deleted locally"
                        ),
                    )
                if mine != theirs:
                    return Comparison(
                        local_head,
                        fleet_count,
                        seq,
                        (
                            f"event {seq} differs from the fleet's copy (local hash {mine[:16]}…, fleet {theirs[:16]}…) "
                            f"— the local log was rewritten from event {seq} on, or an old backup was restored"
                        ),
                    )
            first = last + 1
    return Comparison(local_head, fleet_count, None, None)


@dataclass(frozen=True)
class Conflict:
    kind: str
    subject: str
    detail: str


def conflicts(conn: psycopg.Connection[Any]) -> list[Conflict]:
    """What the fleet found when backlogs drained: one board passed on two stations, one host key for two serials,
    one public key certified twice — and the units that were provisioned without the fleet's check."""
    found: list[Conflict] = []
    with deadline(conn, QUERY_TIMEOUT_S, what="listing conflicts"):
        for serial, places in conn.execute(
            """
            SELECT u.serial, string_agg(format('%%s (line %%s, unit %%s, %%s)', u.station, s.line, u.unit_id,
                                              to_char(u.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"')),
                                       '; ' ORDER BY u.started_at)
            FROM fleet_units u JOIN fleet_stations s ON s.name = u.station
            WHERE u.state = %s
            GROUP BY u.serial HAVING count(DISTINCT u.station) > 1 ORDER BY u.serial
            """,
            [UnitState.PASSED.value],
        ).fetchall():
            found.append(
                Conflict("serial", serial, f"board {serial} passed on more than one station: {places}")
            )
        for fingerprint, serials in conn.execute(
            """
            SELECT host_key_fingerprint, string_agg(DISTINCT serial || ' @ ' || station, ', ')
            FROM fleet_units WHERE state = %s AND host_key_fingerprint IS NOT NULL
            GROUP BY host_key_fingerprint HAVING count(DISTINCT serial) > 1
            """,
            [UnitState.PASSED.value],
        ).fetchall():
            found.append(
                Conflict(
                    "host key", fingerprint, f"host key {fingerprint} belongs to several boards: {serials}"
                )
            )
        for spki, holders in conn.execute(
            """
            SELECT spki_sha256, string_agg(station || ' cert ' || serial_hex, ', ')
            FROM fleet_certificates GROUP BY spki_sha256 HAVING count(*) > 1
            """
        ).fetchall():
            found.append(
                Conflict("public key", spki, f"public key {spki[:16]}… certified more than once: {holders}")
            )
        for station, unit_id, serial, reason, flagged_at in conn.execute(
            "SELECT station, unit_id, serial, reason, flagged_at FROM fleet_flags ORDER BY flagged_at"
        ).fetchall():
            # Work-order flags (station/fleet/order_schema.py) are conflicts: an order over-filled while offline.
            kind = "order" if reason.startswith("work order ") else "unchecked"
            found.append(
                Conflict(
                    kind,
                    serial or "?",
                    f"unit {unit_id} on station {station}: {reason} "
                    f"(arrived {flagged_at.astimezone():%Y-%m-%d %H:%M})",
                )
            )
    return found


# ------------------------------------------------------------------------------------------- units


@dataclass(frozen=True)
class FleetFilter:
    """Which fleet units a view or export covers; None means any."""

    station: str | None = None
    line: str | None = None
    serial_prefix: str | None = None
    result: str | None = None
    operator: str | None = None
    batch: str | None = None
    failed_step: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _where(filters: FleetFilter) -> tuple[str, list[Any]]:
    clauses, params = _clauses(filters)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _clauses(filters: FleetFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("u.station", filters.station),
        ("u.line", filters.line),
        ("u.state", filters.result),
        ("u.operator", filters.operator),
        ("u.batch", filters.batch),
        ("u.failed_step", filters.failed_step),
    ):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if filters.serial_prefix:
        # A range on the serial index (LIKE with user text would need escaping and a special operator class).
        clauses.append("u.serial >= %s AND u.serial < %s")
        params += [filters.serial_prefix, filters.serial_prefix + "\U0010ffff"]
    if filters.since is not None:
        clauses.append("u.started_at >= %s")
        params.append(filters.since)
    if filters.until is not None:
        clauses.append("u.started_at < %s")
        params.append(filters.until)
    return clauses, params


_UNIT_SELECT = """
SELECT u.station, u.line, u.unit_id, u.serial, u.state, u.profile, u.device, u.fixture, u.batch, u.operator,
       u.started_at, u.ended_at, extract(epoch FROM u.ended_at - u.started_at) AS duration_s, u.failed_step,
       u.message, u.attempt, c.serial_hex, c.fingerprint_sha256, c.revoked_at, u.reprovision_reason
FROM fleet_units u
LEFT JOIN LATERAL (SELECT serial_hex, fingerprint_sha256, revoked_at FROM fleet_certificates c
                   WHERE c.station = u.station AND c.unit_id = u.unit_id ORDER BY c.cert_id DESC LIMIT 1) c ON true
"""


# A page's position in the listing: the values of the ordering columns of its last row (keyset pagination —
# the next page starts right after it through the same index, however deep, where OFFSET would count every
# skipped row again).
PageKey = tuple[Any, ...]


def _ordering(filters: FleetFilter, newest_first: bool) -> list[tuple[str, str, bool]]:
    """(column, field, descending) of the listing's order, unique per unit."""
    # A serial search lists by serial (the serial index answers it at once, however old the boards); everything
    # else newest first (the started_at indexes, with station or line and state in front, answer that).
    tail = [
        ("u.started_at", "started_at", newest_first),
        ("u.station", "station", newest_first),
        ("u.unit_id", "unit_id", newest_first),
    ]
    return [("u.serial", "serial", False), *tail] if filters.serial_prefix else tail


def page_key(filters: FleetFilter, unit: dict[str, Any], *, newest_first: bool = True) -> PageKey:
    """The key of ``unit`` (a row of :func:`units_page`): pass it as ``after`` to get the rows that follow it."""
    return tuple(unit[field] for _column, field, _descending in _ordering(filters, newest_first))


def _after(order: list[tuple[str, str, bool]], key: PageKey) -> tuple[str, list[Any]]:
    """Rows strictly after ``key`` in ``order``: a row comparison per run of columns sorted the same way (so
    PostgreSQL can seek the index), nested for a direction change (serial up, then time down)."""
    runs: list[tuple[list[str], list[Any], bool]] = []
    for (column, _field, descending), value in zip(order, key, strict=True):
        if runs and runs[-1][2] == descending:
            runs[-1][0].append(column)
            runs[-1][1].append(value)
        else:
            runs.append(([column], [value], descending))
    text = ""
    params: list[Any] = []
    for columns, values, descending in reversed(runs):
        row = f"({', '.join(columns)})"
        marks = f"({', '.join(['%s'] * len(values))})"
        strict = f"{row} {'<' if descending else '>'} {marks}"
        if text:
            text, params = f"({strict} OR ({row} = {marks} AND {text}))", [*values, *values, *params]
        else:
            text, params = strict, list(values)
    return text, params


def units_page(
    conn: psycopg.Connection[Any],
    filters: FleetFilter,
    *,
    offset: int = 0,
    limit: int = 100,
    newest_first: bool = True,
    after: PageKey | None = None,
) -> list[dict[str, Any]]:
    """One page of fleet units, newest first by default; the page after ``after`` (see :func:`page_key`)."""
    clauses, params = _clauses(filters)
    order = _ordering(filters, newest_first)
    if after is not None:
        clause, values = _after(order, after)
        clauses.append(clause)
        params += values
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    ordering = ", ".join(
        f"{column} {'DESC' if descending else 'ASC'}" for column, _field, descending in order
    )
    with deadline(conn, QUERY_TIMEOUT_S, what="a page of fleet units"):
        rows = conn.execute(
            _UNIT_SELECT + where + f" ORDER BY {ordering} LIMIT %s OFFSET %s",
            [*params, limit, offset],
        ).fetchall()
    return [dict(zip(FLEET_EXPORT_FIELDS, row, strict=True)) for row in rows]


def count_units(conn: psycopg.Connection[Any], filters: FleetFilter) -> int:
    where, params = _where(filters)
    with deadline(conn, QUERY_TIMEOUT_S, what="counting fleet units"):
        row = conn.execute("SELECT count(*) FROM fleet_units u" + where, params).fetchone()
    return int(row[0]) if row else 0


def stream_units(conn: psycopg.Connection[Any], filters: FleetFilter) -> Iterator[dict[str, Any]]:
    """Every matching unit, oldest first, through a server-side cursor (never all rows in memory)."""
    where, params = _where(filters)
    with conn.transaction(), conn.cursor(name="fleet_export") as cursor:
        cursor.itersize = 2000
        cursor.execute(_UNIT_SELECT + where + " ORDER BY u.started_at, u.station, u.unit_id", params)
        for row in cursor:
            yield dict(zip(FLEET_EXPORT_FIELDS, row, strict=True))


@dataclass(frozen=True)
class GroupYield:
    station: str
    line: str
    units: int
    passed: int
    failed: int
    aborted: int
    running: int

    @property
    def pass_rate(self) -> float | None:
        finished = self.units - self.running
        return self.passed / finished if finished else None


def yield_by_station(conn: psycopg.Connection[Any], filters: FleetFilter) -> list[GroupYield]:
    where, params = _where(filters)
    with deadline(conn, QUERY_TIMEOUT_S, what="yield by station"):
        rows = conn.execute(
            "SELECT u.station, u.line, count(*), count(*) FILTER (WHERE u.state IN (%s, %s)), "
            "count(*) FILTER (WHERE u.state = %s), count(*) FILTER (WHERE u.state = %s), "
            "count(*) FILTER (WHERE u.state = %s) "
            "FROM fleet_units u" + where + " GROUP BY u.station, u.line ORDER BY u.line, u.station",
            [
                *(UnitState.PASSED.value, UnitState.SUPERSEDED.value, UnitState.FAILED.value),
                *(UnitState.ABORTED.value, UnitState.RUNNING.value),
                *params,
            ],
        ).fetchall()
    return [GroupYield(str(r[0]), str(r[1]), *(int(v) for v in r[2:])) for r in rows]


def yield_summary(conn: psycopg.Connection[Any], filters: FleetFilter) -> YieldSummary:
    """The fleet's yield for ``filters`` as the same :class:`~station.audit.YieldSummary` the local log gives
    (pass rate, first-pass yield, failed attempts by step, key-generation times), so that one chart draws both."""
    from station.audit import KEYGEN_STEP, YieldSummary, duration_stats

    clauses, params = _clauses(filters)
    scope = "".join(f" AND {clause}" for clause in clauses)
    # The whole fleet needs no join: every step row belongs to a unit (both are derived from one journal).
    joined = (
        "FROM fleet_steps s JOIN fleet_units u ON u.station = s.station AND u.unit_id = s.unit_id"
        if clauses
        else "FROM fleet_steps s"
    )
    with deadline(conn, QUERY_TIMEOUT_S, what="the fleet's yield"):
        groups = conn.execute(
            "SELECT u.state, u.attempt, count(*), min(u.started_at), max(u.started_at) FROM fleet_units u WHERE true"
            + scope
            + " GROUP BY u.state, u.attempt",
            params,
        ).fetchall()
        failures = conn.execute(
            f"SELECT s.step, count(*) {joined} WHERE s.outcome = %s{scope} "
            "GROUP BY s.step ORDER BY count(*) DESC, s.step",
            [StepOutcome.FAILED.value, *params],
        ).fetchall()
        # Milliseconds, as the local log rounds them: a few thousand groups however many key generations.
        durations = conn.execute(
            f"SELECT round(extract(epoch FROM s.ended_at - s.started_at)::numeric, 3) AS d, count(*) {joined} "
            f"WHERE s.step = %s AND s.outcome = %s AND s.ended_at IS NOT NULL{scope} GROUP BY d ORDER BY d",
            [KEYGEN_STEP, StepOutcome.PASSED.value, *params],
        ).fetchall()
    by_state: dict[str, int] = {}
    first_attempt = 0
    for state, attempt, count, _first, _last in groups:
        by_state[state] = by_state.get(state, 0) + int(count)
        if state in (UnitState.PASSED, UnitState.SUPERSEDED) and attempt == 1:
            first_attempt += int(count)
    starts = [g[3] for g in groups if g[3] is not None] + [g[4] for g in groups if g[4] is not None]
    return YieldSummary(
        since=filters.since,
        until=filters.until,
        batch=filters.batch,
        units=sum(by_state.values()),
        running=by_state.get(UnitState.RUNNING, 0),
        passed=by_state.get(UnitState.PASSED, 0) + by_state.get(UnitState.SUPERSEDED, 0),
        passed_first_attempt=first_attempt,
        failed=by_state.get(UnitState.FAILED, 0),
        aborted=by_state.get(UnitState.ABORTED, 0),
        superseded=by_state.get(UnitState.SUPERSEDED, 0),
        first_started=min(starts) if starts else None,
        last_started=max(starts) if starts else None,
        failures_by_step=tuple((str(step), int(count)) for step, count in failures),
        keygen=duration_stats(
            [(float(value), int(count)) for value, count in durations if value is not None]
        ),
    )


def traceability(conn: psycopg.Connection[Any], serial: str) -> list[dict[str, Any]]:
    """Every attempt on every station for one board, oldest first, with each event and step attempt of it."""
    units = [
        u
        for u in units_page(conn, FleetFilter(serial_prefix=serial), limit=1000, newest_first=False)
        if u["serial"] == serial
    ]
    with deadline(conn, QUERY_TIMEOUT_S, what="tracing a board"):
        for unit in units:
            unit["events"] = [
                {"seq": seq, "at": at, "kind": kind}
                for seq, at, kind in conn.execute(
                    "SELECT seq, at, kind FROM fleet_journal WHERE station = %s AND unit_id = %s ORDER BY seq",
                    [unit["station"], unit["unit_id"]],
                ).fetchall()
            ]
            unit["steps"] = [
                {
                    "step": step,
                    "attempt": attempt,
                    "outcome": outcome,
                    "started_at": started,
                    "duration_s": None if seconds is None else float(seconds),
                }
                for step, attempt, outcome, started, seconds in conn.execute(
                    "SELECT step, attempt, outcome, started_at, extract(epoch FROM ended_at - started_at) "
                    "FROM fleet_steps WHERE station = %s AND unit_id = %s ORDER BY step_id",
                    [unit["station"], unit["unit_id"]],
                ).fetchall()
            ]
    return units


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 3)
    if hasattr(value, "__float__") and not isinstance(value, int | bool):
        return round(float(value), 3)
    return value


def export_csv(conn: psycopg.Connection[Any], filters: FleetFilter, out: TextIO) -> int:
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(FLEET_EXPORT_FIELDS)
    count = 0
    for record in stream_units(conn, filters):
        writer.writerow(
            [
                ("'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value)
                for value in (_cell(record[field]) for field in FLEET_EXPORT_FIELDS)
            ]
        )
        count += 1
    return count


def export_jsonl(conn: psycopg.Connection[Any], filters: FleetFilter, out: TextIO) -> int:
    count = 0
    for record in stream_units(conn, filters):
        out.write(json.dumps({key: _cell(value) for key, value in record.items()}, ensure_ascii=False) + "\n")
        count += 1
    return count
