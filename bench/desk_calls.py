"""CPU cost of each call the station's service desk answers, and of the engine thread reading one message.

    .venv/bin/python -m bench.desk_calls [--units 200] [--out bench/results/desk-calls.json]

What the engine's parent spends per unit on its workers' calls (issue 13, P3: the station's share of a unit at
64 slots), measured as CPU time of the thread that runs the call (``time.thread_time``), so a loaded machine
changes the figures little (wall time is recorded beside them).  In a temporary station home: a demo file CA and
an audit log; for each of ``--units`` units, the calls a unit's worker makes, in its order, through the
scheduler's own answer function (``Scheduler._service``, as the service desk calls it, commits grouped, one
flush per unit as the desk's group does): pin_host_key, record_step (13 steps), unit, public_key_seen,
ca.issue, certificate_for_unit, tls.listen (+ the engine's tls.result when the board never connects; its
process CPU too, which includes any thread the listener starts), finish_unit.  Then the engine thread's
reading of one progress message from a worker's pipe.  Medians and p95 in microseconds.
Run it on two trees (``PYTHONPATH=<tree>``) for before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.audit import AuditLog
from station.config import StationConfig
from station.engine.protocol import Call, Progress
from station.engine.scheduler import Scheduler
from station.flow import FlowEvent
from station.home import StationHome
from station.pki import CertificateAuthority
from station.profiles import DEFAULT_PROFILE, load_profile

PASSPHRASE = b"bench passphrase 0123"
# The shipped profile's enrollment steps, in order (not a copy that could drift from it).
STEPS = load_profile(DEFAULT_PROFILE).step_names()


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p95_us": round(ordered[int(0.95 * (len(ordered) - 1))] * 1e6, 1),
        "n": len(ordered),
    }


def _csr(serial: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"serial:{serial}")])
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def run(units: int) -> dict[str, Any]:
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}

    def timed(name: str, action: Callable[[], object], clock: Callable[[], float] = time.thread_time) -> Any:
        started_cpu, started = clock(), time.perf_counter()
        value = action()
        cpu.setdefault(name, []).append(clock() - started_cpu)
        wall.setdefault(name, []).append(time.perf_counter() - started)
        return value

    with tempfile.TemporaryDirectory(prefix="bench-desk-") as scratch:
        home = StationHome(Path(scratch) / "home").create()
        ca = CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE)
        profile = load_profile(DEFAULT_PROFILE)
        scheduler = Scheduler(home=home, config=StationConfig(name="bench"), ca=ca)
        audit = AuditLog(home.audit_db)
        scheduler._audit = audit
        csrs = [_csr(f"2026{index:011d}") for index in range(units)]
        now = datetime.now(UTC)

        def one(index: int) -> None:
            serial = f"2026{index:011d}"
            unit = audit.start_unit(
                serial=serial,
                profile=profile.name,
                device="ssh://root@127.0.0.2:22",
                operator="bench",
                station="bench",
            )
            running = types.SimpleNamespace(
                unit_id=unit.id, tls_ports=set(), job=types.SimpleNamespace(profile=profile, serial=serial)
            )

            def call(method: str, service: str = "audit", running: Any = running, **args: Any) -> Any:
                return scheduler._service(running, Call(1, service, method, args))

            with audit.grouped_commits():
                timed(
                    "audit.pin_host_key",
                    lambda: call(
                        "pin_host_key",
                        unit_id=unit.id,
                        key_type="ssh-ed25519",
                        fingerprint=f"SHA256:{index:043d}",
                    ),
                )
                for step in STEPS:
                    timed(
                        "audit.record_step",
                        lambda step=step: call(
                            "record_step",
                            unit_id=unit.id,
                            step=step,
                            attempt=1,
                            outcome="passed",
                            started_at=now,
                            ended_at=now,
                            excerpt="ok",
                        ),
                    )
                timed("audit.unit", lambda: call("unit", unit_id=unit.id))
                timed("audit.public_key_seen", lambda: call("public_key_seen", spki_sha256=f"{index:064x}"))
                timed(
                    "ca.issue",
                    lambda: call(
                        "issue",
                        service="ca",
                        unit_id=unit.id,
                        csr_pem=csrs[index],
                        profile=profile,
                        serial=serial,
                    ),
                )
                timed("audit.certificate_for_unit", lambda: call("certificate_for_unit", unit_id=unit.id))
                port = timed(
                    "tls.listen", lambda: call("listen", service="tls", host="127.0.0.1", timeout_s=20.0)
                )
                timed("tls.result (engine, no client)", lambda port=port: scheduler._tls.result(port, 0.0))
            timed("make_durable (one flush)", audit.make_durable)
            with audit.grouped_commits():
                timed("audit.finish_unit", lambda: call("finish_unit", unit_id=unit.id, result="passed"))
            audit.make_durable()

        for index in range(units):
            one(index)
        # The whole TLS listen + give-up, in CPU of the whole process (any thread the listener starts included).
        for _ in range(units):

            def proof() -> None:
                port = scheduler._tls.listen("127.0.0.1", 20.0)
                scheduler._tls.result(port, 0.0)

            timed("tls.listen+result (process CPU)", proof, clock=time.process_time)
        # The engine thread reading one message a worker sent (epoll said its pipe is readable).
        ours, theirs = scheduler._context.Pipe(duplex=True)
        event = FlowEvent(kind="output", serial="202600000000000", unit_id=1, message="x" * 200)
        receiver = types.SimpleNamespace(
            connection=ours,
            reported=False,
            cancelled=False,
            done=None,
            done_at=None,
            job_id=1,
            job=types.SimpleNamespace(fixture=None),
            deadline=0.0,
            step="",
            poller=None,
        )
        # What the engine thread calls when epoll says a pipe is readable (_receive before issue 13's P3 work).
        read = getattr(scheduler, "_read_ready", scheduler._receive)
        for _ in range(units * 5):
            theirs.send(Progress(event))
            timed("engine: read one progress message", lambda: read(receiver))
        ours.close()
        theirs.close()
        audit.close()
    return {
        "cpu_us": {name: _stats(samples) for name, samples in cpu.items()},
        "wall_us": {name: _stats(samples) for name, samples in wall.items()},
        "per_unit_cpu_ms": round(
            sum(
                statistics.median(samples) * (len(samples) / units)
                for name, samples in cpu.items()
                if not name.startswith(("tls.listen+", "engine"))
            )
            * 1000,
            3,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args()
    load = os.getloadavg()
    result = {
        "units": options.units,
        "label": options.label,
        "loadavg_before": [round(x, 2) for x in load],
        **run(options.units),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if options.out is not None:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
