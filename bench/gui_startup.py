"""P6: the window's cold start to "ready to scan", median of several runs.

    .venv/bin/python -m bench.gui_startup [--runs 7] [--out bench/results/gui-startup.json]

Each run spawns ``python -m ui.app --probe-startup`` afresh against a throw-away station with two
simulated boards (bench.measure's startup measurement): from just before the process is spawned until
the window is shown, the operator signed in and the scan field focused.  Offscreen unless a display
is set.  Needs root for the simulator.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.provision_ssh import machine

HERE = Path(__file__).resolve().parent
GOAL_S = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gui-startup.json")
    args = parser.parse_args()
    from bench.demo_station import ensure_display
    from bench.measure import measure_startup

    ensure_display()
    measured = measure_startup(args.runs)
    ready = measured["ready_to_scan_s"]
    report = {
        "benchmark": "gui-startup",
        "command": f"python -m bench.gui_startup --runs {args.runs}",
        "machine": machine(),
        "platform": os.environ.get("QT_QPA_PLATFORM", "") or "default",
        "goal_s": GOAL_S,
        "runs": args.runs,
        "cold_start_s": round(ready["median"], 3),
        "min_s": round(ready["min"], 3),
        "max_s": round(ready["max"], 3),
        "of_which_in_main_s": round(measured["of_which_in_main_s"]["median"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
