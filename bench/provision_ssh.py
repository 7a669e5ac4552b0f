"""Per-step durations of one unit over SSH, station vs the tutorial done by hand (same devices, same run).

    .venv/bin/python bench/provision_ssh.py [--units 5] [--out bench/results/provision-ssh.json]

Boots one simulated device in a temporary station home, then alternates station units and runs of
bench/baseline/tutorial.sh (OpenSSH + scp per command, openssl CLI signing), resetting the board to
factory-fresh before each.  Records medians per step and per unit as JSON, with machine information.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.audit import AuditLog
from station.config import StationConfig
from station.flow import FlowEvent, Provisioner
from station.home import StationHome
from station.pki import CertificateAuthority
from station.profiles import load_profile
from station.sim.farm import Farm
from station.transport.ssh import SshLink

HERE = Path(__file__).resolve().parent
PASSPHRASE = "bench passphrase 0123"


def machine() -> dict[str, object]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "platform": platform.platform(),
    }


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class DeviceTime:
    """Sums the time spent waiting on the board (commands, transfers, reboot, connect) during a unit.

    The station's own overhead is the unit's wall time minus this: audit writes, CSR checks, signing,
    event delivery and Python.  Benchmark-only instrumentation; the product code is unchanged.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        for name in ("open", "run", "put", "get", "reboot"):
            original = getattr(SshLink, name)
            setattr(SshLink, name, self._timed(original))

    def _timed(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=5)
    parser.add_argument("--port", type=int, default=2390)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "provision-ssh.json")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-provision-"))
    home = StationHome(root / "home").create()
    farm = Farm(home)
    station_steps: dict[str, list[float]] = {}
    baseline_steps: dict[str, list[float]] = {}
    station_units: list[float] = []
    station_cpu: list[float] = []
    overhead: list[float] = []
    device_time = DeviceTime()
    baseline_units: list[float] = []
    baseline_cpu: list[float] = []
    try:
        (device,) = farm.up(1, boot_delay=0.2, port=args.port)
        ca = CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
        audit = AuditLog(home.audit_db)
        durations: dict[str, float] = {}

        def observe(event: FlowEvent) -> None:
            if event.kind == "step_finished" and event.outcome == "passed":
                durations[event.step] = event.duration_s

        provisioner = Provisioner(
            home=home, config=StationConfig(name="bench"), ca=ca, audit=audit, observer=observe
        )
        profile = load_profile("welma-optee")
        for index in range(args.units):
            # Station unit.
            farm.swap(device.name)  # another board: each serial needs its own silicon
            durations.clear()
            began, cpu = time.perf_counter(), cpu_seconds()
            device_time.seconds = 0.0
            result = provisioner.provision(
                serial=f"2026000000{index:05d}", device=device.ssh_url, profile=profile, operator="bench"
            )
            station_units.append(time.perf_counter() - began)
            # The TLS proof's s_client run counts as device time though the station serves it meanwhile.
            overhead.append((station_units[-1] - device_time.seconds) / device_time.seconds)
            station_cpu.append(cpu_seconds() - cpu)
            assert result.passed, result.message
            for step, seconds in durations.items():
                station_steps.setdefault(step, []).append(seconds)
            # The tutorial by hand on the same board.
            farm.swap(device.name)  # another board: each serial needs its own silicon
            began, children = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
            run = subprocess.run(
                [
                    "bash",
                    str(HERE / "baseline" / "tutorial.sh"),
                    device.address,
                    str(device.port),
                    str(home.ssh_key),
                    str(home.ca_dir),
                    f"2026000001{index:05d}",
                    str(root / f"baseline-{index}"),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env=dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE),
                check=True,
            )
            baseline_units.append(time.perf_counter() - began)
            # ssh, scp, openssl and the shell on the station's side (the boards are not our children).
            baseline_cpu.append(cpu_seconds(resource.RUSAGE_CHILDREN) - children)
            for line in run.stdout.splitlines():
                if line.startswith("STEP "):
                    _, step, seconds = line.split()
                    baseline_steps.setdefault(step, []).append(float(seconds))
    finally:
        farm.down()
        shutil.rmtree(root, ignore_errors=True)

    report = {
        "benchmark": "provision-ssh",
        "command": f"bench/provision_ssh.py --units {args.units}",
        "machine": machine(),
        "units": args.units,
        "station_step_median_s": {step: round(statistics.median(v), 4) for step, v in station_steps.items()},
        "baseline_step_median_s": {
            step: round(statistics.median(v), 4) for step, v in baseline_steps.items()
        },
        "station_unit_median_s": round(statistics.median(station_units), 3),
        "baseline_unit_median_s": round(statistics.median(baseline_units), 3),
        "station_over_baseline": round(
            statistics.median(station_units) / statistics.median(baseline_units), 3
        ),
        "station_cpu_s_per_unit_median": round(statistics.median(station_cpu), 3),
        "baseline_cpu_s_per_unit_median": round(statistics.median(baseline_cpu), 3),
        "station_cpu_over_baseline_cpu": round(
            statistics.median(station_cpu) / statistics.median(baseline_cpu), 3
        ),
        "station_overhead_over_device_time_median": round(statistics.median(overhead), 4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
