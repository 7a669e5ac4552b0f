"""Batch scaling (P3, P7): wall time of N boards in parallel divided by one board's, on board-like devices.

    .venv/bin/python -m bench.batch_scaling [--slots 1 8 32 64] [--keygen-delay 20] [--boot-delay 10]

Boots max(slots) simulated devices with board-like latencies (OP-TEE key generation and boot take
seconds), runs one batch per slot count through the station's engine (station.engine: each unit in its
own worker process; each board factory-fresh), and records per slot count:

* the batch wall time and its ratio to the 1-slot wall time measured in the same run;
* the station's own share of each unit's wall — the unit's wall (from its admission to its recorded end,
  worker start included) less the time its worker waited on the board (connects, commands, transfers,
  the reboot and its boot gap) — median and p95, as seconds and as a fraction of the unit's wall: this
  separates the station's delay from the simulated boards competing for the same cores;
* the station's CPU seconds per unit (this process and its unit workers), the boards' CPU and how busy
  the machine was;
* the peak memory of the station (this process plus its live workers, resident), sampled every 0.25 s;

and once, the cost of starting one unit worker (spawn to exit of a worker that imports what a unit
needs).  Results go to bench/results/batch-scaling.json with machine information.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.provision_ssh import machine
from station.config import StationConfig
from station.engine import Scheduler, UnitJob
from station.engine.scheduler import clean_spawn
from station.engine.worker import die_with_station
from station.home import StationHome
from station.pki import CertificateAuthority
from station.profiles import load_profile
from station.sim.farm import Farm

HERE = Path(__file__).resolve().parent


WORKER_STARTS = 5


def cpu_seconds() -> float:
    """CPU seconds of the station: this process and its (ended, reaped) unit workers."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def resident_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class MemoryPeak:
    """Samples the station's resident memory (this process + its live unit workers) in the background."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.peak = 0
        self.peak_workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval_s,), daemon=True)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            workers = [child.pid for child in multiprocessing.active_children() if child.pid]
            total = resident_bytes(os.getpid()) + sum(resident_bytes(pid) for pid in workers)
            if total > self.peak:
                self.peak, self.peak_workers = total, len(workers)


def worker_start_cost() -> dict[str, float]:
    """Wall and CPU of starting one unit worker: a spawned interpreter importing what a unit needs
    (station.engine.worker: paramiko, cryptography, the steps), then exiting."""
    context = multiprocessing.get_context("spawn")
    walls, cpus = [], []
    for _ in range(WORKER_STARTS):
        cpu, began = cpu_seconds(), time.perf_counter()
        process = context.Process(target=die_with_station, args=(os.getpid(),))
        with clean_spawn():  # as the engine starts its workers
            process.start()
        process.join()
        walls.append(time.perf_counter() - began)
        cpus.append(cpu_seconds() - cpu)
    return {"wall_s_median": round(statistics.median(walls), 3), "cpu_s_median": round(statistics.median(cpus), 3),
            "starts": WORKER_STARTS}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
    parser.add_argument("--conditions", default="", help="a note on the machine's state, kept in the results")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    home = StationHome(root / "home").create()
    farm = Farm(home)
    rows = []
    try:
        devices = farm.up(max(args.slots), keygen_delay=args.keygen_delay, boot_delay=args.boot_delay,
                          port=args.port)
        ca = CertificateAuthority.init(home.ca_dir, passphrase=b"bench passphrase")
        profile = load_profile("welma-optee")
        start_cost = worker_start_cost()
        print({"worker_start": start_cost}, flush=True)
        serial = 0
        for slots in args.slots:
            jobs = []
            for device in devices[:slots]:
                serial += 1
                jobs.append(UnitJob(serial=f"2026{serial:011d}", device=device.ssh_url, profile=profile,
                                    operator="bench", fixture=device.name, stream_output=False))
            scheduler = Scheduler(home=home, config=StationConfig(name="bench"), ca=ca, slots=slots)
            cpu, busy, began = cpu_seconds(), machine_busy_seconds(), time.perf_counter()
            with MemoryPeak() as memory:
                outcomes = scheduler.run(jobs)
            wall = time.perf_counter() - began
            used = cpu_seconds() - cpu
            # What the simulated boards burn shares this machine's cores with the station; on a real
            # line every board has its own CPU.  Recording it shows where the batch's extra time goes.
            boards = machine_busy_seconds() - busy - used
            assert all(outcome.passed for outcome in outcomes), [o.message for o in outcomes if not o.passed]
            share_s = [outcome.duration_s - outcome.device_s for outcome in outcomes]
            share = [(o.duration_s - o.device_s) / o.duration_s for o in outcomes]
            rows.append({
                "slots": slots, "wall_s": round(wall, 3), "cpu_s_per_unit": round(used / slots, 4),
                "unit_wall_s_median": round(statistics.median(o.duration_s for o in outcomes), 3),
                "station_share_s_median": round(statistics.median(share_s), 3),
                "station_share_s_p95": round(quantile(share_s, 0.95), 3),
                "station_share_median": round(statistics.median(share), 4),
                "station_share_p95": round(quantile(share, 0.95), 4),
                "peak_station_memory_mib": round(memory.peak / 2**20, 1),
                "workers_at_peak": memory.peak_workers,
                "board_cpu_s_per_unit": round(boards / slots, 3),
                "machine_busy_fraction": round((boards + used) / (wall * (os.cpu_count() or 1)), 3),
            })
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
        "command": f"python -m bench.batch_scaling --slots {' '.join(map(str, args.slots))} "
                   f"--keygen-delay {args.keygen_delay:g} --boot-delay {args.boot_delay:g}",
        "machine": machine(),
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "conditions": args.conditions,
        "engine": "station.engine: one spawned worker process per unit",
        "goals": {"ratio_at_64": 1.10, "cpu_s_per_unit": 0.1, "station_share_at_64": 0.05},
        "worker_start": start_cost,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
