"""The station's CA: creating and opening it, certifying devices as end entities, CRLs, TLS.

Everything here uses real keys, and the real ``openssl`` binary as the outside judge of what the
station produces (the same tool the Welma tutorial and the devices use).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from station.cli import ca as ca_cli
from station.errors import StationError
from station.pki import (
    CLOCK_SKEW_ALLOWANCE,
    CertificateAuthority,
    CsrRejected,
    RevokedEntry,
    fingerprint_sha256,
    spki_sha256,
)

PASSPHRASE = b"correct horse battery staple"
SERIAL = "202600000000001"
DEVICE_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"serial:{SERIAL}")])
OPENSSL_TIMEOUT_S = 30
TLS_TIMEOUT_S = 10

DeviceKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def openssl(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real openssl binary; never waits forever."""
    return subprocess.run(
        ["openssl", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
        cwd=cwd,
    )


def openssl_pkey(path: Path, *, passphrase: bytes) -> subprocess.CompletedProcess[str]:
    """Open an encrypted key with openssl; the passphrase goes through the environment, not argv."""
    return subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-passin", "env:CA_PASS", "-noout"],
        env={**os.environ, "CA_PASS": passphrase.decode()},
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
    )


def device_csr(key: DeviceKey, subject: x509.Name = DEVICE_SUBJECT) -> x509.CertificateSigningRequest:
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


ExtensionT = TypeVar("ExtensionT", bound=x509.ExtensionType)


def extension(cert: x509.Certificate, kind: type[ExtensionT]) -> x509.Extension[ExtensionT]:
    return cert.extensions.get_extension_for_class(kind)


@pytest.fixture(scope="module")
def ec_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("ec") / "ca", passphrase=PASSPHRASE)


@pytest.fixture(scope="module")
def rsa_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(
        tmp_path_factory.mktemp("rsa") / "ca", passphrase=PASSPHRASE, key_type="rsa-2048"
    )


@pytest.fixture(params=["ec-p256", "rsa-2048"])
def any_ca(request: pytest.FixtureRequest) -> CertificateAuthority:
    fixture = {"ec-p256": "ec_ca", "rsa-2048": "rsa_ca"}[request.param]
    ca: CertificateAuthority = request.getfixturevalue(fixture)
    return ca


# --- init / load --------------------------------------------------------------------------------


def test_init_creates_a_pathlen0_ca_and_a_tls_server_certificate(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE, common_name="Line 3 CA")

    cert = ca.certificate
    assert cert.subject.rfc4514_string() == "CN=Line 3 CA"
    assert cert.issuer == cert.subject
    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign and not usage.value.digital_signature
    assert extension(cert, x509.SubjectKeyIdentifier).value.digest == (
        x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    )
    assert ca.key_type == "ec-p256"

    system = ca.system_certificate
    assert system.subject.rfc4514_string() == "CN=system"
    assert extension(system, x509.BasicConstraints).value.ca is False
    assert extension(system, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    san = extension(system, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    verdict = openssl(
        "verify", "-CAfile", ca.certificate_path, "-purpose", "sslserver", ca.system_certificate_path
    )
    assert verdict.returncode == 0, verdict.stderr


def test_init_stores_keys_encrypted_and_private(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE)

    assert (ca.directory.stat().st_mode & 0o777) == 0o700
    for path in (ca.key_path, ca.system_key_path):
        assert (path.stat().st_mode & 0o777) == 0o600
        pem = path.read_bytes()
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError):  # cannot be read without the passphrase
            serialization.load_pem_private_key(pem, password=None)
        # ...and openssl opens it with the passphrase (only), as the tutorial's tools would.
        assert openssl_pkey(path, passphrase=b"not the passphrase").returncode != 0
        opened = openssl_pkey(path, passphrase=PASSPHRASE)
        assert opened.returncode == 0, opened.stderr
    assert sorted(p.name for p in ca.directory.iterdir()) == [
        "ca.cert",
        "ca.key",
        "system.cert",
        "system.key",
    ]


def test_load_opens_the_same_ca(tmp_path: Path) -> None:
    created = CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE, key_type="rsa-2048")

    loaded = CertificateAuthority.load(tmp_path / "ca", passphrase=PASSPHRASE)

    assert fingerprint_sha256(loaded.certificate) == fingerprint_sha256(created.certificate)
    assert loaded.system_certificate == created.system_certificate
    assert loaded.certificate_pem == created.certificate_path.read_bytes()
    assert loaded.key_type == "rsa-2048"
    # A CA that was loaded can sign: its decrypted key is the certificate's key.
    issued = loaded.issue_device_certificate(
        device_csr(ec.generate_private_key(ec.SECP256R1())), validity_days=30
    )
    issued.verify_directly_issued_by(created.certificate)


def test_init_refuses_to_overwrite_an_existing_ca(tmp_path: Path) -> None:
    first = CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE)
    before = first.key_path.read_bytes()

    with pytest.raises(StationError, match="already exists.*refusing to overwrite"):
        CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE)

    assert first.key_path.read_bytes() == before


@pytest.mark.parametrize("name", ["ca.key", "system.key"])
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_load_refuses_a_key_file_others_can_reach(tmp_path: Path, name: str, mode: int) -> None:
    CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE)
    key_file = tmp_path / "ca" / name
    key_file.chmod(mode)

    with pytest.raises(StationError) as refused:
        CertificateAuthority.load(tmp_path / "ca", passphrase=PASSPHRASE)

    assert str(key_file) in str(refused.value)
    assert f"chmod 600 {key_file}" in str(refused.value)
    key_file.chmod(0o600)
    CertificateAuthority.load(tmp_path / "ca", passphrase=PASSPHRASE)  # the advice works


def test_load_with_the_wrong_passphrase_says_so(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE)

    with pytest.raises(StationError, match="CA passphrase is wrong"):
        CertificateAuthority.load(tmp_path / "ca", passphrase=b"not the passphrase")


def test_load_without_a_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(StationError, match=r"missing ca\.key.*station ca init"):
        CertificateAuthority.load(tmp_path / "nothing-here", passphrase=PASSPHRASE)


def test_load_refuses_a_ca_key_that_is_not_the_certificates(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "a", passphrase=PASSPHRASE)
    CertificateAuthority.init(tmp_path / "b", passphrase=PASSPHRASE)
    (tmp_path / "a" / "ca.key").unlink()
    (tmp_path / "b" / "ca.key").rename(tmp_path / "a" / "ca.key")

    with pytest.raises(StationError, match="is not the key of"):
        CertificateAuthority.load(tmp_path / "a", passphrase=PASSPHRASE)


def test_init_refuses_a_short_passphrase(tmp_path: Path) -> None:
    with pytest.raises(StationError, match="shorter than 8"):
        CertificateAuthority.init(tmp_path / "ca", passphrase=b"1234567")
    assert not (tmp_path / "ca").exists()


# --- device certificates ------------------------------------------------------------------------


@pytest.mark.parametrize("device_key_type", ["ec-p256", "rsa-2048"])
def test_device_certificate_is_an_end_entity_tls_client_certificate(
    any_ca: CertificateAuthority, device_key_type: str, tmp_path: Path
) -> None:
    key: DeviceKey = (
        ec.generate_private_key(ec.SECP256R1())
        if device_key_type == "ec-p256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    now = datetime.now(UTC)

    cert = any_ca.issue_device_certificate(device_csr(key), validity_days=365, now=now)

    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    assert usage.value.key_encipherment is (device_key_type == "rsa-2048")
    assert extension(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    assert cert.serial_number.bit_length() >= 64
    assert cert.subject == DEVICE_SUBJECT
    assert cert.issuer == any_ca.certificate.subject
    assert spki_sha256(cert.public_key()) == spki_sha256(key.public_key())
    assert extension(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        key.public_key()
    )
    assert (
        extension(cert, x509.AuthorityKeyIdentifier).value.key_identifier
        == extension(any_ca.certificate, x509.SubjectKeyIdentifier).value.digest
    )
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    assert cert.not_valid_before_utc == (now - CLOCK_SKEW_ALLOWANCE).replace(microsecond=0)
    assert cert.not_valid_after_utc == (now + timedelta(days=365)).replace(microsecond=0)

    device_cert = write_pem(tmp_path / "key0.cert", cert)
    as_client = openssl("verify", "-CAfile", any_ca.certificate_path, "-purpose", "sslclient", device_cert)
    assert as_client.returncode == 0 and "key0.cert: OK" in as_client.stdout, as_client.stderr
    # clientAuth only: the device certificate cannot pose as a server.
    as_server = openssl("verify", "-CAfile", any_ca.certificate_path, "-purpose", "sslserver", device_cert)
    assert as_server.returncode != 0


def test_tutorial_openssl_req_ca_would_make_the_device_a_ca_the_station_does_not(
    ec_ca: CertificateAuthority, tmp_path: Path
) -> None:
    # The tutorial's Step 3 on the device, then its Step 4 on the workstation, with our CA's files.
    assert openssl("genrsa", "-out", tmp_path / "key0.pem", "2048").returncode == 0
    made = openssl(
        "req",
        "-new",
        "-batch",
        "-key",
        tmp_path / "key0.pem",
        "-subj",
        f"/CN=serial:{SERIAL}/",
        "-out",
        tmp_path / "key0.csr",
    )
    assert made.returncode == 0, made.stderr
    tutorial = subprocess.run(
        [
            "openssl",
            "req",
            "-CA",
            str(ec_ca.certificate_path),
            "-CAkey",
            str(ec_ca.key_path),
            "-passin",
            "env:CA_PASS",
            "-in",
            str(tmp_path / "key0.csr"),
            "-out",
            str(tmp_path / "tutorial.cert"),
            "-days",
            "3650",
        ],
        env={**os.environ, "CA_PASS": PASSPHRASE.decode()},
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
    )
    assert tutorial.returncode == 0, tutorial.stderr
    tutorial_cert = x509.load_pem_x509_certificate((tmp_path / "tutorial.cert").read_bytes())
    csr = x509.load_pem_x509_csr((tmp_path / "key0.csr").read_bytes())

    station_cert = ec_ca.issue_device_certificate(csr, validity_days=3650)

    assert extension(tutorial_cert, x509.BasicConstraints).value.ca is True
    assert extension(station_cert, x509.BasicConstraints).value.ca is False
    assert station_cert.subject == tutorial_cert.subject == DEVICE_SUBJECT


def test_device_certificate_never_outlives_the_ca(tmp_path: Path) -> None:
    now = datetime(2026, 3, 12, 13, 0, tzinfo=UTC)
    ca = CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE, validity_days=30, now=now)

    cert = ca.issue_device_certificate(
        device_csr(ec.generate_private_key(ec.SECP256R1())), validity_days=3650, now=now
    )

    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc
    with pytest.raises(StationError, match="CA certificate expired"):
        ca.issue_device_certificate(
            device_csr(ec.generate_private_key(ec.SECP256R1())),
            validity_days=1,
            now=now + timedelta(days=31),
        )


def test_issuing_refuses_a_csr_whose_signature_does_not_verify(ec_ca: CertificateAuthority) -> None:
    der = bytearray(
        device_csr(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.DER)
    )
    der[-1] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(der))

    with pytest.raises(CsrRejected, match="signature does not verify"):
        ec_ca.issue_device_certificate(tampered, validity_days=30)


def test_fixture_slots_can_sign_concurrently(ec_ca: CertificateAuthority) -> None:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(48)]
    csrs = [
        device_csr(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"serial:2026{i:011d}")]))
        for i, key in enumerate(keys)
    ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        certs = list(pool.map(lambda csr: ec_ca.issue_device_certificate(csr, validity_days=30), csrs))

    assert len({cert.serial_number for cert in certs}) == len(certs)
    for csr, cert in zip(csrs, certs, strict=True):
        cert.verify_directly_issued_by(ec_ca.certificate)
        assert cert.subject == csr.subject


# --- CRL ----------------------------------------------------------------------------------------


def test_crl_verifies_with_openssl_and_lists_the_revoked_serials(
    any_ca: CertificateAuthority, tmp_path: Path
) -> None:
    certs = [
        any_ca.issue_device_certificate(device_csr(ec.generate_private_key(ec.SECP256R1())), validity_days=30)
        for _ in range(2)
    ]
    revoked_at = datetime(2026, 3, 12, 13, 0, tzinfo=UTC)
    entries = [
        RevokedEntry(certs[0].serial_number, revoked_at, "keyCompromise"),
        RevokedEntry(certs[1].serial_number, revoked_at, "board scrapped at end of line"),
    ]

    pem = any_ca.crl(entries, next_update_days=7)

    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes(pem)
    verdict = openssl("crl", "-in", crl_file, "-CAfile", any_ca.certificate_path, "-verify", "-noout")
    assert verdict.returncode == 0
    assert "verify OK" in verdict.stdout + verdict.stderr
    text = openssl("crl", "-in", crl_file, "-noout", "-text").stdout
    for cert in certs:
        hex_serial = f"{cert.serial_number:X}"
        assert f"Serial Number: {hex_serial.zfill(len(hex_serial) + len(hex_serial) % 2)}" in text
    assert "Key Compromise" in text
    crl = x509.load_pem_x509_crl(pem)
    assert crl.is_signature_valid(any_ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7) + CLOCK_SKEW_ALLOWANCE
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == extension(any_ca.certificate, x509.SubjectKeyIdentifier).value.digest
    # Revoked certificates are then refused by openssl's own CRL check.
    device = write_pem(tmp_path / "revoked.cert", certs[0])
    checked = openssl(
        "verify", "-CAfile", any_ca.certificate_path, "-CRLfile", crl_file, "-crl_check", device
    )
    assert checked.returncode != 0 and "certificate revoked" in checked.stdout + checked.stderr


def test_crl_numbers_keep_growing_across_loads(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE)

    numbers = []
    for _ in range(3):
        ca = CertificateAuthority.load(tmp_path / "ca", passphrase=PASSPHRASE)
        crl = x509.load_pem_x509_crl(ca.crl([]))
        numbers.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)

    assert numbers == [1, 2, 3]


# --- import -------------------------------------------------------------------------------------


def tutorial_ca(directory: Path, *extra_genrsa: str) -> tuple[Path, Path]:
    """The tutorial's Step 1 CA: `openssl genrsa` + `openssl req -new -x509 -subj /CN=ca`."""
    directory.mkdir()
    key, cert = directory / "ca.key", directory / "ca.cert"
    assert openssl("genrsa", *extra_genrsa, "-out", key, "2048").returncode == 0
    passin = ["-passin", "pass:old-ca-password"] if extra_genrsa else []
    made = openssl("req", "-new", "-x509", "-subj", "/CN=ca", "-out", cert, "-key", key, *passin)
    assert made.returncode == 0, made.stderr
    return key, cert


def test_import_adopts_the_tutorials_openssl_rsa_ca(tmp_path: Path) -> None:
    key, cert = tutorial_ca(tmp_path / "tutorial")

    ca = CertificateAuthority.import_existing(
        tmp_path / "ca",
        key_pem=key.read_bytes(),
        cert_pem=cert.read_bytes(),
        key_password=None,
        passphrase=PASSPHRASE,
    )

    assert ca.certificate == x509.load_pem_x509_certificate(cert.read_bytes())
    assert ca.key_type == "rsa-2048"
    assert ca.key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert (ca.key_path.stat().st_mode & 0o777) == 0o600
    reopened = CertificateAuthority.load(tmp_path / "ca", passphrase=PASSPHRASE)
    device = reopened.issue_device_certificate(
        device_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048)), validity_days=30
    )
    # Devices that already trust the tutorial's ca.cert accept what the station now issues.
    verdict = openssl(
        "verify", "-CAfile", cert, "-purpose", "sslclient", write_pem(tmp_path / "key0.cert", device)
    )
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    verdict = openssl("verify", "-CAfile", cert, "-purpose", "sslserver", reopened.system_certificate_path)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr


def test_import_of_an_encrypted_key_needs_its_password(tmp_path: Path) -> None:
    key, cert = tutorial_ca(tmp_path / "tutorial", "-aes256", "-passout", "pass:old-ca-password")

    def attempt(password: bytes | None) -> CertificateAuthority:
        return CertificateAuthority.import_existing(
            tmp_path / "ca",
            key_pem=key.read_bytes(),
            cert_pem=cert.read_bytes(),
            key_password=password,
            passphrase=PASSPHRASE,
        )

    with pytest.raises(StationError, match="is encrypted — give its password"):
        attempt(None)
    with pytest.raises(StationError, match="password is wrong"):
        attempt(b"not-it")
    assert not (tmp_path / "ca" / "ca.key").exists()
    assert attempt(b"old-ca-password").key_type == "rsa-2048"


def test_import_refuses_a_certificate_that_is_not_a_ca(ec_ca: CertificateAuthority, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    device = ec_ca.issue_device_certificate(device_csr(key), validity_days=30)

    with pytest.raises(StationError, match="not a CA certificate"):
        CertificateAuthority.import_existing(
            tmp_path / "ca",
            key_pem=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            cert_pem=device.public_bytes(serialization.Encoding.PEM),
            key_password=None,
            passphrase=PASSPHRASE,
        )


def test_import_refuses_a_key_that_does_not_match_the_certificate(tmp_path: Path) -> None:
    _, cert = tutorial_ca(tmp_path / "tutorial")
    other_key, _ = tutorial_ca(tmp_path / "other")

    with pytest.raises(StationError, match="do not belong together"):
        CertificateAuthority.import_existing(
            tmp_path / "ca",
            key_pem=other_key.read_bytes(),
            cert_pem=cert.read_bytes(),
            key_password=None,
            passphrase=PASSPHRASE,
        )


# --- TLS ----------------------------------------------------------------------------------------


@dataclass
class Handshake:
    server_peer: dict[str, object] | None = None
    server_error: BaseException | None = None
    client_received: bytes | None = None
    client_error: BaseException | None = None
    server_subject: str | None = None


def handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> Handshake:
    """One TLS connection on 127.0.0.1 between the station's server context and a device client."""
    outcome = Handshake()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TLS_TIMEOUT_S)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(TLS_TIMEOUT_S)
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    outcome.server_peer = tls.getpeercert()  # type: ignore[assignment]
                    tls.sendall(b"enrolled\n")
            except (OSError, ssl.SSLError) as exc:
                outcome.server_error = exc

        server = threading.Thread(target=serve, name="tls-server", daemon=True)
        server.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TLS_TIMEOUT_S) as raw,
                client_context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
                outcome.server_subject = peer.subject.rfc4514_string()
                outcome.client_received = tls.recv(64)
        except (OSError, ssl.SSLError) as exc:
            outcome.client_error = exc
        server.join(TLS_TIMEOUT_S)
        assert not server.is_alive(), "the TLS server thread did not finish"
    return outcome


def device_client_context(
    ca: CertificateAuthority, tmp_path: Path, *, certified_by: CertificateAuthority | None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.certificate_path)
    if certified_by is not None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certified_by.issue_device_certificate(device_csr(key), validity_days=30)
        # The device's key lives in its token; this test stand-in writes it to a temp file.
        (tmp_path / "key0.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context.load_cert_chain(write_pem(tmp_path / "key0.cert", cert), tmp_path / "key0.pem")
    return context


def test_tls_server_accepts_a_device_certified_by_the_ca(ec_ca: CertificateAuthority, tmp_path: Path) -> None:
    outcome = handshake(
        ec_ca.ssl_server_context(), device_client_context(ec_ca, tmp_path, certified_by=ec_ca)
    )

    assert outcome.server_error is None and outcome.client_error is None
    assert outcome.client_received == b"enrolled\n"
    assert outcome.server_subject == "CN=system"
    assert outcome.server_peer is not None
    assert outcome.server_peer["subject"] == ((("commonName", f"serial:{SERIAL}"),),)
    # The system key was decrypted in memory only.
    assert ec_ca.system_key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_tls_server_refuses_a_device_without_a_certificate(
    ec_ca: CertificateAuthority, tmp_path: Path
) -> None:
    outcome = handshake(ec_ca.ssl_server_context(), device_client_context(ec_ca, tmp_path, certified_by=None))

    assert isinstance(outcome.server_error, ssl.SSLError)
    assert outcome.client_received in (None, b"")


def test_tls_server_refuses_a_device_certified_by_another_ca(
    ec_ca: CertificateAuthority, tmp_path: Path
) -> None:
    stranger = CertificateAuthority.init(tmp_path / "stranger", passphrase=PASSPHRASE)

    outcome = handshake(
        ec_ca.ssl_server_context(), device_client_context(ec_ca, tmp_path, certified_by=stranger)
    )

    assert isinstance(outcome.server_error, ssl.SSLError)
    assert "certificate verify failed" in str(outcome.server_error) or "unknown ca" in str(
        outcome.server_error
    )
    assert outcome.client_received in (None, b"")


def test_tls_server_context_requires_tls_1_2_or_newer(ec_ca: CertificateAuthority) -> None:
    context = ec_ca.ssl_server_context()
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert ec_ca.ssl_server_context(require_client_cert=False).verify_mode == ssl.CERT_OPTIONAL


# --- helpers agree with openssl ---------------------------------------------------------------


def test_fingerprint_and_spki_digests_agree_with_openssl(ec_ca: CertificateAuthority) -> None:
    shown = openssl("x509", "-in", ec_ca.certificate_path, "-noout", "-fingerprint", "-sha256").stdout
    assert shown.strip().split("=", 1)[1].replace(":", "").lower() == fingerprint_sha256(ec_ca.certificate)
    public_pem = openssl("x509", "-in", ec_ca.certificate_path, "-noout", "-pubkey").stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=public_pem.encode(),
        capture_output=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=True,
    ).stdout
    assert hashlib.sha256(der).hexdigest() == spki_sha256(ec_ca.certificate.public_key())


# --- `station ca …` -----------------------------------------------------------------------------


def run_station_ca(home: Path, *argv: str) -> int:
    """`station --home HOME ca …` through the `ca` command group's own registration."""
    parser = argparse.ArgumentParser(prog="station")
    parser.add_argument("--home")
    ca_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--home", str(home), "ca", *argv])
    return int(args.handler(args))


@pytest.fixture
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(ca_cli.PASSPHRASE_ENV, PASSPHRASE.decode())
    yield


@pytest.mark.usefixtures("passphrase_env")
def test_cli_init_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_station_ca(tmp_path, "init", "--key-type", "rsa-2048", "--common-name", "Line 3 CA") == 0
    created = capsys.readouterr().out

    assert run_station_ca(tmp_path, "show") == 0
    shown = capsys.readouterr().out

    cert = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.cert").read_bytes())
    colon_fingerprint = ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
    for output in (created, shown):
        assert "CN=Line 3 CA" in output and "rsa-2048" in output and colon_fingerprint in output
        assert "system.cert" in output and "localhost, 127.0.0.1" in output
    assert PASSPHRASE.decode() not in created + shown
    with pytest.raises(StationError, match="already exists"):
        run_station_ca(tmp_path, "init")


def test_cli_refuses_a_short_new_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ca_cli.PASSPHRASE_ENV, "short")
    with pytest.raises(StationError, match="at least 8 characters"):
        run_station_ca(tmp_path, "init")


@pytest.mark.usefixtures("passphrase_env")
def test_cli_import_reads_the_key_password_from_the_named_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = tutorial_ca(tmp_path / "tutorial", "-aes256", "-passout", "pass:old-ca-password")
    monkeypatch.setenv("OLD_CA_PASSWORD", "old-ca-password")

    assert (
        run_station_ca(
            tmp_path / "home",
            "import",
            "--key",
            str(key),
            "--cert",
            str(cert),
            "--key-password-env",
            "OLD_CA_PASSWORD",
        )
        == 0
    )
    assert CertificateAuthority.load(tmp_path / "home" / "ca", passphrase=PASSPHRASE).key_type == "rsa-2048"


@pytest.mark.usefixtures("passphrase_env")
def test_cli_crl_without_an_audit_log_lists_nothing(tmp_path: Path) -> None:
    run_station_ca(tmp_path, "init")

    assert run_station_ca(tmp_path, "crl", "--out", str(tmp_path / "crl.pem")) == 0

    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert len(crl) == 0
    assert not (tmp_path / "audit.db").exists()  # the CRL command did not create one
    verdict = openssl(
        "crl", "-in", tmp_path / "crl.pem", "-CAfile", tmp_path / "ca" / "ca.cert", "-verify", "-noout"
    )
    assert "verify OK" in verdict.stdout + verdict.stderr


@pytest.mark.usefixtures("passphrase_env")
def test_cli_crl_lists_what_the_audit_log_revoked(tmp_path: Path) -> None:
    from station.audit import AuditLog

    run_station_ca(tmp_path, "init")
    ca = CertificateAuthority.load(tmp_path / "ca", passphrase=PASSPHRASE)
    cert = ca.issue_device_certificate(device_csr(ec.generate_private_key(ec.SECP256R1())), validity_days=30)
    with AuditLog(tmp_path / "audit.db") as audit:
        unit = audit.start_unit(
            serial=SERIAL,
            profile="welma-optee",
            device="ssh://root@127.0.0.2:2222",
            operator="ana",
            station="line-3",
        )
        audit.record_certificate(unit.id, certificate_pem=cert.public_bytes(serialization.Encoding.PEM))
        audit.revoke(serial=SERIAL, reason="keyCompromise", by="ana")

    assert run_station_ca(tmp_path, "crl", "--out", str(tmp_path / "crl.pem")) == 0

    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
