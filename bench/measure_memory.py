"""The peak memory of a process tree, sampled from a process of its own.

    python -m bench.measure_memory PID      (prints JSON when its standard input closes)

bench/gui_batch_stall.py measures the window while the station service — a child of the window, with the
fork server and the units' workers below it — runs the batch.  A sampler thread inside the window's process
would share the GUI thread's GIL (and see only the window); this one runs beside it, reads the resident
size of every process below PID (``statm``) every 0.25 s, finds the tree again every second, and reads the
proportional sizes (``smaps_rollup``, a walk of every mapping) only near the resident peak, at most every
2 s.  :class:`TreePeak` starts it and reads its answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

INTERVAL_S = 0.25
TREE_EVERY_S = 1.0
PSS_EVERY_S = 2.0
PSS_NEAR_PEAK = 0.99


def proportional_bytes(pid: int) -> int:
    """A process's proportional set size (pages it shares with others split between them)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def resident_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc/PID/stat's parent field)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def sample(root: int, stop: threading.Event) -> dict[str, Any]:
    peak = peak_pss = processes = samples = pss_samples = 0
    tree: list[int] = []
    tree_due = pss_due = 0.0
    while not stop.wait(INTERVAL_S):
        now = time.monotonic()
        if now >= tree_due:
            tree = [pid for pid in descendants(root) if pid != os.getpid()]  # not this sampler
            tree_due = now + TREE_EVERY_S
        total = sum(resident_bytes(pid) for pid in tree)
        samples += 1
        if total > peak:
            peak, processes = total, len(tree)
        if total >= PSS_NEAR_PEAK * peak and now >= pss_due:
            pss_due = now + PSS_EVERY_S
            pss_samples += 1
            peak_pss = max(peak_pss, sum(proportional_bytes(pid) for pid in tree))
    return {
        "peak_rss_mib": round(peak / 2**20, 1),
        "peak_pss_mib": round(peak_pss / 2**20, 1),
        "processes_at_peak": processes,
        "samples": samples,
        "pss_samples": pss_samples,
        "sampler_cpu_s": round(time.process_time(), 3),
    }


class TreePeak:
    """Samples the memory of PID's process tree from a separate process while the ``with`` block runs."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.result: dict[str, Any] = {}

    def __enter__(self) -> TreePeak:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.measure_memory", str(self._pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own CPU group (autogroup), not the window's
        )
        return self

    def __exit__(self, *exc: object) -> None:
        out, _err = self._process.communicate(input="", timeout=30)
        self.result = json.loads(out) if out.strip() else {}


def main() -> None:
    root = int(sys.argv[1])
    try:  # the lowest weight of the machine's CPU groups: the measured station and window come first
        Path("/proc/self/autogroup").write_text("19\n")
    except OSError:
        pass
    stop = threading.Event()
    found: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: found.update(sample(root, stop)), daemon=True)
    thread.start()
    sys.stdin.read()  # until the bench closes it
    stop.set()
    thread.join()
    print(json.dumps(found))


if __name__ == "__main__":
    main()
