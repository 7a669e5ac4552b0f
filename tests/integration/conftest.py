"""Fixtures for tests that run against real simulated Welma devices (`station sim`).

``start_farm(count=1, **up_options)`` boots a farm in a fresh station home (``sim_home``) on a
free TCP port and always stops it at teardown.  ``ssh(device, command)`` runs a command with the
plain OpenSSH client, as a technician would, with a per-test known_hosts file and a deadline.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from station.home import StationHome
from station.sim.farm import Farm, SimDevice

SSH_TIMEOUT_S = 30.0
BACK_UP_TIMEOUT_S = 15.0


# The farm fixtures and free_port live in tests/helpers/farm.py (the GUI tests use them too).
from tests.helpers.farm import TEST_BOOT_DELAY_S, free_port, sim_farm, sim_home, start_farm  # noqa: E402, F401

SshRunner = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def ssh(sim_home: StationHome, tmp_path: Path) -> SshRunner:  # noqa: F811 (the fixture, imported above)
    """``ssh(device, command, *, check=True, strict=False, timeout=30)`` with the plain ssh client.

    Host keys are learned on first use (accept-new) into a known_hosts file of this test;
    ``strict=True`` insists on the key already learned (a changed host key fails).
    """
    known_hosts = tmp_path / "known_hosts"

    def run(
        device: SimDevice,
        command: str,
        *,
        check: bool = True,
        strict: bool = False,
        timeout: float = SSH_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(sim_home.ssh_key),
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            f"StrictHostKeyChecking={'yes' if strict else 'accept-new'}",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            "-p",
            str(device.port),
            f"root@{device.address}",
            command,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(
                f"ssh {device.name} {command!r} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    return run


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    """The known_hosts file the ``ssh`` fixture fills."""
    return tmp_path / "known_hosts"


@pytest.fixture
def wait_for_state(sim_farm: Farm) -> Callable[..., SimDevice]:  # noqa: F811 (the fixture, imported above)
    """``wait_for_state(name, state, timeout_s=15)``: poll ``Farm.status`` until ``name`` is in ``state``."""

    def wait(name: str, state: str, timeout_s: float = BACK_UP_TIMEOUT_S) -> SimDevice:
        deadline = time.monotonic() + timeout_s
        while True:
            device = next(d for d in sim_farm.status() if d.name == name)
            if device.state == state:
                return device
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is {device.state!r}, not {state!r}, after {timeout_s:g} s")
            time.sleep(0.05)

    return wait


# The fleet tests' real PostgreSQL (initdb + pg_ctl on a free port, as a non-root user).
from tests.helpers.postgres import fleet_db, pg_server  # noqa: E402, F401
