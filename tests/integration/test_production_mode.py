"""A station in production mode on a real simulated board: the kill hook is ignored, guessable PINs are
refused before anything touches the board, and simulated fixtures are not offered."""

from __future__ import annotations

import pytest

from station.admin import StationSettings, resolve_fixtures
from station.audit import AuditLog
from station.config import load_config
from station.service.client import home_socket
from tests.helpers.kit import PASSPHRASE, certificate_on_board, profile_copy, station_cli
from tests.helpers.service import running_service

pytestmark = pytest.mark.integration

SERIAL = "202600000001801"


def test_production_mode_ignores_the_kill_hook_and_refuses_1111_class_pins(start_farm, sim_home):
    (device,) = start_farm(1)
    assert station_cli(sim_home, "ca", "init").returncode == 0
    profile_copy(
        sim_home,
        "weak",
        replace={'so_pin = "00000000"': 'so_pin = "11111111"', 'user_pin = "0000"': 'user_pin = "1111"'},
    )
    profile_copy(
        sim_home,
        "plant",
        replace={'so_pin = "00000000"': 'so_pin = "73918264"', 'user_pin = "0000"': 'user_pin = "582194"'},
    )
    # Work orders (required in production by default) are another issue's refusal: not asked for here.
    sim_home.config_file.write_text(
        '[station]\nname = "line-1"\nproduction = true\n\n[orders]\nrequired = false\n'
    )

    # In production mode the CLI starts no service: it says how to start the system one.
    alone = station_cli(
        sim_home, "provision", "--serial", SERIAL, "--device", device.ssh_url, "--profile", "plant"
    )
    assert alone.returncode == 1 and "systemctl start welma-station" in alone.stderr, alone.stderr
    # The service unlocks its CA from a credential file (never its environment in production mode); the
    # crash-safety hook in its environment is ignored.
    credential = sim_home.root.parent / "ca-passphrase"
    credential.write_text(PASSPHRASE + "\n")
    credential.chmod(0o600)
    with running_service(
        sim_home, home_socket(sim_home), credential=credential, env={"STATION_TEST_KILL_AT": "unit_started"}
    ):
        production_units(sim_home, device)


def production_units(sim_home, device):
    weak = station_cli(
        sim_home, "provision", "--serial", SERIAL, "--device", device.ssh_url, "--profile", "weak"
    )
    assert weak.returncode == 1 and "Traceback" not in weak.stderr
    assert "repeats one character (like 1111 or 0000)" in weak.stderr and "production mode" in weak.stderr
    assert "Identify board" not in weak.stdout

    # The crash-safety hook would SIGKILL a test station right after the unit starts; production ignores it.
    plant = station_cli(
        sim_home,
        "provision",
        "--serial",
        SERIAL,
        "--device",
        device.ssh_url,
        "--profile",
        "plant",
        env={"STATION_TEST_KILL_AT": "unit_started"},
    )
    assert plant.returncode == 0 and "PASS" in plant.stdout, plant.stdout + plant.stderr
    assert certificate_on_board(device) is not None
    with AuditLog(sim_home.audit_db) as audit:
        assert [unit.state for unit in audit.units()] == ["passed"]

    # No simulator fallback: the farm's fixtures are not offered to a production station.
    config = load_config(sim_home.config_file)
    assert (sim_home.sim_dir / "fixtures.toml").is_file()
    assert resolve_fixtures(sim_home, config, StationSettings()).fixtures == ()
