"""A `station provision` killed (SIGKILL, as by a power cut), then checked and taken to PASS: the pieces of the
crash-safety matrix (tests/integration/test_crash_safety.py) that the soak's random kills use too.

The station process kills itself right after a chosen audit write has committed (``STATION_TEST_KILL_AT``), or
is killed at a moment the caller chooses; :func:`after_the_kill` runs every check a kill must pass and takes the
unit to PASS (``--resume`` or ``--restart``); :func:`check_recovered` asserts what it recorded.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field

from station.audit import AuditLog
from station.cli.audit import verify_lines
from station.home import StationHome
from station.sim.farm import Farm, SimDevice
from tests.helpers.kit import (
    PASSPHRASE,
    assert_audit_sound,
    assert_board_certificate_recorded,
)
from tests.helpers.kit import station_cli as kit_station_cli

# The profile the kills run under (a copy of the shipped one with fast deadlines: tests.helpers.kit.profile_copy).
PROFILE = "crash"
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


def check_recovered(record: KillRecord) -> None:
    assert not record.error, record.error
    assert record.verify_after_kill is not None and record.verify_after_kill[0] == 0, record.verify_after_kill
    if record.recovered is not None:
        assert record.recovered.returncode == 0, record.recovered.stdout + record.recovered.stderr
        assert "PASS" in record.recovered.stdout
    assert record.final_state == "passed"
    assert record.board_certificate_matches, "the board holds the certificate its passed unit was issued"
