"""What migration 3 (fleet_steps, derived from the journal by its own trigger) costs forwarding: the same backlog
drained into a fleet at schema version 1 and into one with every migration, alternately, on one private PostgreSQL.

    .venv/bin/python -m bench.fleet_steps_cost [--units 3000] [--rounds 2] [--out bench/results/fleet-steps-cost.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.fleet import HERE, generate_local_log
from station.audit import AuditLog
from station.config import FleetConfig
from station.fleet import schema
from station.fleet.cluster import PrivateCluster
from station.fleet.connection import connect
from station.fleet.forwarder import Forwarder


def drain(cluster: PrivateCluster, admin_pgpass: Path, log: Path, database: str, work: Path) -> float:
    cluster.create_database(database, passfile=admin_pgpass)
    with connect(cluster.admin_dsn(database), passfile=admin_pgpass, statement_timeout_s=120) as conn:
        schema.migrate(conn)
        role = schema.register_station(
            conn, station="st-a", line="L1", ca_fingerprint="0" * 64, password="bench-a"
        ).role
    home = work / database
    home.mkdir()
    shutil.copy(log, home / "audit.db")
    passfile = home / "pgpass"
    schema.write_pgpass(
        passfile, host="127.0.0.1", port=cluster.port, database=database, role=role, password="bench-a"
    )
    fleet = FleetConfig(
        dsn=f"postgresql://{role}@127.0.0.1:{cluster.port}/{database}",
        station_name="st-a",
        line="L1",
        passfile=passfile,
    )
    with AuditLog(home / "audit.db") as audit:
        forwarder = Forwarder(fleet, audit)
        began = time.perf_counter()
        while forwarder.send_once():
            pass
        seconds = time.perf_counter() - began
        assert audit.fleet_backlog()[2] == 0
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fleet-steps-cost.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="welma-fleet-steps-", dir="/tmp"))
    work.chmod(0o711)
    cluster = PrivateCluster.create(work / "cluster")
    admin_pgpass = cluster.write_admin_pgpass(work / "admin.pgpass")
    everything = schema.MIGRATIONS
    variants = {"schema 1 (no fleet_steps)": everything[:1], "every migration (fleet_steps)": everything}
    timings: dict[str, list[float]] = {name: [] for name in variants}
    try:
        cluster.start()
        log = work / "template.db"
        events = generate_local_log(log, args.units, "st-a")
        for round_number in range(args.rounds):
            for index, (name, migrations) in enumerate(variants.items()):
                schema.MIGRATIONS = migrations
                seconds = drain(cluster, admin_pgpass, log, f"fleet_{round_number}_{index}", work)
                timings[name].append(seconds)
                print(
                    f"  {name}: {events} events in {seconds:.1f} s ({events / seconds:.0f} events/s)",
                    flush=True,
                )
    finally:
        schema.MIGRATIONS = everything
        cluster.stop(mode="fast")
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "units": args.units,
        "events": events,
    }
    for name, seconds in timings.items():
        results[name] = {
            "drain_s_median": round(statistics.median(seconds), 2),
            "events_per_s": round(events / statistics.median(seconds), 1),
            "runs": [round(s, 2) for s in seconds],
        }
    base, steps = (results[name]["drain_s_median"] for name in variants)
    results["added_fraction"] = round(steps / base - 1, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}: fleet_steps adds {100 * results['added_fraction']:.1f} % to the drain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
