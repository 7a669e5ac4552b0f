"""The link fault matrix over SSH: every step that talks to the board, hit by every way a link fails.

For each step the board's SSH gate strikes the command the step depends on (a command fault,
``station sim fault NAME ACTION:PATTERN``) from the moment the step starts:

* drop     — the connection dies under the command;
* hang     — the command never finishes and never answers;
* fail     — the command exits non-zero;
* garbage  — the command prints binary noise and claims success (exit 0);

and the reboot step also meets a board that never comes back.  Whatever happens, the unit must end
failed (at that step, or at the first later step that depends on its work) within the deadlines of
the steps involved plus one second; no certificate may be on a board without its audit row; the
failed unit resumes to PASS once the fault is gone; and no thread is left running.

check_csr and sign do not use the link (they are covered by test_hostile_inputs and test_crash_*).
The cases run four at a time on four boards, so the whole matrix costs about a minute.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from station.sim.farm import CommandFault, parse_fault
from tests.helpers.fault_matrix import CASES, Case, Matrix, check_case, check_matrix_end, run_matrix
from tests.helpers.kit import (
    audit_facts,
    station_cli,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    yield from run_matrix(tmp_path_factory, CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_link_fault_fails_the_unit_in_time_and_it_resumes_to_pass(matrix: Matrix, case: Case) -> None:
    check_case(matrix, case)


def test_after_the_whole_matrix_the_audit_log_is_sound_and_no_thread_is_left(matrix: Matrix) -> None:
    assert len(matrix.records) == len(CASES)
    check_matrix_end(matrix)


def test_a_push_cut_after_the_write_leaves_a_recorded_certificate_on_the_board(matrix: Matrix) -> None:
    # The read-back failed after both files were written: the board holds a certificate, and the
    # audit log already had it before it left the station.
    record = matrix.records["push-readback-fail"]
    assert record.first is not None and record.first.failed_step == "push"
    assert record.board_fingerprint_after_failure is not None
    issued = audit_facts(matrix.home.audit_db).certificates
    assert issued[record.board_fingerprint_after_failure] == record.first.unit.id


# -- the faults themselves, from the command line and Python ----------------------------------------


def test_command_faults_are_written_action_colon_pattern() -> None:
    fault = parse_fault("hang:--keypairgen")
    assert isinstance(fault, CommandFault) and str(fault) == "hang:--keypairgen"
    assert str(parse_fault("drop:^sha256sum /var/lib/")) == "drop:^sha256sum /var/lib/"
    for bad, reason in (
        ("explode:x", "unknown fault 'explode:x'"),
        ("hang:", "regular expression"),
        ("fail:([", "not a valid extended regular expression"),
    ):
        with pytest.raises(Exception, match=reason.replace("(", r"\(").replace("[", r"\[")):
            parse_fault(bad)


def test_a_command_fault_armed_from_the_cli_strikes_only_matching_commands(start_farm, sim_home, ssh):
    (device,) = start_farm(1)
    armed = station_cli(sim_home, "sim", "fault", device.name, "fail:^uname")
    assert armed.returncode == 0 and "fail:^uname armed" in armed.stdout, armed.stderr
    status = station_cli(sim_home, "sim", "status").stdout.splitlines()[1].split()
    assert status[5] == "fail:^uname"
    struck = ssh(device, "uname -n", check=False)
    assert struck.returncode == 2 and struck.stderr == "sim: uname -n: Input/output error\n"
    assert ssh(device, "hostname").stdout.strip() == device.hostname  # other commands run as ever

    station_cli(sim_home, "sim", "fault", device.name, "garbage:^cat ")
    noise = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(sim_home.ssh_key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-p",
            str(device.port),
            f"root@{device.address}",
            "cat /etc/hostname",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert noise.returncode == 0 and len(noise.stdout) > 65536
    assert b"\x1b[2J" in noise.stdout and b"\xff\xfe" in noise.stdout

    assert station_cli(sim_home, "sim", "fault", device.name, "--clear").returncode == 0
    assert ssh(device, "uname -n").stdout.strip() == device.hostname
    refused = station_cli(sim_home, "sim", "fault", device.name, "melt:x")
    assert refused.returncode == 1 and "ACTION:PATTERN" not in refused.stdout
    assert "drop|hang|fail|garbage|stream:PATTERN" in refused.stderr


def test_a_hang_fault_from_python_leaves_the_board_usable_for_other_commands(start_farm, sim_farm, ssh):
    (device,) = start_farm(1)
    sim_farm.set_fault(device.name, "hang:^sleep 0$")
    assert sim_farm.status()[0].fault == "hang:^sleep 0$"
    started = time.monotonic()
    # The plain ssh client would wait forever on a hang: it gets a deadline of its own.
    with pytest.raises(subprocess.TimeoutExpired):
        ssh(device, "sleep 0", check=False, timeout=2)
    assert time.monotonic() - started >= 2
    assert ssh(device, "echo still here").stdout == "still here\n"
    sim_farm.set_fault(device.name, None)
    assert ssh(device, "sleep 0").returncode == 0
