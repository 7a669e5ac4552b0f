"""Batch scaling (P3, P7): wall time of N boards in parallel divided by one board's, on board-like devices.

    .venv/bin/python -m bench.batch_scaling [--slots 1 8 32 64] [--keygen-delay 20] [--boot-delay 10]
                                            [--start-methods forkserver spawn] [--worker-starts 5]
                                            [--variants engine-default threads-in-process …]

Boots max(slots) simulated devices with board-like latencies (OP-TEE key generation and boot take
seconds), runs one batch per slot count through the station's engine (station.engine: each unit in its
own worker process; each board factory-fresh), and records per slot count:

* the batch wall time and its ratio to the 1-slot wall time measured in the same run;
* the station's own share of each unit's wall — the unit's wall (from its admission to its recorded end,
  worker start included) less the time its worker waited on the board (connects, commands, transfers,
  the reboot and its boot gap) — median and p95, as seconds and as a fraction of the unit's wall: this
  separates the station's delay from the simulated boards competing for the same cores; and of that share,
  the time units waited for the station's services to answer their calls (``service_wait_s``: the engine's
  own latency — the rest is the workers' own CPU and start);
* the station's CPU seconds per unit (this process and its unit workers), the boards' CPU and how busy
  the machine was;
* the peak memory of the station (this process plus its live workers, resident), sampled every 0.25 s;

and once, the cost of starting one unit worker (start to exit of a worker that has what a unit needs
imported: a spawned interpreter importing it, or a fork of the fork server that imported it once).

With several ``--start-methods`` (how the engine starts a unit's worker: forkserver, its default, or
spawn), every slot count and every worker start runs once per method, the methods interleaved, so that
the ratio between them is measured under the same load (the machine is shared).  The station's CPU counts
this process, its children and — for forkserver — the fork server and the workers it forked and reaped;
the memory sampler's own CPU is left out.  Peak memory is given as the sum of resident sizes (RSS, which
counts the pages forked workers share with the server once per worker) and as the proportional set size
(PSS, shared pages split between their sharers: what the processes really cost the machine).
Results go to bench/results/batch-scaling.json (or ``--out``) with machine information.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.measure_memory import proportional_bytes, resident_bytes
from bench.provision_ssh import machine
from station.audit import AuditLog
from station.config import StationConfig
from station.engine import Scheduler, UnitJob, UnitOutcome
from station.engine.scheduler import START_METHODS, clean_spawn, worker_context
from station.engine.worker import die_with_station
from station.flow import Provisioner
from station.home import StationHome
from station.pki import CertificateAuthority
from station.profiles import load_profile
from station.sim.farm import Farm

HERE = Path(__file__).resolve().parent


WORKER_STARTS = 5
# Ways of running the units, compared in one run (--variants, interleaved per slot count): Scheduler keyword
# arguments, or the flow without the engine (threads-in-process).  "engine-default" is what the station runs
# (posted step records, workers in the station's session); the others name what they change.
VARIANTS: dict[str, dict[str, object]] = {
    "engine-default": {},
    # As main before this round (a70bc02): every step record waits for its answer, each worker its own session.
    "as-main": {"post_step_records": False, "worker_own_session": True},
    # Every step record waits for its answer; each worker its own session.
    "called-own-session": {"post_step_records": False, "worker_own_session": True},
    # Step records posted (no round trip); each worker its own session (its own autogroup).
    "posted-own-session": {"post_step_records": True, "worker_own_session": True},
    # Posted, and the workers stay in the station's session (one autogroup with it, at their nice +10).
    "posted-station-session": {"post_step_records": True, "worker_own_session": False},
    # Workers at nice +10 below the station, as before they went to +19 (64 of them then outweighed the engine
    # thread seven to one).
    "nice-10": {"worker_niceness": 10},
    # Posted, each worker its own session at autogroup nice 19 (64 of them weigh about one default group).
    "posted-autogroup-19": {
        "post_step_records": True,
        "worker_own_session": True,
        "worker_autogroup_nice": 19,
    },
    # The station as it runs, the simulated boards under SCHED_IDLE: they take only the CPU the station
    # leaves, as boards with their own cores would (on a line none shares the station's).  Beside
    # engine-default it shows how much of the station's share is its nice +19 workers waiting behind the
    # simulated boards' CPU.  "boards" is the bench's own key, not the scheduler's.
    "boards-idle": {"boards": "idle"},
    # The same flow without the engine: every unit a thread of this process (Provisioner.provision, as before
    # the engine, with no worker, pipe or fork server).  Beside engine-default it separates what the engine's
    # processes cost from what the flow itself costs — the flow has grown since the pre-engine station
    # (SoC id, the PKCS#11 slot check, the host-key inventory, the work-order and identity guards, the
    # read-back), so a before/after across those commits measures both.  "threads" is the bench's own key.
    "threads-in-process": {"threads": True},
}


@dataclass
class ThreadOutcome:
    """What the bench reads of a unit run as a thread (the fields it reads of an engine's UnitOutcome)."""

    passed: bool
    message: str
    duration_s: float
    device_s: float
    service_s: float = 0.0
    worker_cpu_s: float = 0.0


def run_in_threads(
    jobs: list[UnitJob], home: StationHome, ca: CertificateAuthority, config: StationConfig
) -> list[ThreadOutcome]:
    """Every job at once, each in a thread of this process, through the flow's in-process path."""
    audit = AuditLog(home.audit_db)

    def one(job: UnitJob) -> ThreadOutcome:
        began = time.monotonic()
        result = Provisioner(home=home, config=config, ca=ca, audit=audit).provision(
            serial=job.serial,
            device=job.device,
            profile=job.profile,
            operator=job.operator,
            fixture=job.fixture,
        )
        return ThreadOutcome(result.passed, result.message, time.monotonic() - began, result.device_s)

    try:
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="unit") as pool:
            return list(pool.map(one, jobs))
    finally:
        audit.close()


def schedule_boards(farm: Farm, count: int, how: str) -> int:
    """Put every process of the first ``count`` simulated boards under SCHED_IDLE (``how="idle"``) or the
    default policy; what they start later (sshd's sessions, the token tools) inherits it.  Returns how many
    processes were changed."""
    policy = os.SCHED_IDLE if how == "idle" else os.SCHED_OTHER
    roots: set[int] = set()
    for index in range(1, count + 1):
        try:
            roots.add(int(farm.layout.device(index).run_file("power.pid").read_text().strip()))
        except (OSError, ValueError):
            continue
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    changed, todo = 0, list(roots)
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                os.sched_setscheduler(int(task.name), policy, os.sched_param(0))
            changed += 1
        except (OSError, ValueError):
            continue  # ended meanwhile
    return changed


def forkserver_pid() -> int | None:
    """The station's fork server, if it runs (multiprocessing keeps its pid privately)."""
    pid = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
    return pid if isinstance(pid, int) else None


def process_cpu_seconds(pid: int, *, children: bool) -> float:
    """A process's CPU seconds from /proc (its own, plus its ended and reaped children's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = sum(int(value) for value in fields[11 : 15 if children else 13])  # utime stime [cutime cstime]
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """CPU seconds of the station: this process, its (ended, reaped) children — spawned unit workers —
    and the fork server with the unit workers it forked (and reaped)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    server = forkserver_pid()
    if server is not None:
        total += process_cpu_seconds(server, children=True)
    return total


def own_cpu_seconds() -> float:
    """CPU seconds of this process alone (the engine, its desk and listener threads — and the sampler)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class MemoryPeak:
    """Samples the station's resident memory (this process + its live unit workers) in the background.

    The sampler runs in the station's own process (it shares the engine's GIL and its CPU group), so it is
    kept cheap: the workers' pids come from the scheduler (not ``multiprocessing.active_children()``, which
    polls every child through a selector of its own), the resident sizes from ``statm`` every 0.25 s, and
    the proportional sizes — ``smaps_rollup``, a walk of every mapping of every worker (≈ 1 ms each) —
    only while the resident sum is within 1 % of its highest so far, at most every PSS_EVERY_S (where the
    PSS peak is; not 4 × 64 walks a second, which made the sampler the station process's busiest thread)."""

    PSS_EVERY_S = 2.0
    PSS_NEAR_PEAK = 0.99

    def __init__(self, scheduler: Scheduler | None = None, interval_s: float = 0.25) -> None:
        self.peak = 0
        self.peak_workers = 0
        self.peak_pss = 0
        self.pss_samples = 0
        self.sampler_cpu_s = 0.0
        self._scheduler = scheduler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval_s,), daemon=True)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self, interval_s: float) -> None:
        pss_due = 0.0
        while not self._stop.wait(interval_s):
            if self._scheduler is not None:
                workers = self._scheduler.worker_pids()
            else:
                workers = [child.pid for child in multiprocessing.active_children() if child.pid]
            server = forkserver_pid()
            station = [os.getpid(), *([server] if server is not None else []), *workers]
            total = sum(resident_bytes(pid) for pid in station)
            if total > self.peak:
                self.peak, self.peak_workers = total, len(workers)
            if total >= self.PSS_NEAR_PEAK * self.peak and time.monotonic() >= pss_due:
                pss_due = time.monotonic() + self.PSS_EVERY_S
                self.pss_samples += 1
                self.peak_pss = max(self.peak_pss, sum(proportional_bytes(pid) for pid in station))
        self.sampler_cpu_s = time.thread_time()  # this thread's own: not the station's


def start_one_worker(method: str) -> tuple[float, float]:
    """Wall and station CPU of starting one unit worker with ``method`` — a spawned interpreter importing
    what a unit needs (station.engine.worker: paramiko, cryptography, the steps), or a fork of the fork
    server that has imported it — up to its exit."""
    context = worker_context(method)
    cpu, began = cpu_seconds(), time.perf_counter()
    process = context.Process(target=die_with_station, args=(os.getpid(),))
    with clean_spawn():  # as the engine starts its workers
        process.start()
    process.join()
    return time.perf_counter() - began, cpu_seconds() - cpu


def worker_start_costs(methods: list[str], starts: int) -> dict[str, dict[str, float]]:
    """The cost of a worker start per method, the methods interleaved; for forkserver also the one-off
    cost of starting the fork server (its interpreter and imports) with the first worker."""
    costs: dict[str, dict[str, float]] = {}
    if "forkserver" in methods:
        multiprocessing.forkserver._forkserver._stop()  # measure a cold start
        wall, cpu = start_one_worker("forkserver")
        costs["forkserver"] = {
            "server_start_and_first_worker_wall_s": round(wall, 3),
            "server_start_and_first_worker_cpu_s": round(cpu, 3),
        }
    samples: dict[str, list[tuple[float, float]]] = {method: [] for method in methods}
    for _ in range(starts):
        for method in methods:
            samples[method].append(start_one_worker(method))
    for method, measured in samples.items():
        costs.setdefault(method, {}).update(
            {
                "wall_s_median": round(statistics.median(wall for wall, _ in measured), 4),
                "cpu_s_median": round(statistics.median(cpu for _, cpu in measured), 4),
                # The workers' CPU is read from /proc in 10 ms ticks: the mean over many starts resolves a fork.
                "cpu_s_mean": round(statistics.fmean(cpu for _, cpu in measured), 4),
                "starts": starts,
            }
        )
    return costs


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
    parser.add_argument(
        "--start-methods",
        nargs="+",
        choices=START_METHODS,
        default=[worker_context().get_start_method()],
        help="how units' workers start (several: compared, interleaved in one run)",
    )
    parser.add_argument("--worker-starts", type=int, default=WORKER_STARTS)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        default=["engine-default"],
        help="ways of running the units (several: compared, interleaved in one run; see VARIANTS)",
    )
    args = parser.parse_args()
    methods: list[str] = args.start_methods
    variants: list[str] = args.variants

    root = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    home = StationHome(root / "home").create()
    farm = Farm(home)
    rows = []
    try:
        devices = farm.up(
            max(args.slots), keygen_delay=args.keygen_delay, boot_delay=args.boot_delay, port=args.port
        )
        ca = CertificateAuthority.init(home.ca_dir, passphrase=b"bench passphrase")
        # The station opens its log once, at its start (the window shows it): its schema and SQLite's modules
        # are a station's start, not its first unit's — as the pre-engine bench (47e3faf) opened it before
        # timing anything.  Each batch's engine then opens its own connection, as before.
        AuditLog(home.audit_db).close()
        profile = load_profile("welma-optee")
        start_costs = worker_start_costs(methods, args.worker_starts)
        print({"worker_start": start_costs}, flush=True)
        serial = 0
        rounds = [
            (slots, method, variant) for slots in args.slots for method in methods for variant in variants
        ]
        for slots, method, variant in rounds:
            jobs = []
            for device in devices[:slots]:
                serial += 1
                jobs.append(
                    UnitJob(
                        serial=f"2026{serial:011d}",
                        device=device.ssh_url,
                        profile=profile,
                        operator="bench",
                        fixture=device.name,
                        stream_output=False,
                    )
                )
            options = dict(VARIANTS[variant])
            boards_how = str(options.pop("boards", "normal"))
            in_threads = bool(options.pop("threads", False))
            scheduled = schedule_boards(farm, len(devices), boards_how)
            config = StationConfig(name="bench")
            scheduler = (
                None
                if in_threads
                else Scheduler(
                    home=home,
                    config=config,
                    ca=ca,
                    slots=slots,
                    start_method=method,
                    **options,  # type: ignore[arg-type]
                )
            )
            load_before = os.getloadavg()
            own = own_cpu_seconds()
            cpu, busy, began = cpu_seconds(), machine_busy_seconds(), time.perf_counter()
            with MemoryPeak(scheduler) as memory:
                outcomes: Sequence[UnitOutcome | ThreadOutcome] = (
                    run_in_threads(jobs, home, ca, config) if scheduler is None else scheduler.run(jobs)
                )
            wall = time.perf_counter() - began
            used = cpu_seconds() - cpu - memory.sampler_cpu_s
            # P7 split: the station's own process (engine, desk, TLS listener) and its units' workers.
            own = own_cpu_seconds() - own - memory.sampler_cpu_s
            # What the simulated boards burn shares this machine's cores with the station; on a real
            # line every board has its own CPU.  Recording it shows where the batch's extra time goes.
            boards = machine_busy_seconds() - busy - used
            assert all(outcome.passed for outcome in outcomes), [o.message for o in outcomes if not o.passed]
            share_s = [outcome.duration_s - outcome.device_s for outcome in outcomes]
            share = [(o.duration_s - o.device_s) / o.duration_s for o in outcomes]
            rows.append(
                {
                    "slots": slots,
                    "start_method": method,
                    "variant": variant,
                    "boards_scheduling": boards_how,
                    "board_processes_scheduled": scheduled,
                    "wall_s": round(wall, 3),
                    "cpu_s_per_unit": round(used / slots, 4),
                    "station_process_cpu_s_per_unit": round(own / slots, 4),
                    "workers_cpu_s_per_unit": round((used - own) / slots, 4),
                    # Of the workers' CPU: what each spent from its fork to its end (its unit's work: the
                    # SSH link, its threads, the calls' pickling) — and the rest, their starts and exits
                    # (the fork server's forks and reaps, the kernel's teardown of each worker).
                    "worker_own_cpu_s_median": round(statistics.median(o.worker_cpu_s for o in outcomes), 4),
                    "worker_start_exit_cpu_s_per_unit": round(
                        (used - own) / slots - statistics.fmean(o.worker_cpu_s for o in outcomes), 4
                    ),
                    "unit_wall_s_median": round(statistics.median(o.duration_s for o in outcomes), 3),
                    # The boards' own time per unit (commands, transfers, reboot and boot gap): what grows
                    # when the simulated boards compete for this machine's cores (each has its own on a line).
                    "device_s_median": round(statistics.median(o.device_s for o in outcomes), 3),
                    "device_s_p95": round(quantile([o.device_s for o in outcomes], 0.95), 3),
                    "station_share_s_median": round(statistics.median(share_s), 3),
                    "station_share_s_p95": round(quantile(share_s, 0.95), 3),
                    "station_share_median": round(statistics.median(share), 4),
                    "station_share_p95": round(quantile(share, 0.95), 4),
                    # Of the station's share, the time units waited for the station's services (the engine's
                    # answers to their audit, CA and TLS calls); the rest is the worker's own time and start.
                    "service_wait_s_median": round(statistics.median(o.service_s for o in outcomes), 3),
                    "service_wait_s_p95": round(quantile([o.service_s for o in outcomes], 0.95), 3),
                    # Others share this machine: its load when the round began and ended.
                    "load_average_before": [round(value, 2) for value in load_before],
                    "load_average_after": [round(value, 2) for value in os.getloadavg()],
                    "peak_station_memory_mib": round(memory.peak / 2**20, 1),
                    "workers_at_peak": memory.peak_workers,
                    "peak_station_pss_mib": round(memory.peak_pss / 2**20, 1),
                    "memory_sampler_cpu_s": round(memory.sampler_cpu_s, 3),
                    "pss_samples": memory.pss_samples,
                    "board_cpu_s_per_unit": round(boards / slots, 3),
                    "machine_busy_fraction": round((boards + used) / (wall * (os.cpu_count() or 1)), 3),
                }
            )
            print(rows[-1], flush=True)
            # Factory-fresh boards (new silicon: a board enrolled once is refused under another serial) for the
            # next round; swaps wait for the boot delay, so run them together.
            with ThreadPoolExecutor(max_workers=len(devices)) as pool:
                list(pool.map(farm.swap, [device.name for device in devices[:slots]]))
    finally:
        farm.down()
        shutil.rmtree(root, ignore_errors=True)
    for method in methods:
        for variant in variants:
            mine = [row for row in rows if row["start_method"] == method and row["variant"] == variant]
            single = next(row["wall_s"] for row in mine if row["slots"] == min(args.slots))
            for row in mine:
                row["ratio_to_one_slot"] = round(row["wall_s"] / single, 3)
    report = {
        "benchmark": "batch-scaling",
        "command": f"python -m bench.batch_scaling --slots {' '.join(map(str, args.slots))} "
        f"--keygen-delay {args.keygen_delay:g} --boot-delay {args.boot_delay:g} "
        f"--start-methods {' '.join(methods)} --worker-starts {args.worker_starts} "
        f"--variants {' '.join(variants)}",
        "variants": {variant: VARIANTS[variant] for variant in variants},
        "machine": machine(),
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "conditions": args.conditions,
        "engine": "station.engine: one worker process per unit",
        "start_method": methods[0],
        "goals": {"ratio_at_64": 1.10, "cpu_s_per_unit": 0.1, "station_share_at_64": 0.05},
        "worker_start": {"start_method": methods[0], **start_costs[methods[0]]},
        "worker_start_by_method": start_costs,
        "results": rows,
    }
    if len(methods) > 1:
        # Same run, same load: the first method's figures over the second's, per slot count.
        first, second = methods[:2]
        by = {(row["slots"], row["start_method"]): row for row in rows if row["variant"] == variants[0]}
        report["ratios"] = {
            f"{first}/{second}": {
                "worker_start_wall": round(
                    start_costs[first]["wall_s_median"] / start_costs[second]["wall_s_median"], 3
                ),
                "worker_start_cpu": round(
                    start_costs[first]["cpu_s_median"] / start_costs[second]["cpu_s_median"], 3
                ),
                **{
                    f"{key}_at_{slots}": round(by[slots, first][key] / by[slots, second][key], 3)
                    for slots in args.slots
                    for key in ("cpu_s_per_unit", "peak_station_memory_mib", "peak_station_pss_mib", "wall_s")
                },
            }
        }
    if len(variants) > 1:
        # Same run, same load: each variant's station share and ratio beside the first variant's.
        by_variant = {
            (row["slots"], row["variant"]): row for row in rows if row["start_method"] == methods[0]
        }
        report["variants_compared"] = {
            f"{variant}_at_{slots}": {
                key: by_variant[slots, variant][key]
                for key in (
                    "ratio_to_one_slot",
                    "station_share_median",
                    "station_share_p95",
                    "service_wait_s_median",
                    "cpu_s_per_unit",
                    "machine_busy_fraction",
                )
            }
            for slots in args.slots
            for variant in variants
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
