"""Faults a simulated board can be given: no-boot, drop-ssh, no-module."""

from __future__ import annotations

import socket
import time

import pytest

from tests.helpers.farm import TEST_BOOT_DELAY_S

pytestmark = pytest.mark.integration

MODULE = "/usr/lib/libckteec.so.0"
INIT_TOKEN = f"pkcs11-tool --module {MODULE} --init-token --label token0 --so-pin 00000000"
INIT_PIN = f"pkcs11-tool --module {MODULE} --init-pin --label token0 --login --so-pin 00000000 --pin 0000"
KEYGEN = f"pkcs11-tool --module {MODULE} --keypairgen --label key0 --key-type rsa:2048 --login --pin 0000"
LIST_OBJECTS = f"pkcs11-tool --module {MODULE} --list-objects --login --pin 0000"
# A board that boots is up again well within five boot delays: staying down that long is "never comes back".
LONGER_THAN_A_BOOT_S = 5 * TEST_BOOT_DELAY_S


def refuses_connections(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((address, port)) != 0


def test_no_boot_board_never_comes_back_after_reboot(start_farm, ssh, sim_farm, wait_for_state):
    first, second = start_farm(2, faults={"sim-02": "no-boot"})
    assert second.fault == "no-boot"
    assert second.state == "up"  # armed at power-on, it strikes at the next reboot

    assert ssh(second, "reboot", check=False).returncode == 255
    assert wait_for_state("sim-02", "down").fault == "no-boot"
    time.sleep(LONGER_THAN_A_BOOT_S)
    assert wait_for_state("sim-02", "down", timeout_s=0).fault == "no-boot"
    assert refuses_connections(second.address, second.port)
    assert ssh(first, "hostname").stdout.strip() == first.hostname

    sim_farm.set_fault("sim-02", None)  # the board is repaired: it boots again
    wait_for_state("sim-02", "up")
    assert ssh(second, "hostname").stdout.strip() == second.hostname


def test_drop_ssh_cuts_the_next_key_generation_once(start_farm, ssh, sim_farm):
    (device,) = start_farm(1)
    ssh(device, INIT_TOKEN)
    ssh(device, INIT_PIN)
    sim_farm.set_fault(device.name, "drop-ssh")
    assert sim_farm.status()[0].fault == "drop-ssh"

    dropped = ssh(device, KEYGEN, check=False)
    assert dropped.returncode == 255, dropped
    assert "Key pair generated" not in dropped.stdout
    assert "key0" not in ssh(device, LIST_OBJECTS).stdout  # the key generation did not complete
    assert sim_farm.status()[0].fault is None  # it fires once

    assert "Key pair generated" in ssh(device, KEYGEN).stdout
    assert "key0" in ssh(device, LIST_OBJECTS).stdout


def test_no_module_makes_the_pkcs11_module_absent_until_cleared(start_farm, ssh, sim_farm):
    (device,) = start_farm(1)
    sim_farm.set_fault(device.name, "no-module")

    missing = ssh(
        device, f"test -e {MODULE} || echo absent; pkcs11-tool --module {MODULE} --list-slots", check=False
    )
    assert missing.stdout.startswith("absent")
    assert missing.returncode != 0
    assert "Failed to load pkcs11 module" in missing.stderr

    sim_farm.set_fault(device.name, None)
    assert "Available slots" in ssh(device, f"pkcs11-tool --module {MODULE} --list-slots").stdout


def test_faults_are_files_in_the_board_state_dir(start_farm, sim_farm):
    (device,) = start_farm(1)
    sim_farm.set_fault(device.name, "drop-ssh")
    assert [p.name for p in (device.state_dir / "board" / "faults").iterdir()] == ["drop-ssh"]
    sim_farm.set_fault(device.name, "no-boot")  # one fault at a time: it replaces the other
    assert [p.name for p in (device.state_dir / "board" / "faults").iterdir()] == ["no-boot"]
    with pytest.raises(Exception, match="unknown fault 'melt'"):
        sim_farm.set_fault(device.name, "melt")
