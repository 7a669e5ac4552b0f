"""The station service's line-PC files: the systemd unit and `install.sh --service`, read as systemd and sh read
them, and checked against the names the code uses (account, groups, socket)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from station.roles import SERVICE_ACCOUNT, Role
from station.service.client import SYSTEM_SOCKET

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "welma-station.service"
INSTALL = ROOT / "packaging" / "install.sh"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_runs_the_service_as_its_account_on_the_socket_clients_look_for() -> None:
    unit = unit_settings()
    assert unit["User"] == [SERVICE_ACCOUNT] and unit["Group"] == [SERVICE_ACCOUNT]
    (command,) = unit["ExecStart"]
    assert f"serve --socket {SYSTEM_SOCKET}" in command and "--home /var/lib/welma-station" in command
    assert unit["RuntimeDirectory"] == [SYSTEM_SOCKET.parent.name] and unit["RuntimeDirectoryMode"] == [
        "0755"
    ]
    assert unit["StateDirectory"] == ["welma-station"] and unit["StateDirectoryMode"] == ["0700"]
    # Hardening: no core dumps, no privilege gain, the system read-only but the home, no secret in the unit.
    for key, value in {
        "LimitCORE": "0",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "UMask": "0077",
        "CapabilityBoundingSet": "",
        "PrivateTmp": "yes",
    }.items():
        assert unit[key] == [value], key
    assert unit["ReadWritePaths"] == ["/var/lib/welma-station"]
    assert not [
        line
        for line in UNIT.read_text().splitlines()
        if line.startswith("Environment=") and ("PASSPHRASE" in line or "PIN" in line)
    ]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # Checked with the real program in place of the bundle's (which a test machine does not have).
    unit = tmp_path / "welma-station.service"
    unit.write_text(UNIT.read_text().replace("/opt/welma-station/station ", "/bin/true "))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr


def test_install_sh_service_stages_the_unit_and_names_the_accounts_it_makes(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "_internal").mkdir(parents=True)
    for name in ("station", "station-gui"):
        (bundle / name).write_text("#!/bin/sh\n")
        (bundle / name).chmod(0o755)
    share = bundle / "share"
    (share / "icons" / "hicolor").mkdir(parents=True)
    (share / "welma-station.desktop").write_text("[Desktop Entry]\nExec=station-gui\nTryExec=station-gui\n")
    (share / "welma-station.service").write_text(UNIT.read_text())
    (bundle / "install.sh").write_text(INSTALL.read_text())
    (bundle / "install.sh").chmod(0o755)
    staged = tmp_path / "staged"
    installed = subprocess.run(
        [str(bundle / "install.sh"), "--service", "--prefix", "/opt/line3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "DESTDIR": str(staged)},
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    unit = staged / "etc" / "systemd" / "system" / "welma-station.service"
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    assert "ExecStart=/opt/line3/station --home /var/lib/welma-station serve" in unit.read_text()
    for role in Role:
        assert role.value in installed.stdout and 'groupadd --system "$group"' in INSTALL.read_text()
    assert SERVICE_ACCOUNT in installed.stdout and "0700" in installed.stdout
    # A staged install makes no account and no home: those are made on the line PC itself.
    assert not (staged / "var").exists() and "DESTDIR set" in installed.stdout
