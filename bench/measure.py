"""`python -m bench.measure`: two numbers about the window, measured on real simulated boards.

* ``startup`` — cold start to "ready to scan": from just before ``python -m ui.app`` is spawned to
  the moment the window is shown, the operator signed in and the scan field has focus (the app
  prints the wall-clock time then, see ``--probe-startup``).
* ``stall`` — the longest the GUI thread's event loop went without running during one unit: a 5 ms
  QTimer records when it fires; the largest gap between two firings is the longest stall.

Timings belong in bench/, not in tests: this prints them (and JSON with ``--json``).
Needs root for the simulator.  Example::

    xvfb-run -a -s "-screen 0 1280x800x24" env QT_QPA_PLATFORM=xcb .venv/bin/python -m bench.measure startup stall
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from bench.demo_station import DEMO_PASSPHRASE, demo_station, ensure_display, pause, wait_for
from ui.main_window import MainWindow
from ui.session import Session

PROBE_INTERVAL_MS = 5
START_TIMEOUT_S = 60
UNIT_TIMEOUT_S = 300


def measure_startup(runs: int) -> dict[str, Any]:
    with demo_station(2, boot_delay=0.5) as demo:
        env = dict(os.environ, STATION_CA_PASSPHRASE=DEMO_PASSPHRASE)
        walls, inside = [], []
        for _ in range(runs):
            began = time.time()
            done = subprocess.run(
                [sys.executable, "-m", "ui.app", "--home", str(demo.home.root), "--probe-startup", "bench"],
                env=env,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_S,
                check=True,
            )
            line = next(line for line in done.stdout.splitlines() if line.startswith("ready-to-scan"))
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            if fields["scan-focused"] != "True":
                raise RuntimeError(f"the scan field did not have focus: {line}")
            walls.append(float(fields["wall"]) - began)
            inside.append(float(fields["in-process"].rstrip("s")))
    return {
        "runs": runs,
        "ready_to_scan_s": {"median": statistics.median(walls), "min": min(walls), "max": max(walls)},
        "of_which_in_main_s": {"median": statistics.median(inside)},
        "platform": os.environ.get("QT_QPA_PLATFORM", ""),
    }


def measure_stall(keygen_delay: float) -> dict[str, Any]:
    app = QApplication.instance() or QApplication(["station-gui"])
    with demo_station(1, keygen_delay=keygen_delay, boot_delay=0.5) as demo:
        session = Session.open(str(demo.home.root))
        session.client.call(
            "ca_unlock", {"secret": DEMO_PASSPHRASE}
        )  # as typed in the window's unlock dialog
        window = MainWindow(session)
        ticks: list[float] = []
        probe = QTimer()
        probe.setInterval(PROBE_INTERVAL_MS)
        probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
        try:
            window.show()
            window.sign_in("bench")
            pause(1.0)  # the first fixture probe, first paints
            window.scan.setText("202600000000077")
            window.accept_scan("202600000000077")
            probe.start()
            began = time.perf_counter()
            window.provision()
            (outcome,) = wait_for(window.unit_finished, UNIT_TIMEOUT_S)
            unit_s = time.perf_counter() - began
            probe.stop()
        finally:
            probe.stop()
            window.close()
            pause(0.2)
            session.close()
    app.processEvents()
    gaps = sorted((b - a) * 1000 for a, b in zip(ticks, ticks[1:], strict=False))
    return {
        "unit": outcome.kind,
        "unit_s": unit_s,
        "keygen_delay_s": keygen_delay,
        "probe_interval_ms": PROBE_INTERVAL_MS,
        "ticks": len(ticks),
        "max_gap_ms": gaps[-1],
        "p99_gap_ms": gaps[int(len(gaps) * 0.99)],
        "median_gap_ms": statistics.median(gaps),
        "gaps_over_50ms": sum(gap > 50 for gap in gaps),
        "platform": QApplication.platformName(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.measure", description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="+", choices=("startup", "stall"))
    parser.add_argument("--runs", type=int, default=5, help="cold starts to time (default 5)")
    parser.add_argument("--keygen-delay", type=float, default=0.0, help="simulated key generation time (s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    ensure_display()
    results: dict[str, Any] = {}
    if "startup" in args.what:
        results["startup"] = measure_startup(args.runs)
    if "stall" in args.what:
        results["stall"] = measure_stall(args.keygen_delay)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    if "startup" in results:
        s = results["startup"]["ready_to_scan_s"]
        print(
            f"cold start to ready-to-scan ({args.runs} runs, {results['startup']['platform'] or 'default'}): "
            f"median {s['median']:.3f} s, min {s['min']:.3f} s, max {s['max']:.3f} s; of which in main() "
            f"{results['startup']['of_which_in_main_s']['median']:.3f} s"
        )
    if "stall" in results:
        r = results["stall"]
        print(
            f"event-loop stall during one unit ({r['unit']}, {r['unit_s']:.1f} s, {r['platform']}): "
            f"max {r['max_gap_ms']:.1f} ms, p99 {r['p99_gap_ms']:.1f} ms, median {r['median_gap_ms']:.1f} ms "
            f"over {r['ticks']} ticks of a {PROBE_INTERVAL_MS} ms timer; {r['gaps_over_50ms']} gaps > 50 ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
