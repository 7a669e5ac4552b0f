"""The enrollment end to end over SSH, against real simulated Welma devices.

A board is scanned, provisioned, and must come out with a token key that never leaves it, an
end-entity certificate from our CA, and a mutual-TLS handshake that proves it — the tutorial's
own step 5 included.  Bad input and rogue devices are refused and nothing is pushed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from station.audit import AuditLog
from station.config import StationConfig
from station.flow import Provisioner
from station.pki import CertificateAuthority
from station.profiles import load_profile, load_profile_file
from tests.helpers.boards import board_run
from tests.helpers.processes import wait_for_s_server

pytestmark = pytest.mark.integration

PASSPHRASE = "line-1 integration passphrase"
SERIAL = "202600000000001"


@pytest.fixture
def ca(sim_home):
    return CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())


def station(home, *args, timeout=180):
    """Run the real `station` command line against a station home."""
    env = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE)
    return subprocess.run(
        [sys.executable, "-m", "station", "--home", str(home.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def provisioner(home, ca, events=None):
    return Provisioner(
        home=home,
        config=StationConfig(name="test-station"),
        ca=ca,
        audit=AuditLog(home.audit_db),
        observer=(events.append if events is not None else None),
    )


def test_a_board_is_enrolled_and_proves_it_with_the_tutorials_own_tls_server(start_farm, sim_home, ca):
    (device,) = start_farm(count=1)
    run = station(
        sim_home, "provision", "--serial", SERIAL, "--device", device.ssh_url, "--operator", "alice"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for title in (
        "Identify board",
        "Wipe secure storage",
        "Reboot",
        "Generate key",
        "Check CSR",
        "Push certificates",
        "Mutual TLS proof",
    ):
        assert title in run.stdout
    assert "PASS" in run.stdout
    assert PASSPHRASE not in run.stdout + run.stderr

    # The certificate on the board is the one recorded, an end-entity client certificate.
    audit = AuditLog(sim_home.audit_db)
    unit = audit.find_unit(SERIAL)
    assert unit is not None and unit.state == "passed" and unit.operator == "alice"
    record = audit.certificate_for_unit(unit.id)
    on_board = board_run(sim_home, device, "cat", "/var/lib/key0.cert").stdout
    assert on_board.strip() == record.pem.strip()
    cert = x509.load_pem_x509_certificate(on_board.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.subject.rfc4514_string() == f"CN=serial:{SERIAL}"
    cert_file = sim_home.root / "key0.cert"
    cert_file.write_text(on_board)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.certificate_path), "-purpose", "sslclient", str(cert_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr

    # The tutorial's step 5, verbatim on the board, against openssl s_server with our system certificate.
    port = device.port + 1000
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-key",
            str(ca.system_key_path),
            "-cert",
            str(ca.system_certificate_path),
            "-pass",
            "env:STATION_CA_PASSPHRASE",
            "-verifyCAfile",
            str(ca.certificate_path),
            "-Verify",
            "1",
            "-naccept",
            "1",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE),
    )
    try:
        started = wait_for_s_server(server)
        client = board_run(
            sim_home,
            device,
            "PKCS11_MODULE_PATH=/usr/lib/libckteec.so.0",
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-key",
            "'pkcs11:object=key0;pin-value=0000'",
            "-CAfile",
            "/var/lib/ca.cert",
            "-cert",
            "/var/lib/key0.cert",
            "-verify_return_error",
            "</dev/null",
            check=False,
        )
        assert client.returncode == 0, client.stdout + client.stderr
        assert "Verify return code: 0 (ok)" in client.stdout
        rest, _ = server.communicate(timeout=20)
        server_out = started + rest
    finally:
        server.kill()
        server.wait(timeout=10)
    assert f"subject=CN = serial:{SERIAL}" in server_out or f"subject=CN=serial:{SERIAL}" in server_out

    # The token key is sensitive and never extractable: the board keeps its secret.
    objects = board_run(
        sim_home,
        device,
        "pkcs11-tool",
        "--module",
        "/usr/lib/libckteec.so.0",
        "--list-objects",
        "--login",
        "--pin",
        "0000",
    ).stdout
    assert "never extractable" in objects

    # A second provision of a serial that passed is refused without --reprovision, then allowed with a reason.
    again = station(sim_home, "provision", "--serial", SERIAL, "--device", device.ssh_url)
    assert again.returncode != 0 and "reprovision" in again.stderr
    redo = station(
        sim_home,
        "provision",
        "--serial",
        SERIAL,
        "--device",
        device.ssh_url,
        "--reprovision",
        "--reason",
        "customer return",
    )
    assert redo.returncode == 0, redo.stdout + redo.stderr
    units = station(sim_home, "units")
    assert units.returncode == 0 and SERIAL in units.stdout


@pytest.mark.parametrize(
    "serial", ["1;reboot", "$(id)", "`reboot`", "20260000000000\n1", "9" * 200, "2026000000000é1"]
)
def test_hostile_serials_are_refused_before_anything_reaches_the_board(start_farm, sim_home, ca, serial):
    (device,) = start_farm(count=1)
    board_run(sim_home, device, "touch", "/var/lib/tee/untouched")
    run = station(sim_home, "provision", "--serial", serial, "--device", device.ssh_url)
    assert run.returncode != 0
    assert "serial" in run.stderr and "scan" in run.stderr
    assert board_run(sim_home, device, "ls", "/var/lib/tee").stdout.split() == ["untouched"]
    assert AuditLog(sim_home.audit_db).units() == []


def rogue_profile(home, replacement_csr_command: str) -> Path:
    """A profile whose board hands over a CSR the station must refuse."""
    text = load_profile("welma-optee").source.read_text()
    start = text.index("csr = [")
    end = text.index("\n", start)
    home.profiles_dir.mkdir(parents=True, exist_ok=True)
    path = home.profiles_dir / "rogue.toml"
    path.write_text(text[:start] + replacement_csr_command + text[end:])
    return path


@pytest.mark.parametrize(
    ("csr_command", "reason"),
    [
        # The board signs with its token key, but for another serial: a swapped label or an impostor.
        (
            'csr = ["openssl", "req", "-new", "-batch", "-engine", "pkcs11", "-keyform", "engine", "-key", '
            '"pkcs11:object={key_label};pin-value={user_pin}", "-subj", "/CN=serial:999999999999999/", '
            '"-out", "{csr_path}"]',
            "subject",
        ),
        # A key made in software, outside the token: the CSR is valid but not for the token's key.
        (
            'csr = ["openssl", "req", "-new", "-batch", "-newkey", "rsa:2048", "-nodes", "-keyout", '
            '"/tmp/rogue.key", "-subj", "{subject}", "-out", "{csr_path}"]',
            "token",
        ),
    ],
)
def test_a_rogue_csr_is_refused_and_nothing_is_pushed(start_farm, sim_home, ca, csr_command, reason):
    (device,) = start_farm(count=1)
    profile = load_profile_file(rogue_profile(sim_home, csr_command))
    result = provisioner(sim_home, ca).provision(
        serial=SERIAL, device=device.ssh_url, profile=profile, operator="bob"
    )
    assert not result.passed and result.failed_step == "check_csr"
    assert reason in result.message
    assert board_run(sim_home, device, "ls", "/var/lib/key0.cert", check=False).returncode != 0
    assert AuditLog(sim_home.audit_db).certificate_for_unit(result.unit.id) is None


def test_connection_dropped_mid_keygen_leaves_a_resumable_unit(start_farm, sim_home, ca):
    (device,) = start_farm(count=1, faults={"sim-01": "drop-ssh"})
    profile = load_profile("welma-optee")
    first = provisioner(sim_home, ca).provision(
        serial=SERIAL, device=device.ssh_url, profile=profile, operator="carol"
    )
    assert not first.passed and first.failed_step == "keygen"
    assert "dropped" in first.message and "Retry" in first.message
    assert first.unit.state == "failed"
    events = []
    resumed = provisioner(sim_home, ca, events).provision(
        serial=SERIAL, device=device.ssh_url, profile=profile, operator="carol", resume=True
    )
    assert resumed.passed, resumed.message
    ran = [event.step for event in events if event.kind == "step_finished"]
    assert "wipe" not in ran and "reboot" not in ran and ran[:2] == ["identify", "guard"]
    assert resumed.unit.id == first.unit.id and resumed.unit.attempt == 2


# Long enough that output held back until the end would show as no gap; 20 s proved no more, and cost CI 14 s.
SLOW_KEYGEN_S = 6


def test_a_slow_keygen_completes_with_live_progress(start_farm, sim_home, ca):
    (device,) = start_farm(count=1, keygen_delay=SLOW_KEYGEN_S)
    env = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "station",
            "--home",
            str(sim_home.root),
            "provision",
            "--serial",
            SERIAL,
            "--device",
            device.ssh_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    seen: list[tuple[float, str]] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append((time.monotonic(), line))
        assert process.wait(timeout=240) == 0, "".join(line for _, line in seen)
    finally:
        process.kill()
    started = next(at for at, line in seen if "Generate key" in line)
    finished = next(at for at, line in seen if line.startswith("PASS"))
    assert finished - started >= SLOW_KEYGEN_S, "key generation progress must be shown while the board works"
