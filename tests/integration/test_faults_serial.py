"""The link fault matrix over the serial console: the same faults, the same promises as over SSH.

The board's console shell applies the command faults (a DEBUG trap in the simulated board's
console, see station/sim/console.sh): drop kills the console session (the login prompt comes
back), hang never answers until the station presses Ctrl-C, fail exits 2 naming the command,
garbage prints binary noise and claims success.  Over the console, files travel as base64 lines
(`sh -c … station-put …` to write, `sh -c … station-get …` — head, sha256sum and base64 — to read),
so those are the targets of fetch_csr and push.  See test_faults_ssh for the promises checked for every case.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from station.sim.farm import Farm, SimDevice
from tests.helpers.fault_matrix import (
    Case,
    Matrix,
    check_case,
    check_matrix_end,
    matrix_cases,
    run_matrix,
)
from tests.helpers.kit import wait_until_up

pytestmark = pytest.mark.integration

TARGETS = {
    "identify": "^command -v ",
    "guard": "^test -s ",
    "wipe": "^find ",
    "reboot": "^reboot$",
    "init_token": "--init-token",
    "init_pin": "--init-pin",
    "keygen": "--keypairgen",
    "csr": " openssl req ",
    "fetch_csr": "^sh -c .* station-get /tmp/",
    "push": "^sh -c .* station-put ",
    "tls_proof": " openssl s_client ",
}
SECONDARY = {"push": "^sha256sum /var/lib/key0.cert /var/lib/ca.cert$"}
CASES = matrix_cases(TARGETS, SECONDARY)
POWER_CYCLE_TIMEOUT_S = 30.0


def console_url(device: SimDevice) -> str:
    return f"serial://{device.console_path}"


def power_cycle_a_hung_console(case: Case, device: SimDevice, farm: Farm) -> None:
    """`reboot` that hangs is never interrupted (the station waits for the board to go down, then
    gives up): its console stays hung until the technician power-cycles the board."""
    if case.step != "reboot" or not case.fault.startswith("hang"):
        return
    subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(farm.home.ssh_key),
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
            "reboot",
        ],
        capture_output=True,
        timeout=POWER_CYCLE_TIMEOUT_S,
        check=False,
    )
    wait_until_up(farm, device.name)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    yield from run_matrix(
        tmp_path_factory, CASES, url_of=console_url, repair=power_cycle_a_hung_console, serial_console=True
    )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_console_fault_fails_the_unit_in_time_and_it_resumes_to_pass(matrix: Matrix, case: Case) -> None:
    check_case(matrix, case)


def test_after_the_whole_console_matrix_the_audit_log_is_sound_and_no_thread_is_left(matrix: Matrix) -> None:
    assert len(matrix.records) == len(CASES)
    check_matrix_end(matrix)


def test_a_console_refusing_to_reboot_is_reported_in_plain_words(matrix: Matrix) -> None:
    record = matrix.records["reboot-fail"]
    assert record.first is not None and record.first.failed_step == "reboot"
    assert "refused to reboot (`reboot` exited 2)" in record.first.message, record.first.message
