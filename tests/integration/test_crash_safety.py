"""Crash safety: `station provision` killed (SIGKILL, as by a power cut) at every commit point of a unit.

The station process kills itself right after a chosen audit write has committed (the test hook
``STATION_TEST_KILL_AT`` in station/steps.py), and in a second series at random moments chosen by
a seeded clock.  After every kill:

* the audit database passes ``PRAGMA integrity_check`` and ``station audit verify``'s check passes (its own
  function, run here: a fresh interpreter per kill cost ~1 CPU-s each; the command itself runs once at the end);
* every certificate on a board has its audit row, and every certificate is recorded exactly once;
* the interrupted unit is listed by ``AuditLog.unfinished_units()``;
* it can be taken to PASS — resumed with ``--resume``, or abandoned and started over with
  ``--restart`` (alternately, so both ways are proven at most points).

The points run four at a time on four boards sharing one station home, so kills also land while
other `station` processes write to the same audit database.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Queue

import pytest

from station.audit import AuditLog
from station.cli.audit import verify_lines
from station.home import StationHome
from station.pki import CertificateAuthority
from station.sim.farm import Farm, SimDevice
from tests.helpers.kit import (
    PASSPHRASE,
    assert_audit_sound,
    assert_board_certificate_recorded,
    audit_facts,
    profile_copy,
    running_farm,
)
from tests.helpers.kit import station_cli as kit_station_cli

pytestmark = pytest.mark.integration

BOARDS = 4
PROFILE = "crash"
# Every audit write of a unit, in the order a passing unit makes them.
KILL_POINTS = (
    "unit_started",
    "host_key_pinned",
    "step:identify",
    "step:guard",
    "step:wipe",
    "step:reboot",
    "step:init_token",
    "step:init_pin",
    "step:keygen",
    "step:csr",
    "step:fetch_csr",
    "step:check_csr",
    "certificate_recorded",
    "step:sign",
    "device_certificate_pushed",
    "step:push",
    "step:tls_proof",
    "unit_finished",
)
RANDOM_KILLS = 8
RANDOM_SEED = 20261126
# A unit of the fast profile takes about a second once it has started: the kills land in there,
# counted from the moment the CLI prints that the unit started.
RANDOM_KILL_WINDOW_S = (0.0, 2.0)
UNIT_START_TIMEOUT_S = 30.0


@dataclass
class KillRecord:
    label: str
    serial: str
    killed_status: int | None = None
    killed_output: str = ""
    unfinished_after_kill: bool = False
    state_after_kill: str | None = None
    recovery: str = ""
    recovered: subprocess.CompletedProcess[str] | None = None
    # What `station audit verify` says after the kill: its exit status and lines.
    verify_after_kill: tuple[int, list[str]] | None = None
    final_state: str | None = None
    board_certificate_matches: bool = False
    certificates_of_serial: int = 0
    error: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Crashes:
    home: StationHome
    devices: list[SimDevice]
    records: dict[str, KillRecord]


def provision_args(serial: str, device: SimDevice, *extra: str) -> list[str]:
    return [
        "provision",
        "--serial",
        serial,
        "--device",
        device.ssh_url,
        "--profile",
        PROFILE,
        "--operator",
        "crash-test",
        *extra,
    ]


# The kills land in the process that writes the audit log: here the command itself (STATION_IN_PROCESS=1, the
# units run under it as before the station service).  The service killed mid-batch: tests/integration/
# test_station_service.py.
IN_PROCESS = {"STATION_IN_PROCESS": "1"}


def station_cli(
    home: StationHome, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return kit_station_cli(home, *args, env={**IN_PROCESS, **(env or {})})


def station_popen(home: StationHome, args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE, **IN_PROCESS)
    env.pop("STATION_TEST_KILL_AT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "station", "--home", str(home.root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def current_unit_state(home: StationHome, serial: str) -> tuple[str | None, bool]:
    """(state of the serial's current unit or None, whether unfinished_units() lists it)."""
    with AuditLog(home.audit_db) as log:
        unit = log.find_unit(serial)
        listed = any(u.serial == serial for u in log.unfinished_units())
    return (unit.state if unit else None), listed


def after_the_kill(record: KillRecord, home: StationHome, device: SimDevice, *, restart: bool) -> None:
    """The checks every kill must pass, then the unit taken to PASS."""
    with AuditLog(home.audit_db) as log:
        lines, status = verify_lines(home, log)
    record.verify_after_kill = status, lines
    facts = assert_audit_sound(home.audit_db)
    assert_board_certificate_recorded(device, facts)
    record.state_after_kill, record.unfinished_after_kill = current_unit_state(home, record.serial)
    if record.state_after_kill == "passed":
        record.recovery = "none needed"
    elif record.state_after_kill is None:
        record.recovery = "provision"  # killed before the unit was recorded: nothing to resume
        record.recovered = station_cli(home, *provision_args(record.serial, device))
    else:
        record.recovery = "restart" if restart else "resume"
        record.recovered = station_cli(home, *provision_args(record.serial, device, f"--{record.recovery}"))
    facts = assert_audit_sound(home.audit_db)
    record.final_state, _ = current_unit_state(home, record.serial)
    on_board = assert_board_certificate_recorded(device, facts)
    with AuditLog(home.audit_db) as log:
        unit = log.find_unit(record.serial)
        issued = log.certificate_for_unit(unit.id) if unit else None
    record.board_certificate_matches = issued is not None and on_board == issued.fingerprint_sha256
    units = {uid for uid, (serial, _, _) in facts.units.items() if serial == record.serial}
    record.certificates_of_serial = sum(1 for uid in facts.certificates.values() if uid in units)


def kill_at_point(index: int, point: str, device: SimDevice, farm: Farm, home: StationHome) -> KillRecord:
    record = KillRecord(point, serial=f"20268{index:010d}")
    try:
        farm.swap(device.name)  # another, factory-fresh board: a new serial needs new silicon
        killed = station_cli(
            home, *provision_args(record.serial, device), env={"STATION_TEST_KILL_AT": point}
        )
        record.killed_status, record.killed_output = killed.returncode, killed.stdout + killed.stderr
        after_the_kill(record, home, device, restart=index % 2 == 1)
    except BaseException:  # noqa: BLE001 - reported by the point's own test
        record.error = traceback.format_exc()
    return record


def kill_at_random(
    index: int, delay_s: float, device: SimDevice, farm: Farm, home: StationHome
) -> KillRecord:
    record = KillRecord(f"random-{index}-{delay_s:.2f}s", serial=f"20267{index:010d}")
    try:
        farm.swap(device.name)  # another, factory-fresh board: a new serial needs new silicon
        process = station_popen(home, provision_args(record.serial, device))
        assert process.stdout is not None
        seen = ""
        waited = time.monotonic() + UNIT_START_TIMEOUT_S
        while not seen.startswith("unit ") and time.monotonic() < waited and process.poll() is None:
            if select.select([process.stdout], [], [], 0.1)[0]:
                seen = process.stdout.readline()
        time.sleep(delay_s)
        process.send_signal(signal.SIGKILL)
        output, _ = process.communicate(timeout=30)
        record.killed_status, record.killed_output = process.returncode, seen + output
        after_the_kill(record, home, device, restart=index % 2 == 1)
    except BaseException:  # noqa: BLE001 - reported by the run's own test
        record.error = traceback.format_exc()
    return record


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashes]:
    home = StationHome(tmp_path_factory.mktemp("crash") / "home").create()
    CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
    profile_copy(home, PROFILE)
    clock = random.Random(RANDOM_SEED)
    delays = [round(clock.uniform(*RANDOM_KILL_WINDOW_S), 2) for _ in range(RANDOM_KILLS)]
    with running_farm(home, BOARDS) as devices:
        farm = Farm(home)
        free: Queue[SimDevice] = Queue()
        for device in devices:
            free.put(device)

        def on_a_board(job: object, *args: object) -> KillRecord:
            device = free.get()
            try:
                return job(*args[:2], device, farm, home)  # type: ignore[operator,no-any-return]
            finally:
                free.put(device)

        with ThreadPoolExecutor(max_workers=BOARDS, thread_name_prefix="crash") as pool:
            futures = [
                pool.submit(on_a_board, kill_at_point, index, point)
                for index, point in enumerate(KILL_POINTS)
            ]
            futures += [
                pool.submit(on_a_board, kill_at_random, index, delay) for index, delay in enumerate(delays)
            ]
            records = [future.result() for future in futures]
        yield Crashes(home, devices, {record.label: record for record in records})


def check_recovered(record: KillRecord) -> None:
    assert not record.error, record.error
    assert record.verify_after_kill is not None and record.verify_after_kill[0] == 0, record.verify_after_kill
    if record.recovered is not None:
        assert record.recovered.returncode == 0, record.recovered.stdout + record.recovered.stderr
        assert "PASS" in record.recovered.stdout
    assert record.final_state == "passed"
    assert record.board_certificate_matches, "the board holds the certificate its passed unit was issued"


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_station_killed_at_a_commit_point_leaves_a_sound_log_and_a_unit_that_recovers(crashes, point):
    record = crashes.records[point]
    assert not record.error, record.error
    assert record.killed_status == -signal.SIGKILL, (
        f"the hook did not fire at {point}:\n{record.killed_output}"
    )
    if point == "unit_finished":
        assert record.state_after_kill == "passed" and not record.unfinished_after_kill
    else:
        # Interrupted: still 'running', and offered for resuming after a restart of the station.
        assert record.state_after_kill == "running" and record.unfinished_after_kill
        assert record.recovery == ("restart" if KILL_POINTS.index(point) % 2 == 1 else "resume")
    check_recovered(record)


def test_a_station_killed_at_random_moments_always_recovers(crashes):
    randoms = [record for label, record in crashes.records.items() if label.startswith("random-")]
    assert len(randoms) == RANDOM_KILLS
    for record in randoms:
        check_recovered(record)
        shown = [line.strip() for line in record.killed_output.splitlines() if line.strip()]
        print(
            f"{record.label}: killed after {shown[-1] if shown else 'no output'!r}; recovery: {record.recovery}"
        )
    # The seeded delays must actually interrupt units, not only miss them or kill them when done.
    assert sum(record.recovery in ("resume", "restart") for record in randoms) >= RANDOM_KILLS // 2


def test_a_certificate_recorded_but_never_pushed_stays_recorded_and_the_restarted_unit_gets_its_own(crashes):
    record = crashes.records["certificate_recorded"]
    check_recovered(record)
    # The first certificate never left the station; the unit that passed was issued a new one for a
    # new key.  Both are in the log, once each (assert_audit_sound checked the "once").
    assert record.certificates_of_serial == 2


def test_after_all_the_kills_the_audit_log_is_sound_and_nothing_is_left_unfinished(crashes):
    facts = assert_audit_sound(crashes.home.audit_db)
    for device in crashes.devices:
        assert_board_certificate_recorded(device, facts)
    with AuditLog(crashes.home.audit_db) as log:
        assert log.unfinished_units() == []
    states = [state for _, state, _ in facts.units.values()]
    assert states.count("passed") == len(KILL_POINTS) + RANDOM_KILLS
    assert set(states) <= {"passed", "aborted"}
    verify = station_cli(crashes.home, "audit", "verify")
    assert verify.returncode == 0 and "audit log OK" in verify.stdout
    assert audit_facts(crashes.home.audit_db).integrity == "ok"
