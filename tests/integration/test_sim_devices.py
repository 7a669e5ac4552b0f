"""Several simulated boards: each its own hostname, token store, certificates and host key."""

from __future__ import annotations

import subprocess
import tomllib

import pytest

pytestmark = pytest.mark.integration

MODULE = "/usr/lib/libckteec.so.0"


def test_two_boards_have_independent_tokens_and_certificates(start_farm, ssh):
    first, second = start_farm(2)

    ssh(first, f"pkcs11-tool --module {MODULE} --init-token --label token0 --so-pin 00000000")
    ssh(first, "echo first-board > /var/lib/key0.cert && echo first-ca > /var/lib/ca.cert")

    assert ssh(first, "hostname").stdout.strip() == "sm2s-imx8plus-mbep5-01"
    assert ssh(second, "hostname").stdout.strip() == "sm2s-imx8plus-mbep5-02"
    assert "token0" in ssh(first, f"pkcs11-tool --module {MODULE} --list-slots").stdout
    slots = ssh(second, f"pkcs11-tool --module {MODULE} --list-slots").stdout
    assert "token0" not in slots and "uninitialized" in slots
    assert ssh(first, "cat /var/lib/key0.cert").stdout == "first-board\n"
    assert ssh(second, "ls /var/lib/tee; ls /var/lib/key0.cert /var/lib/ca.cert", check=False).stdout == ""


def test_fixtures_file_and_host_keys_match_what_ssh_sees(start_farm, ssh, sim_home, known_hosts):
    devices = start_farm(2)

    fixtures = tomllib.loads((sim_home.sim_dir / "fixtures.toml").read_text())["fixture"]
    assert [f["name"] for f in fixtures] == ["sim-01", "sim-02"]
    for device, fixture in zip(devices, fixtures, strict=True):
        assert fixture == {
            "name": device.name,
            "device": f"ssh://root@{device.address}:{device.port}",
            "hostname": device.hostname,
            "host_key": device.host_key_fingerprint,
        }
        assert device.ssh_url == fixture["device"]
        assert device.console_path is None
        ssh(device, "true")
        seen = subprocess.run(
            ["ssh-keygen", "-lf", str(known_hosts), "-F", f"[{device.address}]:{device.port}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        assert device.host_key_fingerprint in seen
    assert devices[0].host_key_fingerprint != devices[1].host_key_fingerprint
