"""The CA in hardware, end to end on simulated boards: the issuing CA's key in a SoftHSM2 token, an offline root.

Every station here has its own token (a SoftHSM2 token directory private to its home) and unlocks it with the
PIN in ``[ca] pin_file``; the `station` processes never see a PIN or passphrase in their environment.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from station.audit import AuditLog
from station.home import StationHome
from tests.helpers.farm import free_port
from tests.helpers.pki_tokens import (
    PIN,
    SOFTHSM_MODULE,
    offline_root,
    pkcs11_tool,
    private_softhsm,
    station,
    token_station,
)
from tests.helpers.processes import wait_for_s_server

pytestmark = pytest.mark.integration

SERIAL = "202600000000001"

# Signs a TLS server certificate for `openssl s_server` with the station CA in its token (the PIN from pin_file).
_SERVER_CERT = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from station.cli.ca import load_station_ca
from station.home import StationHome
from station.pki import _generate_key, _system_certificate
import datetime
home, out = StationHome(Path(sys.argv[1])), Path(sys.argv[2])
ca = load_station_ca(home)
key = _generate_key("ec-p256")
cert = _system_certificate(ca._ca_key, ca.certificate, key, common_name="system", validity_days=1,
                           now=datetime.datetime.now(datetime.UTC))
(out / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
(out / "server.cert").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
ca.close()
"""


def _openssl_verify(tmp: Path, chain: Path, pem: str) -> subprocess.CompletedProcess[str]:
    leaf = tmp / f"leaf-{time.monotonic_ns()}.pem"
    leaf.write_text(pem)
    certs = x509.load_pem_x509_certificates(chain.read_bytes())
    root, issuing = tmp / "root-only.pem", tmp / "issuing-only.pem"
    root.write_bytes(chain.read_bytes()[chain.read_bytes().index(b"-----BEGIN", 10) :])
    issuing.write_bytes(chain.read_bytes()[: chain.read_bytes().index(b"-----BEGIN", 10)])
    assert len(certs) == 2
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            str(root),
            "-untrusted",
            str(issuing),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_unit_is_signed_by_the_issuing_ca_in_a_token_and_passes_the_tutorials_step_5(
    start_farm, sim_home: StationHome, ssh, tmp_path: Path
) -> None:
    root = offline_root(tmp_path / "offline")
    chain = token_station(sim_home.root, "LINE-3", root=root, name="LINE-3", max_certificates=100)
    (device,) = start_farm(count=1)

    run = station(
        sim_home.root, "provision", "--serial", SERIAL, "--device", device.ssh_url, "--operator", "alice"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASS" in run.stdout
    assert PIN not in run.stdout + run.stderr
    with AuditLog(sim_home.audit_db) as audit:
        unit = audit.find_unit(SERIAL)
        assert unit is not None
        (sign,) = [step for step in audit.steps(unit.id) if step.step == "sign"]
        assert "station CA quota: 1 of 100 certificates issued, 99 remaining" in sign.excerpt

    # The CA key never leaves the token: pkcs11-tool sees it sensitive and never extractable.
    conf = sim_home.root / "softhsm2.conf"
    listing = pkcs11_tool(conf, "LINE-3", "--list-objects", "--type", "privkey")
    assert "label:      station-ca" in listing.stdout
    assert "Access:     sensitive, always sensitive, never extractable, local" in listing.stdout, (
        listing.stdout
    )
    assert listing.stdout.count("Private Key Object") == 1  # the demo TLS key is in memory, not in the token

    # The board's certificate verifies as a TLS client certificate against root + issuing CA, and the board
    # received the whole chain as its ca.cert.
    on_board = ssh(device, "cat /var/lib/key0.cert").stdout
    verdict = _openssl_verify(tmp_path, chain, on_board)
    assert verdict.returncode == 0 and ": OK" in verdict.stdout, verdict.stdout + verdict.stderr
    assert ssh(device, "cat /var/lib/ca.cert").stdout.encode() == chain.read_bytes()
    cert = x509.load_pem_x509_certificate(on_board.encode())
    assert cert.subject.rfc4514_string() == f"CN=serial:{SERIAL}"
    assert cert.not_valid_after_utc <= x509.load_pem_x509_certificate(chain.read_bytes()).not_valid_after_utc

    # The tutorial's step 5, unchanged on the board, against the real openssl s_server with a certificate from
    # the token CA.
    made = subprocess.run(
        [sys.executable, "-c", _SERVER_CERT, str(sim_home.root), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert made.returncode == 0, made.stderr
    port = free_port(1)
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-key",
            str(tmp_path / "server.key"),
            "-cert",
            str(tmp_path / "server.cert"),
            "-cert_chain",
            str(chain),
            "-verifyCAfile",
            str(chain),
            "-Verify",
            "1",
            "-naccept",
            "1",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        started = wait_for_s_server(server)
        client = ssh(
            device,
            f"PKCS11_MODULE_PATH=/usr/lib/libckteec.so.0 openssl s_client -connect 127.0.0.1:{port} -engine pkcs11 "
            "-keyform engine -key 'pkcs11:object=key0;pin-value=0000' -CAfile /var/lib/ca.cert "
            "-cert /var/lib/key0.cert -verify_return_error </dev/null",
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

    # Every unit ending is signed with the token: the log verifies with its signatures.
    verified = station(sim_home.root, "audit", "verify")
    assert verified.returncode == 0 and "signed checkpoint(s) verified" in verified.stdout, verified.stdout


def test_quota_reached_refuses_before_the_board_is_touched_and_survives_a_restart(
    start_farm, sim_home: StationHome, ssh, tmp_path: Path
) -> None:
    root = offline_root(tmp_path / "offline")
    token_station(sim_home.root, "LINE-4", root=root, name="LINE-4", max_certificates=1)
    first, second = start_farm(count=2)
    passed = station(
        sim_home.root, "provision", "--serial", SERIAL, "--device", first.ssh_url, "--operator", "bo"
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr
    with AuditLog(sim_home.audit_db) as audit:
        unit = audit.find_unit(SERIAL)
        assert unit is not None
        (sign,) = [step for step in audit.steps(unit.id) if step.step == "sign"]
        assert "1 of 1 certificates issued, 0 remaining — WARNING: 90 %" in sign.excerpt

    ssh(second, "touch /var/lib/tee/untouched")
    # A new station process: the count comes from the audit log, not from memory.
    refused = station(
        sim_home.root,
        "provision",
        "--serial",
        "202600000000002",
        "--device",
        second.ssh_url,
        "--operator",
        "bo",
    )
    assert refused.returncode != 0
    assert "issued 1 of the 1 certificates the offline root allowed" in refused.stdout + refused.stderr
    assert "the board was not touched" in refused.stdout + refused.stderr
    assert ssh(second, "ls /var/lib/tee").stdout.split() == ["untouched"]
    assert ssh(second, "test -e /var/lib/key0.cert", check=False).returncode == 1
    shown = station(sim_home.root, "ca", "show")
    assert "1 of 1 certificates issued" in shown.stdout and "0 remaining" in shown.stdout


def test_a_unit_failing_at_push_after_signing_has_its_certificate_in_the_next_crl(
    start_farm, sim_home: StationHome, tmp_path: Path
) -> None:
    root = offline_root(tmp_path / "offline")
    chain = token_station(sim_home.root, "LINE-5", root=root, name="LINE-5")
    (device,) = start_farm(count=1)
    armed = station(sim_home.root, "sim", "fault", device.name, "fail:^sha256sum /var/lib/")
    assert armed.returncode == 0, armed.stderr
    failed = station(
        sim_home.root, "provision", "--serial", SERIAL, "--device", device.ssh_url, "--operator", "cy"
    )
    assert failed.returncode != 0 and "sha256sum" in failed.stdout + failed.stderr

    with AuditLog(sim_home.audit_db) as audit:
        unit = audit.find_unit(SERIAL)
        assert unit is not None and unit.state == "failed" and unit.failed_step == "push"
        record = audit.certificate_for_unit(unit.id)
        assert record is not None and record.revocation_reason == "cessationOfOperation"

    crl_path = tmp_path / "line-5.crl"
    made = station(sim_home.root, "ca", "crl", "--out", str(crl_path))
    assert made.returncode == 0, made.stdout + made.stderr
    checked = subprocess.run(
        ["openssl", "crl", "-in", str(crl_path), "-noout", "-text", "-verify", "-CAfile", str(chain)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "verify OK" in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    listed = {int(found, 16) for found in re.findall(r"Serial Number: ([0-9A-F]+)", checked.stdout)}
    assert record.serial_number in listed
    assert "Cessation Of Operation" in checked.stdout

    # Resuming the set-aside board makes a new key and certificate; the revoked one is never pushed again.
    cleared = station(sim_home.root, "sim", "fault", device.name, "--clear")
    assert cleared.returncode == 0, cleared.stderr
    resumed = station(
        sim_home.root,
        "provision",
        "--serial",
        SERIAL,
        "--device",
        device.ssh_url,
        "--resume",
        "--operator",
        "cy",
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with AuditLog(sim_home.audit_db) as audit:
        unit = audit.find_unit(SERIAL)
        assert unit is not None and unit.state == "passed"
        newest = audit.certificate_for_unit(unit.id)
        assert newest is not None and newest.serial_hex != record.serial_hex and newest.revoked_at is None


def test_a_full_token_is_reported_and_nothing_is_left_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    conf = private_softhsm(home)
    tokens = home / "softhsm-tokens"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tokens)], check=True, timeout=30)
    try:
        from tests.helpers.pki_tokens import init_token, secret_file

        init_token(conf, "FULL")
        # Fill the token's storage: no room for another object.
        try:
            with (tokens / "filler").open("wb") as out:
                while True:
                    out.write(b"\0" * 4096)
                    out.flush()
        except OSError:
            pass
        pin_file = secret_file(home / "token.pin", PIN)
        (home / "station.toml").write_text(f'[ca]\npin_file = "{pin_file}"\n')
        run = station(home, "ca", "init", "--pkcs11-module", str(SOFTHSM_MODULE), "--token-label", "FULL")
        assert run.returncode != 0
        assert "Traceback" not in run.stderr
        assert "Token 'FULL' is full" in run.stderr, run.stderr
        assert "Nothing was created" in run.stderr
        assert not (home / "ca" / "station-ca.csr").exists() and not (home / "ca" / "token.toml").exists()
    finally:
        subprocess.run(["umount", str(tokens)], check=False, timeout=30)
