"""Batch mode on real simulated devices: fixtures in parallel, one serial never in two slots."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest

from station.audit import AuditLog
from station.batch import CANCEL_DEADLINE_S, Batch, BatchJob
from station.config import StationConfig
from station.flow import FlowEvent, Provisioner
from station.pki import CertificateAuthority
from station.profiles import load_profile
from tests.helpers.deadlines import assert_within_deadline

pytestmark = pytest.mark.integration

PASSPHRASE = "batch integration passphrase"


@pytest.fixture
def ca(sim_home):
    return CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())


def test_eight_boards_in_parallel_through_the_cli_and_a_duplicate_serial_is_refused(start_farm, sim_home, ca):
    devices = start_farm(count=8)
    rows = ["serial,device,fixture"]
    rows += [
        f"2026000000000{index:02d},{device.ssh_url},{device.name}" for index, device in enumerate(devices[:7])
    ]
    # The last fixture got the same label scanned as the first: the audit log refuses the second.
    rows.append(f"202600000000000,{devices[7].name}")
    manifest = sim_home.root / "boards.csv"
    manifest.write_text("\n".join(rows) + "\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "station",
            "--home",
            str(sim_home.root),
            "batch",
            "--manifest",
            str(manifest),
            "--operator",
            "dana",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE),
    )
    assert run.returncode == 1, run.stdout + run.stderr  # one board refused → non-zero
    assert "7 passed, 1 failed of 8" in run.stdout
    assert "REFUSED" in run.stdout

    audit = AuditLog(sim_home.audit_db)
    units = audit.units(limit=100)
    passed = [unit for unit in units if unit.state == "passed"]
    assert len(passed) == 7 and len({unit.serial for unit in passed}) == 7
    assert len({unit.batch for unit in units}) == 1 and units[0].batch is not None
    assert {unit.fixture for unit in passed} == {device.name for device in devices[:7]}
    # Each board's certificate is distinct, and the second slot with serial ...000 got none.
    fingerprints = {audit.certificate_for_unit(unit.id).fingerprint_sha256 for unit in passed}
    assert len(fingerprints) == 7
    assert audit.verify().ok


def test_cancel_mid_batch_leaves_units_failed_and_resumable_or_passed_and_no_thread(start_farm, sim_home, ca):
    devices = start_farm(count=4, keygen_delay=3)
    audit = AuditLog(sim_home.audit_db)
    seen: list[FlowEvent] = []
    provisioner = Provisioner(
        home=sim_home, config=StationConfig(name="t"), ca=ca, audit=audit, observer=seen.append
    )
    profile = load_profile("welma-optee")
    batch = Batch(provisioner, profile=profile, operator="erin", jobs=4)
    jobs = [
        BatchJob(f"20260000000001{index}", device.ssh_url, device.name)
        for index, device in enumerate(devices)
    ]
    worker = threading.Thread(target=lambda: reports.append(batch.run(jobs)))
    reports: list = []
    worker.start()
    deadline = time.monotonic() + 60
    while sum(event.kind == "step_started" and event.step == "keygen" for event in seen) < 4:
        assert time.monotonic() < deadline, "all four boards should reach key generation"
        time.sleep(0.05)
    cancelled_at = time.monotonic()
    batch.cancel()
    worker.join(20)
    assert not worker.is_alive()
    assert_within_deadline(cancelled_at, CANCEL_DEADLINE_S, "cancelling every slot of the batch")
    assert not [thread for thread in threading.enumerate() if thread.name == "station-engine"]
    assert not multiprocessing.active_children(), "no unit's worker process may outlive the batch"
    (report,) = reports
    assert {outcome.result for outcome in report.outcomes} <= {"failed", "passed"}
    for outcome in report.outcomes:
        unit = audit.unit(outcome.unit_id)
        assert unit.state in ("failed", "passed")
    # Every cancelled board resumes and passes.
    for outcome in report.outcomes:
        if outcome.result == "failed":
            resumed = provisioner.provision(
                serial=outcome.job.serial,
                device=outcome.job.device,
                profile=profile,
                operator="erin",
                resume=True,
            )
            assert resumed.passed, resumed.message
