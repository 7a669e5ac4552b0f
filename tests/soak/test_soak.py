"""Soak: a thousand boards through batch mode on sixteen fixtures, one in ten hit by a link fault.

Every board is a factory-fresh simulated board (reset after each unit, as the next board is put on
the fixture).  A seeded one in ten gets a fault from the fault matrix (test_faults_ssh), armed
when its step starts and cleared when its unit ends.  Afterwards:

* scanned = passed + failed + pending, exactly, in the batch report and in the audit log;
* every board without a fault passed; every board with one ended as the matrix says it must;
* every passed unit has its certificate, its audit row, a read-back whose digest (recorded by the
  push step) is the certificate's, and the certificate was on its board when the unit ended;
* the audit log is sound and no thread is left running.

A second test kills `station provision` at random moments many times (see test_crash_safety).

Size and seed: STATION_SOAK_UNITS (1000), STATION_SOAK_BOARDS (16), STATION_SOAK_FAULT_RATE (0.10),
STATION_SOAK_SEED (20261126), STATION_SOAK_KILLS (40).  Run with `make soak`.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from station.audit import AuditLog
from station.batch import Batch, BatchJob
from station.config import StationConfig
from station.flow import FlowEvent, Provisioner
from station.home import StationHome
from station.pki import CertificateAuthority
from station.sim.farm import Farm, SimDevice
from tests.helpers.fault_matrix import CASES, Case
from tests.helpers.kit import (
    PASSPHRASE,
    assert_audit_sound,
    assert_no_new_threads,
    certificate_on_board,
    fingerprint,
    profile_copy,
    running_farm,
    sha256_hex,
    wait_until_up,
)

pytestmark = [pytest.mark.soak, pytest.mark.integration, pytest.mark.timeout(6 * 3600)]

UNITS = int(os.environ.get("STATION_SOAK_UNITS", "1000"))
BOARDS = int(os.environ.get("STATION_SOAK_BOARDS", "16"))
FAULT_RATE = float(os.environ.get("STATION_SOAK_FAULT_RATE", "0.10"))
SEED = int(os.environ.get("STATION_SOAK_SEED", "20261126"))
KILLS = int(os.environ.get("STATION_SOAK_KILLS", "40"))
# Seconds after the CLI says the unit started (one board at a time: a unit then takes about one).
SOAK_KILL_WINDOW_S = (0.0, 1.3)
# The tutorial's own profile (RSA-2048), with deadlines that give sixteen boards on a small machine
# room to breathe while keeping a hang to seconds.
SOAK_STEPS = {
    "identify": (15.0, 2),
    "guard": (10.0, 0),
    "wipe": (10.0, 0),
    "reboot": (30.0, 0),
    "init_token": (15.0, 0),
    "init_pin": (15.0, 0),
    "keygen": (20.0, 0),
    "csr": (15.0, 0),
    "fetch_csr": (10.0, 1),
    "check_csr": (10.0, 0),
    "sign": (10.0, 0),
    "push": (10.0, 1),
    "tls_proof": (15.0, 1),
}


@dataclass
class Board:
    """What the soak saw of one unit's board when the unit ended."""

    case: Case | None
    fixture: str = ""
    certificate_at_end: str | None = None
    finished: bool = False


@dataclass
class Plan:
    farm: Farm
    devices: dict[str, SimDevice]
    boards: dict[str, Board]
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, event: FlowEvent) -> None:
        """Arm a board's fault when its step starts; at the unit's end, note its certificate and reset it."""
        board = self.boards.get(event.serial)
        device = self.devices.get(event.fixture or "")
        if board is None or device is None:
            return
        try:
            case = board.case
            if (
                case is not None
                and event.kind == "step_started"
                and event.step == case.step
                and event.attempt == 1
            ):
                self.farm.set_fault(device.name, case.fault)
            elif event.kind == "unit_finished":
                self.farm.set_fault(device.name, None)
                if case is not None and case.fault == "no-boot":
                    wait_until_up(self.farm, device.name, timeout_s=60)
                pem = certificate_on_board(device)
                board.certificate_at_end = fingerprint(pem) if pem else None
                board.finished = True
                self.farm.swap(device.name)  # the next board on this fixture is another, factory-fresh one
        except Exception as exc:  # noqa: BLE001 - the flow swallows observer errors; keep them
            with self.lock:
                self.errors.append(f"{event.serial} {event.kind} {event.step}: {exc!r}")


def test_a_thousand_boards_on_sixteen_fixtures_with_one_in_ten_faulted(tmp_path_factory):
    home = StationHome(tmp_path_factory.mktemp("soak") / "home").create()
    ca = CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(home, "soak", base="welma-optee", steps=SOAK_STEPS)
    clock = random.Random(SEED)
    serials = [f"2027{index:011d}" for index in range(1, UNITS + 1)]
    plan_cases = {
        serial: (clock.choice(CASES) if clock.random() < FAULT_RATE else None) for serial in serials
    }
    threads_before = set(threading.enumerate())
    with running_farm(home, BOARDS) as devices:
        plan = Plan(Farm(home), {d.name: d for d in devices}, {s: Board(c) for s, c in plan_cases.items()})
        jobs = [
            BatchJob(
                serial=serial,
                device=devices[i % BOARDS].ssh_url,
                fixture=devices[i % BOARDS].name,
                line=i + 1,
            )
            for i, serial in enumerate(serials)
        ]
        audit = AuditLog(home.audit_db)
        provisioner = Provisioner(
            home=home, config=StationConfig(name="soak"), ca=ca, audit=audit, observer=plan.observe
        )
        began = time.monotonic()
        report = Batch(provisioner, profile=profile, operator="soak", jobs=BOARDS).run(jobs)
        wall = time.monotonic() - began
        audit.close()
    assert_no_new_threads(threads_before)
    assert not plan.errors, plan.errors[:10]

    # scanned = passed + failed + pending, in the report and in the audit log.
    results = Counter(outcome.result for outcome in report.outcomes)
    passed, failed = results["passed"], results["failed"] + results["aborted"]
    pending = results["refused"] + results["not started"]
    assert len(report.outcomes) == UNITS == passed + failed + pending, results
    facts = assert_audit_sound(home.audit_db)
    states = Counter(state for _, state, _ in facts.units.values())
    assert states["passed"] == passed and states["failed"] + states["aborted"] == failed, (states, results)
    assert states["running"] == 0 and len(facts.units) == passed + failed

    # Each board ended as planned: no fault, PASS; a fault, the outcome the fault matrix demands.
    by_serial = {outcome.job.serial: outcome for outcome in report.outcomes}
    surprises = []
    for serial, board in plan.boards.items():
        outcome = by_serial[serial]
        expected = "passed" if board.case is None or board.case.fails_at is None else "failed"
        step = None if expected == "passed" else board.case.fails_at  # type: ignore[union-attr]
        if (outcome.result, outcome.failed_step) != (expected, step):
            surprises.append(
                f"{serial} {board.case.id if board.case else 'no fault'}: {outcome.result} at "
                f"{outcome.failed_step}: {outcome.message[:200]}"
            )
    assert not surprises, f"{len(surprises)} boards ended unexpectedly:\n" + "\n".join(surprises[:20])

    # Every passed unit: certificate, audit row, a read-back of exactly it, and it was on its board.
    with AuditLog(home.audit_db) as log:
        for outcome in report.outcomes:
            if outcome.result != "passed":
                continue
            assert outcome.unit_id is not None
            record = log.certificate_for_unit(outcome.unit_id)
            assert record is not None and facts.certificates[record.fingerprint_sha256] == outcome.unit_id
            pushes = [s for s in log.steps(outcome.unit_id) if s.step == "push" and s.outcome == "passed"]
            assert pushes and sha256_hex(record.pem.encode("ascii")) in pushes[-1].excerpt, outcome.job.serial
            assert plan.boards[outcome.job.serial].certificate_at_end == record.fingerprint_sha256
    faulted = sum(board.case is not None for board in plan.boards.values())
    print(
        f"\nsoak: {UNITS} units on {BOARDS} boards in {wall:.0f} s ({UNITS / wall * 60:.0f} units/min); "
        f"{faulted} faulted; passed {passed}, failed {failed}, pending {pending}; "
        f"fault kinds {Counter(b.case.id for b in plan.boards.values() if b.case).most_common(5)}"
    )


def test_station_provision_killed_at_random_moments_always_recovers(tmp_path_factory):
    from tests.helpers import crash

    home = StationHome(tmp_path_factory.mktemp("soak-kills") / "home").create()
    CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
    profile_copy(home, crash.PROFILE)
    clock = random.Random(SEED + 1)
    with running_farm(home, 4) as devices:
        farm = Farm(home)
        records = []
        began = time.monotonic()
        for index in range(KILLS):
            device = devices[index % len(devices)]
            delay = round(clock.uniform(*SOAK_KILL_WINDOW_S), 2)
            records.append(crash.kill_at_random(1000 + index, delay, device, farm, home))
        wall = time.monotonic() - began
    for record in records:
        crash.check_recovered(record)
    landed = Counter(
        re.sub(r"\d+", "N", (record.killed_output.strip().splitlines() or ["no output yet"])[-1])
        .split("…")[0]
        .strip()
        for record in records
    )
    assert_audit_sound(home.audit_db)
    print(f"\nsoak kills: {KILLS} random kills in {wall:.0f} s, all recovered; landed after: {dict(landed)}")
