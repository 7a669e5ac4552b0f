"""The fleet's figures, against a private PostgreSQL started (and stopped) by this benchmark.

    .venv/bin/python -m bench.fleet [--units 10000] [--events 10000000] [--procs 8] [--checks 1000]
                                    [--out bench/results/fleet.json]

1. Forwarding: a local audit log holding the events of ``--units`` provisioned units (generated straight into
   SQLite with a correct hash chain — the station itself writes through AuditLog) is drained into an empty fleet
   by the station's Forwarder: drain time of the whole backlog and events/s.
2. Fleet checks: ``--procs`` station processes (each its own registered role) ask the guard's questions for
   ``--checks`` units each, all at once: wall per unit added by the checks (fleet_check_unit + the public-key
   question), compared with a unit's wall from bench/results/provision-ssh.json.
3. Central filter → first page over ``--events`` journal events: the journal and the derived units and steps
   tables are filled with COPY (16 events per unit, as a real unit writes), then each quality-lead filter is timed
   to its first page (goal 100 ms).
4. The GUI's whole-fleet scope over the same fill: the yield summary and groups per scope, and a page deep in the
   listing by keyset (as scrolling asks) against OFFSET.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from station.audit import AuditLog
from station.config import FleetConfig
from station.fleet.cluster import PrivateCluster
from station.fleet.connection import connect
from station.fleet.forwarder import Forwarder
from station.fleet.queries import FleetFilter, page_key, units_page, yield_by_station, yield_summary
from station.fleet.schema import migrate, register_station, station_role, write_pgpass
from station.profiles import DEFAULT_PROFILE, load_profile

HERE = Path(__file__).resolve().parent
T0 = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)
# The shipped profile's enrollment steps, in order (not a copy that could drift from it).
STEPS = load_profile(DEFAULT_PROFILE).step_names()
EVENTS_PER_UNIT = (
    16  # started, host key, 13 steps, passed (a certificate replaces one step's event on average)
)
REPEATS = 5
DATABASE = "fleet"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def chain(prev: str, seq: int, at: str, kind: str, payload: str) -> str:
    return hashlib.sha256("\n".join((prev, str(seq), at, kind, payload)).encode()).hexdigest()


def generate_local_log(path: Path, units: int, station: str) -> int:
    """A station's audit.db whose journal holds ``units`` passed units (the forwarder reads the journal only)."""
    AuditLog(path).close()
    raw = sqlite3.connect(path)
    rows = []
    prev = "0" * 64
    seq = 0
    step_id = 0
    for unit_id in range(1, units + 1):
        started = T0 + timedelta(seconds=30 * unit_id)
        at = started.isoformat(timespec="microseconds")
        unit = {
            "id": unit_id,
            "serial": f"2026{unit_id:011d}",
            "profile": "welma-optee",
            "device": "ssh://x",
            "fixture": f"F{unit_id % 8}",
            "batch": None,
            "operator": "ann",
            "station": station,
            "state": "running",
            "attempt": 1,
            "started_at": at,
            "ended_at": None,
            "failed_step": None,
            "message": None,
            "host_key_type": None,
            "host_key_fingerprint": None,
            "reprovision_reason": None,
            "superseded_by": None,
        }
        events = [("unit.started", "units", unit_id, dict(unit))]
        unit.update(host_key_type="ssh-ed25519", host_key_fingerprint=f"SHA256:{unit_id:043d}")
        events.append(("unit.host_key_pinned", "units", unit_id, dict(unit)))
        for step in STEPS:
            step_id += 1
            events.append(
                (
                    "step.recorded",
                    "steps",
                    step_id,
                    {
                        "id": step_id,
                        "unit_id": unit_id,
                        "step": step,
                        "attempt": 1,
                        "outcome": "passed",
                        "started_at": at,
                        "ended_at": at,
                        "output_sha256": "0" * 64,
                        "excerpt": "ok",
                        "message": "",
                    },
                )
            )
        unit.update(state="passed", ended_at=at)
        events.append(("unit.passed", "units", unit_id, dict(unit)))
        for kind, table, pk, row in events:
            seq += 1
            payload = canonical({"table": table, "pk": pk, "unit_id": unit_id, "row": row})
            digest = chain(prev, seq, at, kind, payload)
            rows.append((seq, at, kind, unit_id, payload, prev, digest))
            prev = digest
    with raw:
        raw.executemany(
            "INSERT INTO events (seq, at, kind, unit_id, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    raw.close()
    return seq


def measure_drain(cluster: PrivateCluster, admin_pgpass: Path, work: Path, units: int) -> dict[str, Any]:
    home = work / "station-a"
    home.mkdir()
    events = generate_local_log(home / "audit.db", units, "st-a")
    with connect(cluster.admin_dsn(DATABASE), passfile=admin_pgpass) as conn:
        registration = register_station(
            conn, station="st-a", line="L1", ca_fingerprint="0" * 64, password="bench-a"
        )
    passfile = home / "pgpass"
    write_pgpass(
        passfile,
        host="127.0.0.1",
        port=cluster.port,
        database=DATABASE,
        role=registration.role,
        password="bench-a",
    )
    fleet = FleetConfig(
        dsn=f"postgresql://{registration.role}@127.0.0.1:{cluster.port}/{DATABASE}",
        station_name="st-a",
        line="L1",
        passfile=passfile,
    )
    with AuditLog(home / "audit.db") as audit:
        forwarder = Forwarder(fleet, audit)
        began = time.perf_counter()
        while forwarder.send_once():
            pass
        drain_s = time.perf_counter() - began
        assert audit.fleet_backlog()[2] == 0
    print(
        f"  drained {events} events of {units} units in {drain_s:.1f} s ({events / drain_s:.0f} events/s)",
        flush=True,
    )
    return {
        "units": units,
        "events": events,
        "drain_s": round(drain_s, 2),
        "events_per_s": round(events / drain_s, 1),
        "batch_events": 500,
    }


def child_checks(args: argparse.Namespace) -> int:
    """One station process of the checks figure: prints its latencies (ms) as JSON."""
    from station.fleet.guard import FleetGuard

    fleet = FleetConfig(dsn=args.dsn, station_name=args.station, line="L1", passfile=Path(args.passfile))
    guard = FleetGuard(fleet)
    guard.check_unit(serial=f"warm-{args.station}", unit_id=0, reprovision=False, host_key=None)
    latencies = []
    for n in range(args.checks):
        began = time.perf_counter()
        verdict = guard.check_unit(
            serial=f"{args.station}-{n:06d}",
            unit_id=n + 1,
            reprovision=False,
            host_key=f"SHA256:{args.station}:{n}",
        )
        guard.public_key_holder(hashlib.sha256(f"{args.station}{n}".encode()).hexdigest())
        latencies.append((time.perf_counter() - began) * 1000)
        assert verdict.checked, verdict.text
    print(json.dumps(latencies))
    return 0


def measure_checks(
    cluster: PrivateCluster, admin_pgpass: Path, work: Path, procs: int, checks: int
) -> dict[str, Any]:
    children = []
    with connect(cluster.admin_dsn(DATABASE), passfile=admin_pgpass) as conn:
        for index in range(procs):
            name = f"bench-{index}"
            registration = register_station(
                conn, station=name, line=f"L{index % 3}", ca_fingerprint="1" * 64, password=f"pw-{index}"
            )
            passfile = work / f"{name}.pgpass"
            write_pgpass(
                passfile,
                host="127.0.0.1",
                port=cluster.port,
                database=DATABASE,
                role=registration.role,
                password=f"pw-{index}",
            )
            children.append((name, registration.role, passfile))
    began = time.perf_counter()
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.fleet",
                "--child-checks",
                "--station",
                name,
                "--dsn",
                f"postgresql://{role}@127.0.0.1:{cluster.port}/{DATABASE}",
                "--passfile",
                str(passfile),
                "--checks",
                str(checks),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, role, passfile in children
    ]
    latencies: list[float] = []
    for run in runs:
        out, _ = run.communicate(timeout=1800)
        assert run.returncode == 0
        latencies += json.loads(out.strip().splitlines()[-1])
    wall = time.perf_counter() - began
    latencies.sort()
    unit_wall = unit_wall_s()
    median = statistics.median(latencies)
    result = {
        "processes": procs,
        "units_per_process": checks,
        "wall_s": round(wall, 1),
        "check_ms_median": round(median, 2),
        "check_ms_p95": round(latencies[int(0.95 * len(latencies))], 2),
        "check_ms_max": round(latencies[-1], 2),
        "unit_wall_s": unit_wall,
        "added_fraction_of_unit": round(median / 1000 / unit_wall, 4) if unit_wall else None,
    }
    print(f"  fleet checks: {result}", flush=True)
    return result


def unit_wall_s() -> float | None:
    try:
        data = json.loads((HERE / "results" / "provision-ssh.json").read_text())
    except (OSError, ValueError):
        return None
    value = data.get("station_unit_median_s")
    return float(value) if isinstance(value, int | float) else None


def fill_ten_million(cluster: PrivateCluster, admin_pgpass: Path, events: int) -> dict[str, Any]:
    """COPY ``events`` journal rows and the units they describe, over 16 stations on 4 lines."""
    units = events // EVENTS_PER_UNIT
    stations = 16
    rng = random.Random(7)
    began = time.perf_counter()
    with connect(cluster.admin_dsn(DATABASE), passfile=admin_pgpass, statement_timeout_s=3600) as conn:
        for index in range(stations):
            conn.execute(
                "INSERT INTO fleet_stations (name, line, ca_fingerprint, role_name) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [
                    f"gen-{index:02d}",
                    f"L{index % 4 + 1}",
                    "2" * 64,
                    station_role(DATABASE, f"gen-{index:02d}"),
                ],
            )
        conn.execute("ALTER TABLE fleet_journal DISABLE TRIGGER USER")
        per_station = [0] * stations
        with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY fleet_journal (station, seq, at, kind, unit_id, payload, prev_hash, hash) FROM STDIN"
            ) as copy,
        ):
            lines = []
            for unit in range(units):
                station = unit % stations
                at = (T0 + timedelta(seconds=2 * unit)).isoformat()
                for kind_index in range(EVENTS_PER_UNIT):
                    per_station[station] += 1
                    seq = per_station[station]
                    kind = (
                        "unit.started"
                        if kind_index == 0
                        else "unit.passed"
                        if kind_index == 15
                        else "step.recorded"
                    )
                    lines.append(
                        f"gen-{station:02d}\t{seq}\t{at}\t{kind}\t{unit // stations + 1}\t"
                        f'{{"table":"steps","unit_id":{unit // stations + 1}}}\t{"0" * 64}\t{"1" * 64}\n'
                    )
                if len(lines) >= 100_000:
                    copy.write("".join(lines))
                    lines.clear()
            copy.write("".join(lines))
        conn.execute("ALTER TABLE fleet_journal ENABLE TRIGGER USER")
        journal_s = time.perf_counter() - began
        states = ["passed"] * 90 + ["failed"] * 7 + ["aborted"] * 2 + ["running"]
        failed_steps = ["keygen", "reboot", "tls_proof", "push"]
        with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY fleet_units (station, unit_id, line, serial, state, profile, device, fixture, batch, operator, attempt, "
                "started_at, ended_at, failed_step, host_key_type, host_key_fingerprint, last_seq) FROM STDIN"
            ) as copy,
        ):
            lines = []
            for unit in range(units):
                station = unit % stations
                started = T0 + timedelta(seconds=2 * unit)
                state = rng.choice(states)
                failed = rng.choice(failed_steps) if state == "failed" else "\\N"
                lines.append(
                    f"gen-{station:02d}\t{unit // stations + 1}\tL{station % 4 + 1}\t2026{unit:011d}\t{state}\twelma-optee\tssh://x\t"
                    f"F{unit % 8}\tB{unit // 1000:05d}\toperator-{unit % 40:02d}\t1\t{started.isoformat()}\t"
                    f"{(started + timedelta(seconds=1)).isoformat()}\t{failed}\tssh-ed25519\tSHA256:{unit:043d}\t"
                    f"{(unit // stations + 1) * EVENTS_PER_UNIT}\n"
                )
                if len(lines) >= 100_000:
                    copy.write("".join(lines))
                    lines.clear()
            copy.write("".join(lines))
        steps_began = time.perf_counter()
        steps = copy_steps(conn, units, stations, random.Random(15))
        steps_s = time.perf_counter() - steps_began
        conn.execute("ANALYZE fleet_journal")
        conn.execute("ANALYZE fleet_units")
        conn.execute("ANALYZE fleet_steps")
        (count,) = conn.execute("SELECT count(*) FROM fleet_journal").fetchone() or (0,)
    fill_s = time.perf_counter() - began
    print(
        f"  COPY {count} events + {units} units + {steps} steps in {fill_s:.0f} s (journal {journal_s:.0f} s, "
        f"steps {steps_s:.0f} s)",
        flush=True,
    )
    return {
        "events": int(count),
        "units": units,
        "stations": stations,
        "steps": steps,
        "fill_s": round(fill_s, 1),
        "journal_copy_s": round(journal_s, 1),
        "steps_copy_s": round(steps_s, 1),
    }


def copy_steps(conn: Any, units: int, stations: int, rng: random.Random) -> int:
    """The step attempts of every unit (fleet_steps, migration 3): all 13 steps passed, or up to a failed one;
    key generation 20–60 s. The journal's own trigger would derive them; COPY is how 10 M events fit in minutes."""
    count = 0
    states = dict(
        conn.execute(
            "SELECT station || ':' || unit_id, coalesce(failed_step, '') FROM fleet_units"
        ).fetchall()
    )
    with (
        conn.cursor() as cursor,
        cursor.copy(
            "COPY fleet_steps (station, step_id, unit_id, step, attempt, outcome, started_at, ended_at, last_seq) FROM STDIN"
        ) as copy,
    ):
        lines = []
        for unit in range(units):
            station, unit_id = unit % stations, unit // stations + 1
            started = T0 + timedelta(seconds=2 * unit)
            failed = states.get(f"gen-{station:02d}:{unit_id}", "")
            for index, step in enumerate(STEPS):
                seconds = rng.uniform(20, 60) if step == "keygen" else 1.0
                outcome = "failed" if step == failed else "passed"
                lines.append(
                    f"gen-{station:02d}\t{unit_id * len(STEPS) + index}\t{unit_id}\t{step}\t1\t{outcome}\t"
                    f"{started.isoformat()}\t{(started + timedelta(seconds=seconds)).isoformat()}\t"
                    f"{unit_id * EVENTS_PER_UNIT}\n"
                )
                count += 1
                if step == failed:
                    break
            if len(lines) >= 100_000:
                copy.write("".join(lines))
                lines.clear()
        copy.write("".join(lines))
    return count


def measure_yield_and_deep_pages(cluster: PrivateCluster, admin_pgpass: Path, units: int) -> dict[str, Any]:
    """What the GUI's whole-fleet scope asks besides the first page: the yield summary (the chart) and the groups
    by line and station, per scope; and a page deep in the listing by keyset (what scrolling asks) vs OFFSET."""
    middle = T0 + timedelta(seconds=units)
    scopes = {
        "whole fleet": FleetFilter(),
        "one line": FleetFilter(line="L2"),
        "one station": FleetFilter(station="gen-03"),
        "one line, one week": FleetFilter(line="L3", since=middle, until=middle + timedelta(days=7)),
    }
    results: dict[str, Any] = {}
    with connect(cluster.admin_dsn(DATABASE), passfile=admin_pgpass, statement_timeout_s=600) as conn:
        for name, filters in scopes.items():
            timings, group_timings = [], []
            for _ in range(3):
                began = time.perf_counter()
                summary = yield_summary(conn, filters)
                timings.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                yield_by_station(conn, filters)
                group_timings.append((time.perf_counter() - began) * 1000)
            results[f"yield summary, {name}"] = {
                "median_ms": round(statistics.median(timings), 1),
                "units": summary.units,
                "keygen_n": summary.keygen.count,
                "groups_median_ms": round(statistics.median(group_timings), 1),
            }
            print(f"  yield {name}: {results[f'yield summary, {name}']}", flush=True)
        for depth in sorted({min(d, units // 2) for d in (10_000, 100_000)}):
            everything = FleetFilter()
            (key_row,) = units_page(conn, everything, offset=depth - 1, limit=1)
            key = page_key(everything, key_row)
            keyset, offset = [], []
            for _ in range(REPEATS):
                began = time.perf_counter()
                rows = units_page(conn, everything, after=key, limit=200)
                keyset.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                units_page(conn, everything, offset=depth, limit=200)
                offset.append((time.perf_counter() - began) * 1000)
            results[f"page of 200 after unit {depth}"] = {
                "keyset_median_ms": round(statistics.median(keyset), 1),
                "offset_median_ms": round(statistics.median(offset), 1),
                "rows": len(rows),
            }
            print(f"  deep page {depth}: {results[f'page of 200 after unit {depth}']}", flush=True)
    return results


def measure_filters(cluster: PrivateCluster, admin_pgpass: Path, units: int) -> dict[str, Any]:
    middle = T0 + timedelta(seconds=units)  # half-way through the generated period
    scenarios = {
        "no filter (newest first)": FleetFilter(),
        "one station": FleetFilter(station="gen-03"),
        "one line": FleetFilter(line="L2"),
        "failed": FleetFilter(result="failed"),
        "failed at keygen": FleetFilter(result="failed", failed_step="keygen"),
        "serial prefix": FleetFilter(serial_prefix="20260000012"),
        "operator": FleetFilter(operator="operator-07"),
        "batch": FleetFilter(batch="B00123"),
        "one day": FleetFilter(since=middle, until=middle + timedelta(days=1)),
        "line + failed + week": FleetFilter(
            line="L3", result="failed", since=middle, until=middle + timedelta(days=7)
        ),
        "station + running": FleetFilter(station="gen-05", result="running"),
    }
    results: dict[str, Any] = {}
    with connect(cluster.admin_dsn(DATABASE), passfile=admin_pgpass, statement_timeout_s=600) as conn:
        for name, filters in scenarios.items():
            timings = []
            for _ in range(REPEATS):
                began = time.perf_counter()
                rows = units_page(conn, filters, limit=100)
                timings.append((time.perf_counter() - began) * 1000)
            results[name] = {
                "median_ms": round(statistics.median(timings), 1),
                "max_ms": round(max(timings), 1),
                "rows": len(rows),
            }
            print(f"  filter {name}: {results[name]}", flush=True)
        began = time.perf_counter()
        conn.execute(
            "SELECT seq, at, kind FROM fleet_journal WHERE station = 'gen-07' AND unit_id = 777 ORDER BY seq"
        ).fetchall()
        results["trace one unit's events"] = {"median_ms": round((time.perf_counter() - began) * 1000, 1)}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fleet.json")
    parser.add_argument("--child-checks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--station", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--passfile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_checks:
        return child_checks(args)
    work = Path(tempfile.mkdtemp(prefix="welma-fleet-bench-", dir="/tmp"))
    work.chmod(0o711)
    cluster = PrivateCluster.create(work / "cluster")
    admin_pgpass = cluster.write_admin_pgpass(work / "admin.pgpass")
    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "postgresql": "private cluster (initdb + pg_ctl), fsync on, loopback TCP",
        # A shared machine: how busy it was says how far the times are from a quiet run's.
        "load_average_at_start": [round(v, 1) for v in os.getloadavg()],
    }
    try:
        cluster.start()
        cluster.create_database(DATABASE, passfile=admin_pgpass)
        with connect(cluster.admin_dsn(DATABASE), passfile=admin_pgpass) as conn:
            migrate(conn)
        print("== forwarding: drain a backlog", flush=True)
        results["forwarding"] = measure_drain(cluster, admin_pgpass, work, args.units)
        print("== fleet checks: added wall per unit", flush=True)
        results["fleet_checks"] = measure_checks(cluster, admin_pgpass, work, args.procs, args.checks)
        print(f"== central filter over {args.events} events", flush=True)
        results["central_fill"] = fill_ten_million(cluster, admin_pgpass, args.events)
        results["central_filter_to_first_page"] = measure_filters(
            cluster, admin_pgpass, results["central_fill"]["units"]
        )
        worst = max(
            v["median_ms"] for k, v in results["central_filter_to_first_page"].items() if "max_ms" in v
        )
        results["central_filter_worst_median_ms"] = worst
        print("== whole-fleet scope: yield summary and deep pages", flush=True)
        results["fleet_scope"] = measure_yield_and_deep_pages(
            cluster, admin_pgpass, results["central_fill"]["units"]
        )
    finally:
        cluster.stop(mode="fast")
        shutil.rmtree(work, ignore_errors=True)
    results["load_average_at_end"] = [round(v, 1) for v in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
