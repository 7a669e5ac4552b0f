"""Per-step times of one unit on a real OP-TEE board (QEMU, TCG) next to a SoftHSM2 board, and the
margin the profile's deadlines leave.

    .venv/bin/python -m bench.optee_steps [--units 2] [--out bench/results/optee-steps.json]

Boots one SoftHSM2 board, runs the units over SSH, stops it; then boots one OP-TEE board (built once
and cached, see station/sim/optee_build.py), runs the same units, stops it — never both at once,
the emulator is CPU-heavy.  Each unit starts from factory-fresh secure storage (`sim reset`).  The
margin of a step is its deadline in the profile over the slowest time seen on the OP-TEE board;
TCG emulation is slower than silicon for the CPU-bound steps (keygen, CSR) and the board's boot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import tempfile
import time
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
from station.sim.optee_farm import GUEST_STATION_ADDRESS, HOST_STATION_ADDRESS
from station.sim.preflight import address_in_use

HERE = Path(__file__).resolve().parent
PASSPHRASE = b"bench passphrase 0123"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 and on the first board's address (127.0.0.2)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if not address_in_use("127.0.0.2", port):
            return port
    raise RuntimeError("no free TCP port")


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run_units(kind: str, units: int, profile_name: str) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    home = StationHome(root / "home").create()
    farm = Farm(home)
    steps: dict[str, list[float]] = {}
    unit_times: list[float] = []
    failures: list[str] = []
    boot_s = 0.0
    try:
        tls_port = free_port()
        began = time.perf_counter()
        options: dict[str, Any] = {"kind": kind, "port": free_port()}
        if kind == "optee":
            options["tls_proof_port"] = tls_port
        else:
            options["boot_delay"] = 1.0
        (device,) = farm.up(1, **options)
        boot_s = time.perf_counter() - began
        ca = CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE)
        config = (
            StationConfig(
                name="bench",
                tls_listen_address=HOST_STATION_ADDRESS,
                tls_dial_address=GUEST_STATION_ADDRESS,
                tls_port=tls_port,
            )
            if kind == "optee"
            else StationConfig(name="bench")
        )
        durations: dict[str, float] = {}

        def observe(event: FlowEvent) -> None:
            if event.kind == "step_finished" and event.outcome == "passed":
                durations[event.step] = event.duration_s

        provisioner = Provisioner(
            home=home, config=config, ca=ca, audit=AuditLog(home.audit_db), observer=observe
        )
        profile = load_profile(profile_name)
        for index in range(units):
            farm.reset(device.name)
            durations.clear()
            began = time.perf_counter()
            result = provisioner.provision(
                serial=f"2026000009{index:05d}", device=device.ssh_url, profile=profile, operator="bench"
            )
            if not result.passed:
                failures.append(f"unit {index}: {result.failed_step}: {result.message}")
                continue
            unit_times.append(time.perf_counter() - began)
            for step, seconds in durations.items():
                steps.setdefault(step, []).append(seconds)
    finally:
        farm.down()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "first_boot_s": round(boot_s, 2),
        "unit_median_s": round(statistics.median(unit_times), 2) if unit_times else None,
        "step_median_s": {step: round(statistics.median(v), 3) for step, v in steps.items()},
        "step_max_s": {step: round(max(v), 3) for step, v in steps.items()},
        "passed_units": len(unit_times),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=2)
    parser.add_argument("--profile", default="welma-optee")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "optee-steps.json")
    args = parser.parse_args()

    load_before = load_average()
    softhsm = run_units("softhsm", args.units, args.profile)
    optee = run_units("optee", args.units, args.profile)
    profile = load_profile(args.profile)
    margins: dict[str, float] = {}
    for step, worst in optee["step_max_s"].items():
        deadline = profile.steps[step].timeout_s if step in profile.steps else None
        if deadline and worst > 0:
            margins[step] = round(deadline / worst, 1)
    report = {
        "benchmark": "optee-steps",
        "command": f"python -m bench.optee_steps --units {args.units} --profile {args.profile}",
        "machine": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "units": args.units,
        "profile": args.profile,
        "softhsm": softhsm,
        "optee": optee,
        "optee_deadline_margin": margins,
        "tightest_step": min(margins, key=lambda step: margins[step]) if margins else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
