"""P4: the longest the GUI thread stalls while a batch of N boards runs through the batch grid.

    .venv/bin/python -m bench.gui_batch_stall [--slots 64] [--keygen-delay 20] [--boot-delay 10]
                                              [--profile FILE.pstats]

Boots N simulated boards with board-like latencies, opens the real window offscreen (or on the
display set), signs in, scans N serials into the Batch tab's grid (each into the next free fixture)
and presses Start all.  The units run through the station's engine (station.engine), each in its own
worker process; the window only receives their events.  The peak resident memory of the station (the
window's process plus its unit workers) is sampled during the batch too.  A 5 ms QTimer records every time the GUI thread's event loop runs it; the
largest gap between two firings is the longest stall.  Writes bench/results/gui-batch-stall.json
with the longest stall, p99, the slots, the wall time and machine information.  ``--profile``
writes a cProfile of the GUI thread for finding a stall's cause.  Each of the longest gaps is split, from
the GUI thread's /proc schedstat read at every tick, into the time it sat runnable waiting for a CPU
(``run_queue_ms``: the machine's load — the boards, other programs), on a CPU (``gui_cpu_ms``) and neither
(``other_ms``: the GIL, a lock, or idle); ``longest_stall_less_run_queue_ms`` is what the station answers for.

On a line every board has its own CPU; here 64 simulated boards share this machine's cores with the
station.  Each board runs in its own session (``setsid``), and with the kernel's autogroup scheduling
(``/proc/sys/kernel/sched_autogroup_enabled``) every session gets as much CPU as the whole station
process: at the batch's busy moments (64 reconnects after the reboot, 64 TLS proofs at the end) the
station got about 1/65 of the cores and its GUI thread waited on the run queue for half a second
(measured from /proc/PID/task/PID/schedstat).  So the boards' sessions are given the lowest
autogroup weight (nice 19), as boards on their own CPUs would not compete; ``--boards-share-cpu``
measures without that, and the JSON says which it was.

A board's sshd starts a session of its own for every login (its own autogroup, at full weight), so the
autogroup nice of the board's power loop did not cover the commands the station runs on it: in the
measured stalls the GUI thread waited on the run queue behind those.  Where the kernel offers a CPU
cgroup (v1, ``/sys/fs/cgroup/cpu``) the boards — their power loops
and every process they start later, sshd's sessions included — are put in one cgroup of the lowest
weight for the run, and removed after; ``boards_cpu_group`` in the JSON says whether it was.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from bench.demo_station import pause, wait_for  # noqa: E402
from bench.measure_memory import TreePeak  # noqa: E402
from bench.provision_ssh import machine  # noqa: E402
from station.home import StationHome  # noqa: E402
from station.pki import CertificateAuthority  # noqa: E402
from station.sim.farm import Farm  # noqa: E402
from ui.app import prepare_qt_environment  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.session import Session  # noqa: E402

HERE = Path(__file__).resolve().parent
PROBE_INTERVAL_MS = 5
GOAL_MS = 50.0
PASSPHRASE = b"bench passphrase"
BOARD_AUTOGROUP_NICE = 19


def boards_yield_cpu(root: Path, nice: int) -> int:
    """Give every simulated board's session (its power loop's autogroup) the weight of ``nice``;
    returns how many sessions were changed (0 where autogroups are off)."""
    changed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if not any(part.endswith(b"power.sh") for part in command) or str(root).encode() not in b" ".join(
                command
            ):
                continue
            (proc / "autogroup").write_text(f"{nice}\n")
            changed += 1
        except OSError:  # gone meanwhile, or no autogroup support
            continue
    return changed


CPU_V1 = Path("/sys/fs/cgroup/cpu")


def boards_to_cpu_group(root: Path) -> Path | None:
    """Put the simulated boards of ``root`` (their power loops and all their descendants; later children
    inherit it) in one CPU cgroup of the lowest weight; its directory, or None where that is not possible."""
    if not (CPU_V1 / "cpu.shares").exists():
        return None
    group = CPU_V1 / f"welma-bench-boards-{os.getpid()}"
    try:
        group.mkdir(exist_ok=True)
        (group / "cpu.shares").write_text("2\n")
    except OSError:
        return None
    parents: dict[int, int] = {}
    loops: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            parents[int(proc.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(part.endswith(b"power.sh") for part in command) and str(root).encode() in b" ".join(command):
            loops.add(int(proc.name))

    def under_a_loop(pid: int) -> bool:
        seen = 0
        while pid > 1 and seen < 64:
            if pid in loops:
                return True
            pid, seen = parents.get(pid, 0), seen + 1
        return False

    for pid in [pid for pid in parents if under_a_loop(pid)]:
        try:
            (group / "cgroup.procs").write_text(f"{pid}\n")
        except OSError:  # gone meanwhile
            continue
    return group


def remove_cpu_group(group: Path | None) -> None:
    if group is None:
        return
    try:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                (CPU_V1 / "cgroup.procs").write_text(f"{pid}\n")
            except OSError:
                continue
        group.rmdir()
    except OSError:
        pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    prepare_qt_environment()  # as `station gui` does
    app = QApplication.instance() or QApplication(["station-gui"])
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="bench-gui-batch-"))
    home = StationHome(root / "home").create()
    farm = Farm(home)
    cpu_group: Path | None = None
    try:
        farm.up(args.slots, keygen_delay=args.keygen_delay, boot_delay=args.boot_delay, port=args.port)
        yielded = 0 if args.boards_share_cpu else boards_yield_cpu(root, BOARD_AUTOGROUP_NICE)
        if not args.boards_share_cpu:
            cpu_group = boards_to_cpu_group(root)
        CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE)
        session = Session.open(str(home.root))
        session.client.call("ca_unlock", {"secret": PASSPHRASE.decode()})  # as typed in the unlock dialog
        window = MainWindow(session)
        ticks: list[float] = []
        scheduling: list[bytes] = []  # the GUI thread's /proc schedstat at each tick
        schedstat = f"/proc/self/task/{threading.get_native_id()}/schedstat"

        def tick() -> None:
            ticks.append(time.perf_counter())
            scheduling.append(_read(schedstat))

        probe = QTimer()
        probe.setInterval(PROBE_INTERVAL_MS)
        probe.timeout.connect(tick)
        profiler = cProfile.Profile() if args.profile else None
        try:
            window.resize(1280, 800)
            window.show()
            window.sign_in("bench")
            window.show_mode("batch")
            view = window.batch
            for n in range(1, args.slots + 1):
                view.handle_scan(f"2026{n:011d}")
            assert view.board.counts().queued == args.slots, view.feedback.text()
            pause(1.0)  # first fixture probes, first paints
            probe.start()
            if profiler is not None:
                profiler.enable()
            began = time.perf_counter()
            # The window, the station service it started, its fork server and the units' workers, sampled from a
            # process of its own (a sampler thread in this process would share the GUI thread's GIL).
            with TreePeak(os.getpid()) as memory:
                view.start_all()
                wait_for(view.idle, args.timeout)
            wall = time.perf_counter() - began
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            probe.stop()
            counts = view.board.counts()
            failures = [slot.message for slot in view.board.slots.values() if slot.state != "passed"]
        finally:
            probe.stop()
            window.close()
            pause(0.2)
            session.close()
        app.processEvents()
    finally:
        farm.down()
        remove_cpu_group(cpu_group)
        shutil.rmtree(root, ignore_errors=True)
    gaps = [(b - a) * 1000 for a, b in zip(ticks, ticks[1:], strict=False)]
    ordered = sorted(gaps)
    worst = sorted(range(len(gaps)), key=gaps.__getitem__, reverse=True)[:5]
    parts = _gap_parts(scheduling, gaps)
    # What the station can answer for: a gap less the time the GUI thread sat runnable waiting for a CPU
    # (other processes' load: the simulated boards, and anything else on a shared machine).
    own = [gap - (parts[i]["run_queue_ms"] if i < len(parts) else 0.0) for i, gap in enumerate(gaps)]
    worst_own = max(range(len(own)), key=own.__getitem__) if own else 0
    return {
        "benchmark": "gui-batch-stall",
        "command": f"python -m bench.gui_batch_stall --slots {args.slots} --keygen-delay {args.keygen_delay:g} "
        f"--boot-delay {args.boot_delay:g}" + (" --boards-share-cpu" if args.boards_share_cpu else ""),
        "machine": machine(),
        "conditions": args.conditions,
        "engine": "station.engine: one spawned worker process per unit",
        "peak_station_memory_mib": memory.result.get("peak_rss_mib"),
        "peak_station_pss_mib": memory.result.get("peak_pss_mib"),
        "processes_at_peak": memory.result.get("processes_at_peak"),
        "platform": QApplication.platformName(),
        "goal_ms": GOAL_MS,
        "slots": args.slots,
        "keygen_delay_s": args.keygen_delay,
        "boot_delay_s": args.boot_delay,
        "probe_interval_ms": PROBE_INTERVAL_MS,
        "boards_autogroup_nice": None if args.boards_share_cpu else BOARD_AUTOGROUP_NICE,
        "board_sessions_deprioritised": yielded,
        "boards_cpu_group": None if cpu_group is None else f"{cpu_group} (cpu.shares 2)",
        "autogroup_scheduling": _autogroups(),
        # Other work on the machine shows up as stalls: the load averages before and after the batch.
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "ticks": len(ticks),
        "longest_stall_ms": round(ordered[-1], 1),
        "p99_stall_ms": round(ordered[int(len(ordered) * 0.99)], 1),
        "median_gap_ms": round(statistics.median(ordered), 2),
        "gaps_over_50ms": sum(gap > GOAL_MS for gap in gaps),
        "worst_gaps_at_s": [
            {
                "at_s": round(ticks[i] - ticks[0], 2),
                "gap_ms": round(gaps[i], 1),
                **(parts[i] if i < len(parts) else {}),
            }
            for i in worst
        ],
        # Each gap split from the GUI thread's /proc/self/task/TID/schedstat: run_queue_ms runnable but not
        # on a CPU (the machine's load), gui_cpu_ms on a CPU (the window's own work), other_ms neither
        # (waiting for the GIL or a lock, or idle in the event loop up to the probe interval).
        "longest_stall_less_run_queue_ms": round(own[worst_own], 1) if own else None,
        "longest_stall_less_run_queue": (
            {
                "at_s": round(ticks[worst_own] - ticks[0], 2),
                "gap_ms": round(gaps[worst_own], 1),
                **parts[worst_own],
            }
            if own and worst_own < len(parts)
            else None
        ),
        "run_queue_ms_total": round(sum(part["run_queue_ms"] for part in parts), 1),
        # time.perf_counter() (CLOCK_MONOTONIC) of the first tick: lines the gaps up with outside samplers.
        "probe_t0_monotonic": round(ticks[0], 4) if ticks else None,
        "wall_s": round(wall, 2),
        "passed": counts.passed,
        "failed": counts.failed,
        "failures": failures[:5],
    }


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def _gap_parts(scheduling: list[bytes], gaps: list[float]) -> list[dict[str, float]]:
    """Per gap between two ticks: the GUI thread's CPU time, run-queue wait, and the rest (ms)."""
    parts = []
    for before, after, gap in zip(scheduling, scheduling[1:], gaps, strict=False):
        try:
            cpu_a, queue_a = (int(value) for value in before.split()[:2])
            cpu_b, queue_b = (int(value) for value in after.split()[:2])
        except ValueError:
            cpu_a = queue_a = cpu_b = queue_b = 0
        cpu, waited = (cpu_b - cpu_a) / 1e6, (queue_b - queue_a) / 1e6
        parts.append(
            {
                "gui_cpu_ms": round(cpu, 1),
                "run_queue_ms": round(waited, 1),
                "other_ms": round(max(0.0, gap - cpu - waited), 1),
            }
        )
    return parts


def _autogroups() -> bool | None:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--keygen-delay", type=float, default=20.0)
    parser.add_argument("--boot-delay", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=2371)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the batch may take")
    parser.add_argument(
        "--boards-share-cpu",
        action="store_true",
        help="leave the simulated boards' sessions at the station's CPU weight",
    )
    parser.add_argument("--profile", help="write a cProfile of the GUI thread during the batch here")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gui-batch-stall.json")
    parser.add_argument("--conditions", default="", help="a note on the machine's state, kept in the results")
    args = parser.parse_args()
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
