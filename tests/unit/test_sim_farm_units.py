"""Pieces of the farm that need no namespaces: fingerprints, fault names, preflight messages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from station.errors import StationError
from station.sim import preflight
from station.sim.farm import Fault, host_key_fingerprint, parse_fault
from station.sim.preflight import Requirement


def test_fingerprint_matches_ssh_keygen(tmp_path):
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    key_file = tmp_path / "key.pub"
    key_file.write_text(line + " root@sim\n")
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(key_file)], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert listed.split()[1] == host_key_fingerprint(line)


def test_faults_are_named_as_on_the_command_line():
    assert [fault.value for fault in Fault] == ["no-boot", "drop-ssh", "no-module"]
    assert parse_fault("drop-ssh") is Fault.DROP_SSH
    with pytest.raises(
        StationError, match="unknown fault 'melt': choose one of no-boot, drop-ssh, no-module"
    ):
        parse_fault("melt")


def test_not_root_says_how_to_run_it():
    assert preflight.check_root(euid=0) is None
    message = preflight.check_root(euid=1000)
    assert message is not None and "needs root" in message and "sudo station sim up" in message


def test_missing_packages_are_named_with_the_apt_command(monkeypatch):
    fake = [
        Requirement("opensc", "/usr/bin/pkcs11-tool", False),
        Requirement("softhsm2", "libsofthsm2.so", False),
        Requirement("softhsm2", "/etc/softhsm/softhsm2.conf", False),
        Requirement("openssh-server", "/usr/sbin/sshd", True),
    ]
    monkeypatch.setattr(preflight, "requirements", lambda serial_console: fake)
    message = preflight.check_packages(serial_console=False)
    assert message is not None
    assert message.startswith("missing system packages: opensc, softhsm2")
    assert message.endswith("apt-get install opensc softhsm2")


def test_socat_is_required_only_for_the_serial_console():
    assert "socat" in {req.package for req in preflight.requirements(serial_console=True)}
    assert "socat" not in {req.package for req in preflight.requirements(serial_console=False)}


def test_home_paths_that_overlay_mounts_cannot_carry():
    assert preflight.check_home_path(Path("/srv/station/sim")) is None
    assert "','" in (preflight.check_home_path(Path("/srv/a,b/sim")) or "")
    assert "/run" in (preflight.check_home_path(Path("/run/station/sim")) or "")
