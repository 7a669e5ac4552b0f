"""`reboot` on a simulated board: the session drops, the board comes back as the same board."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

MODULE = "/usr/lib/libckteec.so.0"


def test_reboot_drops_the_session_and_keeps_token_and_host_key(start_farm, ssh, sim_farm, wait_for_state):
    (device,) = start_farm(1, boot_delay=0.5)
    ssh(device, f"pkcs11-tool --module {MODULE} --init-token --label token0 --so-pin 00000000")
    ssh(device, "echo issued > /var/lib/key0.cert && touch /tmp/key0.csr")

    reboot = ssh(device, "reboot", check=False)
    assert reboot.returncode == 255  # "Connection … closed by remote host"
    assert next(d for d in sim_farm.status() if d.name == device.name).state == "booting"
    back = wait_for_state(device.name, "up")
    assert back.host_key_fingerprint == device.host_key_fingerprint

    # strict: the host key learned before the reboot must still be the board's key.
    assert ssh(device, "ls -A /tmp", strict=True).stdout == ""
    assert "token0" in ssh(device, f"pkcs11-tool --module {MODULE} --list-slots", strict=True).stdout
    assert ssh(device, "cat /var/lib/key0.cert", strict=True).stdout == "issued\n"
    assert ssh(device, "hostname", strict=True).stdout.strip() == device.hostname


def test_reset_makes_the_board_factory_fresh(start_farm, ssh, sim_farm):
    (device,) = start_farm(1)
    ssh(device, f"pkcs11-tool --module {MODULE} --init-token --label token0 --so-pin 00000000")
    ssh(device, "echo issued > /var/lib/key0.cert && echo ca > /var/lib/ca.cert")

    sim_farm.reset(device.name)  # returns once the board is back

    assert (
        ssh(device, "find /var/lib/tee -mindepth 1; ls /var/lib/*.cert 2>/dev/null", check=False).stdout == ""
    )
    assert "token0" not in ssh(device, f"pkcs11-tool --module {MODULE} --list-slots").stdout
    assert ssh(device, "hostname").stdout.strip() == device.hostname
