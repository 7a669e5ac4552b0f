"""The engine on real simulated boards: every unit in its own worker process, which the station can lose
(killed, hung) without losing anything else.

* `station batch` runs its units in worker processes and reports the events every driver sees;
* a worker SIGKILLed mid-keygen → that unit failed and resumable, the other boards PASS, no process left;
* a worker that hangs in a step past its deadline → terminated by the station (not asked), the unit failed
  and resumable, and resumed to PASS;
* the worker's environment and command line carry no secret, nor do the fork server's that forks it;
* workers are forks of the station's fork server (never of the station itself), and the server ends with
  the station.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from station.audit import AuditLog
from station.config import StationConfig
from station.engine import Ending, Scheduler, UnitJob
from station.engine.scheduler import WORKER_MEMORY_LIMIT_MIB, WORKER_NICENESS, worker_environment
from station.flow import FlowEvent
from station.pki import CertificateAuthority
from station.profiles import load_profile
from tests.helpers.engine_events import (
    carries,
    descendants,
    expected_shape,
    forkserver,
    parent_of,
    unit_shape,
    worker_pids,
)
from tests.helpers.kit import FAST_STEPS, profile_copy

pytestmark = pytest.mark.integration

PASSPHRASE = "engine integration passphrase"
WAIT_S = 120.0


@pytest.fixture
def ca(sim_home):
    return CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())


class Watcher:
    """Collects a scheduler's events (on the engine thread) and waits for one."""

    def __init__(self) -> None:
        self.events: list[FlowEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: FlowEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, predicate, what: str) -> FlowEvent:
        end = time.monotonic() + WAIT_S
        with self._changed:
            while True:
                found = next((event for event in self.events if predicate(event)), None)
                if found is not None:
                    return found
                assert time.monotonic() < end, f"never saw {what}"
                self._changed.wait(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cli_batch_runs_each_unit_in_a_worker_and_reports_every_event(start_farm, sim_home, ca):
    devices = start_farm(count=2)
    serials = ["202600000000071", "202600000000072"]
    manifest = sim_home.root / "boards.csv"
    manifest.write_text(
        "".join(
            f"{serial},{device.ssh_url},{device.name}\n"
            for serial, device in zip(serials, devices, strict=True)
        )
    )
    events_file = sim_home.root / "events.jsonl"
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
            "--events",
            str(events_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    records = [json.loads(line) for line in events_file.read_text().splitlines()]
    profile = load_profile("welma-optee")
    for serial in serials:
        assert unit_shape(records, serial) == expected_shape(profile)
        assert len(worker_pids(records, serial)) == 1
        (finished,) = [r for r in records if r["serial"] == serial and r["kind"] == "unit_finished"]
        assert finished["result"]["kind"] == "passed" and finished["result"]["certificate_fingerprint"]
    assert worker_pids(records, serials[0]) != worker_pids(records, serials[1])


def test_a_worker_killed_mid_keygen_fails_only_its_unit(start_farm, sim_home, ca):
    devices = start_farm(count=3, keygen_delay=4)
    profile = load_profile("welma-optee")
    watcher = Watcher()
    scheduler = Scheduler(home=sim_home, config=StationConfig(name="engine"), ca=ca, observer=watcher)
    scheduler.start()
    jobs = [
        UnitJob(
            serial=f"20260000000008{index}",
            device=device.ssh_url,
            profile=profile,
            operator="erin",
            fixture=device.name,
        )
        for index, device in enumerate(devices)
    ]
    numbers = [scheduler.submit(job) for job in jobs]
    victim = watcher.wait_for(
        lambda e: e.kind == "step_started" and e.step == "keygen" and e.job == numbers[0],
        "the first board reach key generation",
    )
    assert victim.pid is not None and victim.pid != os.getpid()
    os.kill(victim.pid, signal.SIGKILL)
    assert scheduler.wait(numbers, WAIT_S)
    killed, *others = [scheduler.outcome(number) for number in numbers]
    scheduler.close()
    assert killed.kind == Ending.FAILED and killed.resumable and killed.failed_step == "keygen"
    assert "signal 9" in killed.message
    assert [outcome.kind for outcome in others] == [Ending.PASSED, Ending.PASSED]
    # Each worker that reached its end said what its unit cost it (bench/batch_scaling.py's P7 split); the
    # killed one could not.
    assert all(outcome.worker_cpu_s > 0 for outcome in others) and killed.worker_cpu_s == 0
    assert not alive(victim.pid)
    assert not multiprocessing.active_children()
    assert not [thread for thread in threading.enumerate() if thread.name == "station-engine"]
    with AuditLog(sim_home.audit_db) as audit:
        unit = audit.find_unit(jobs[0].serial)
        assert unit.state == "failed" and unit.failed_step == "keygen"
        assert audit.verify().ok
    # Retry continues it (from a fresh token) to PASS.
    again = Scheduler(home=sim_home, config=StationConfig(name="engine"), ca=ca)
    (resumed,) = again.run(
        [UnitJob(serial=jobs[0].serial, device=jobs[0].device, profile=profile, operator="erin", resume=True)]
    )
    assert resumed.kind == Ending.PASSED, resumed.message


def test_a_worker_hung_past_its_step_deadline_is_terminated_and_the_unit_resumes(start_farm, sim_home, ca):
    (device,) = start_farm(count=1)
    steps = dict(FAST_STEPS)
    steps["keygen"] = (4.0, 0)
    profile = profile_copy(sim_home, "engine-hang", steps=steps)
    watcher = Watcher()
    scheduler = Scheduler(
        home=sim_home, config=StationConfig(name="engine"), ca=ca, observer=watcher, step_grace_s=1.0
    )
    scheduler.start()
    number = scheduler.submit(
        UnitJob(serial="202600000000091", device=device.ssh_url, profile=profile, operator="erin")
    )
    started = watcher.wait_for(
        lambda e: e.kind == "step_started" and e.step == "keygen", "key generation start"
    )
    # The worker freezes mid-step (as a process stuck in a call no deadline reaches): only the station
    # can end it.
    os.kill(started.pid, signal.SIGSTOP)
    assert scheduler.wait([number], WAIT_S)
    outcome = scheduler.outcome(number)
    scheduler.close()
    assert outcome.kind == Ending.FAILED and outcome.resumable and outcome.failed_step == "keygen"
    assert "did not end within its deadline" in outcome.message and "terminated" in outcome.message
    assert not alive(started.pid)
    assert not multiprocessing.active_children()
    failed = [e for e in watcher.events if e.kind == "step_finished" and e.step == "keygen"]
    assert failed and failed[-1].outcome == "failed"
    again = Scheduler(home=sim_home, config=StationConfig(name="engine"), ca=ca)
    (resumed,) = again.run(
        [
            UnitJob(
                serial="202600000000091", device=device.ssh_url, profile=profile, operator="erin", resume=True
            )
        ]
    )
    assert resumed.kind == Ending.PASSED, resumed.message


def test_a_worker_inherits_no_secret_and_runs_under_its_limits(start_farm, sim_home, ca, monkeypatch):
    (device,) = start_farm(count=1, keygen_delay=3)
    monkeypatch.setenv("STATION_CA_PASSPHRASE", PASSPHRASE)
    # A fork server started by an earlier test would not have seen the passphrase: start this one under it.
    multiprocessing.forkserver._forkserver._stop()
    profile = load_profile("welma-optee")
    watcher = Watcher()
    scheduler = Scheduler(home=sim_home, config=StationConfig(name="engine"), ca=ca, observer=watcher)
    scheduler.start()
    number = scheduler.submit(
        UnitJob(serial="202600000000095", device=device.ssh_url, profile=profile, operator="erin")
    )
    started = watcher.wait_for(
        lambda e: e.kind == "step_started" and e.step == "keygen", "key generation start"
    )
    environ = Path(f"/proc/{started.pid}/environ").read_bytes()
    argv = Path(f"/proc/{started.pid}/cmdline").read_bytes()
    # The worker is a fork of the fork server — the station's child, not the station — which carries no
    # secret either (every worker it forks starts from its environment).
    server = parent_of(started.pid)
    assert server != os.getpid() and parent_of(server) == os.getpid()
    server_environ = Path(f"/proc/{server}/environ").read_bytes()
    server_argv = Path(f"/proc/{server}/cmdline").read_bytes()
    limits = Path(f"/proc/{started.pid}/limits").read_text()
    nice = int(Path(f"/proc/{started.pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    assert scheduler.wait([number], WAIT_S)
    scheduler.close()
    assert scheduler.outcome(number).kind == Ending.PASSED
    assert os.environ["STATION_CA_PASSPHRASE"] == PASSPHRASE  # the station's own is untouched
    assert PASSPHRASE.encode() not in environ and PASSPHRASE.encode() not in argv
    assert b"STATION_CA_PASSPHRASE" not in environ
    assert PASSPHRASE.encode() not in server_environ and PASSPHRASE.encode() not in server_argv
    assert b"STATION_CA_PASSPHRASE" not in server_environ and b"multiprocessing.forkserver" in server_argv
    # …and the environment the worker runs with (the station's, sent through its pipe) has none.
    assert "STATION_CA_PASSPHRASE" not in worker_environment() and "HOME" in worker_environment()
    # The last line of defence against a flooding board: the worker's own address-space limit; and it
    # runs below the station's priority.
    (address_space,) = [line for line in limits.splitlines() if line.startswith("Max address space")]
    assert address_space.split()[3] == str(WORKER_MEMORY_LIMIT_MIB * 2**20)
    assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)
    # The profile (PINs included) reaches the worker through its pipe, not its command line.
    assert f"pin-value={profile.user_pin}".encode() not in argv


def test_ctrl_c_on_station_provision_cancels_the_unit_cleanly(start_farm, sim_home, ca):
    (device,) = start_farm(count=1, keygen_delay=30)
    events_file = sim_home.root / "events.jsonl"
    args = [
        sys.executable,
        "-m",
        "station",
        "--home",
        str(sim_home.root),
        "provision",
        "--serial",
        "202600000000097",
        "--device",
        device.ssh_url,
        "--operator",
        "dana",
        "--events",
        str(events_file),
    ]
    # Its own session, as a terminal's foreground job: Ctrl-C reaches the station and its worker alike.  A
    # foreground job takes Ctrl-C even when this test runs where SIGINT is ignored (a suite started in the
    # background, `make test &`: an ignored SIGINT is inherited, and Python then never raises KeyboardInterrupt).
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env=dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE),
    )
    try:
        end = time.monotonic() + WAIT_S
        while not (events_file.exists() and '"step": "keygen"' in events_file.read_text()):
            assert process.poll() is None and time.monotonic() < end, "the unit should reach key generation"
            time.sleep(0.2)
        # Below the station: its fork server (single-threaded, no secret), the worker it forked, and
        # multiprocessing's resource tracker — none carries the passphrase.
        below = descendants(process.pid)
        assert forkserver(below) is not None
        assert not [pid for pid in below if carries(pid, PASSPHRASE)]
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert "can be resumed with --resume" in err
    records = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert not any(alive(pid) for pid in worker_pids(records, "202600000000097"))
    # The fork server and the resource tracker end with the station (their pipe from it closes).
    end = time.monotonic() + 10
    while any(alive(pid) for pid in below) and time.monotonic() < end:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in below)
    (finished,) = [r for r in records if r["kind"] == "unit_finished"]
    assert finished["result"]["kind"] == "failed" and finished["result"]["resumable"]
    assert "cancelled" in finished["message"]
    with AuditLog(sim_home.audit_db) as audit:
        assert audit.find_unit("202600000000097").state == "failed"
