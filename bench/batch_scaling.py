"""Batch scaling: wall time of N boards in parallel divided by one board's, on board-like devices.

    .venv/bin/python bench/batch_scaling.py [--slots 1 8 32 64] [--keygen-delay 20] [--boot-delay 10]

Boots max(slots) simulated devices with board-like latencies (OP-TEE key generation and boot take
seconds), runs one batch per slot count (each board factory-fresh), and records per slot count the
batch wall time, the ratio to the 1-slot wall time measured in the same run, and the station's own
CPU seconds per unit.  Results go to bench/results/batch-scaling.json with machine information.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.provision_ssh import machine
from station.audit import AuditLog
from station.batch import Batch, BatchJob
from station.config import StationConfig
from station.flow import Provisioner
from station.home import StationHome
from station.pki import CertificateAuthority
from station.profiles import load_profile
from station.sim.farm import Farm

HERE = Path(__file__).resolve().parent


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (from /proc/stat): station + simulated boards."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--keygen-delay", type=float, default=20.0)
    parser.add_argument("--boot-delay", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=2370)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "batch-scaling.json")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    home = StationHome(root / "home").create()
    farm = Farm(home)
    rows = []
    try:
        devices = farm.up(max(args.slots), keygen_delay=args.keygen_delay, boot_delay=args.boot_delay,
                          port=args.port)
        ca = CertificateAuthority.init(home.ca_dir, passphrase=b"bench passphrase")
        provisioner = Provisioner(home=home, config=StationConfig(name="bench"), ca=ca,
                                  audit=AuditLog(home.audit_db))
        profile = load_profile("welma-optee")
        serial = 0
        for slots in args.slots:
            jobs = []
            for device in devices[:slots]:
                serial += 1
                jobs.append(BatchJob(f"2026{serial:011d}", device.ssh_url, device.name))
            batch = Batch(provisioner, profile=profile, operator="bench", jobs=slots)
            cpu, busy, began = cpu_seconds(), machine_busy_seconds(), time.perf_counter()
            report = batch.run(jobs)
            wall = time.perf_counter() - began
            used = cpu_seconds() - cpu
            # What the simulated boards burn shares this machine's cores with the station; on a real
            # line every board has its own CPU.  Recording it shows where the batch's extra time goes.
            boards = machine_busy_seconds() - busy - used
            assert report.all_passed, [outcome.message for outcome in report.outcomes if outcome.result != "passed"]
            rows.append({"slots": slots, "wall_s": round(wall, 3), "cpu_s_per_unit": round(used / slots, 4),
                         "board_cpu_s_per_unit": round(boards / slots, 3),
                         "machine_busy_fraction": round((boards + used) / (wall * (os.cpu_count() or 1)), 3)})
            print(rows[-1], flush=True)
            # Factory-fresh boards for the next round; resets wait for the boot delay, so run them together.
            with ThreadPoolExecutor(max_workers=len(devices)) as pool:
                list(pool.map(farm.reset, [device.name for device in devices[:slots]]))
    finally:
        farm.down()
        shutil.rmtree(root, ignore_errors=True)
    single = next(row["wall_s"] for row in rows if row["slots"] == min(args.slots))
    for row in rows:
        row["ratio_to_one_slot"] = round(row["wall_s"] / single, 3)
    report = {
        "benchmark": "batch-scaling",
        "command": f"bench/batch_scaling.py --slots {' '.join(map(str, args.slots))} "
                   f"--keygen-delay {args.keygen_delay:g} --boot-delay {args.boot_delay:g}",
        "machine": machine(),
        "goals": {"ratio_at_64": 1.10, "cpu_s_per_unit": 0.1},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
