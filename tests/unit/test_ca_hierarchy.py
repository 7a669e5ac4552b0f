"""The CA hierarchy without boards: offline root, station CAs in their own SoftHSM2 tokens, policy, CRL, signed audit.

Real tokens (SoftHSM2, a token directory private to each test) and the real `station` command line; the device
side is a key made here.  RFC 5280 conformance is checked field by field with cryptography and with openssl.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from station.audit import AuditLog, _canonical_json, _event_hash
from station.audit.checkpoints import CheckpointSigner
from station.cli.ca import load_station_ca
from station.home import StationHome
from station.pki import (
    CertificateAuthority,
    QuotaReached,
    RevokedEntry,
    device_subject,
    key_file_kdf,
)
from tests.helpers.pki_tokens import PIN, offline_root, secret_file, station, token_station

TEMPLATE = "/CN=serial:{serial}/"


def device_csr(
    serial: str, *, bmp: bool = False
) -> tuple[x509.CertificateSigningRequest, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    attribute = (
        x509.NameAttribute(NameOID.COMMON_NAME, f"serial:{serial}", _type=x509.name._ASN1Type.BMPString)
        if bmp
        else x509.NameAttribute(NameOID.COMMON_NAME, f"serial:{serial}")
    )
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([attribute])).sign(
        key, hashes.SHA256()
    ), key


def issue(ca: CertificateAuthority, serial: str, **options: object) -> x509.Certificate:
    csr, _ = device_csr(serial, bmp=bool(options.pop("bmp", False)))
    return ca.issue_device_certificate(
        csr,
        validity_days=int(options.pop("validity_days", 3650)),
        subject=device_subject(TEMPLATE, serial=serial),
        **options,  # type: ignore[arg-type]
    )


def openssl(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, input=stdin, timeout=30, check=False
    )


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One offline root, two stations (LINE-3, LINE-4) with their own tokens; LINE-4 may issue 3 certificates."""
    base = tmp_path_factory.mktemp("hierarchy")
    root = offline_root(base)
    line3 = base / "line3"
    line4 = base / "line4"
    chain3 = token_station(line3, "LINE-3", root=root, name="LINE-3")
    chain4 = token_station(line4, "LINE-4", root=root, name="LINE-4", max_certificates=3)
    return {"root": root, "line3": line3, "line4": line4, "chain3": chain3, "chain4": chain4}


def open_ca(home: Path) -> CertificateAuthority:
    return load_station_ca(StationHome(home))


# --- the hierarchy ---------------------------------------------------------------------------------


def test_two_stations_from_one_offline_root_each_issue_certificates_that_verify(hierarchy, tmp_path):
    root_cert = hierarchy["root"] / "root.cert"
    for line in ("line3", "line4"):
        ca = open_ca(hierarchy[line])
        try:
            assert ca.in_token and "PKCS#11 token" in ca.key_storage
            cert = issue(ca, "202600000000001")
        finally:
            ca.close()
        leaf = tmp_path / f"{line}.pem"
        leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issuing = tmp_path / f"{line}-issuing.pem"
        issuing.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
        verdict = openssl(
            "verify", "-purpose", "sslclient", "-CAfile", root_cert, "-untrusted", issuing, leaf
        )
        assert verdict.returncode == 0 and b": OK" in verdict.stdout, verdict.stdout + verdict.stderr
    # A certificate of LINE-3 does not verify against LINE-4's CA (each station its own issuer).
    crossed = openssl(
        "verify", "-CAfile", root_cert, "-untrusted", tmp_path / "line4-issuing.pem", tmp_path / "line3.pem"
    )
    assert crossed.returncode != 0
    # The root kept a record of both station CAs it issued.
    assert len(list((hierarchy["root"] / "issued").glob("*.pem"))) == 2


def test_the_station_ca_is_limited_to_end_entities_names_and_the_roots_validity(hierarchy):
    chain = x509.load_pem_x509_certificates(hierarchy["chain3"].read_bytes())
    issuing, root = chain
    constraints = issuing.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    names = issuing.extensions.get_extension_for_class(x509.NameConstraints)
    assert names.critical and x509.DNSName("localhost") in names.value.permitted_subtrees
    usage = issuing.extensions.get_extension_for_class(x509.KeyUsage)
    assert (
        usage.critical
        and usage.value.key_cert_sign
        and usage.value.crl_sign
        and usage.value.digital_signature
    )
    assert issuing.not_valid_after_utc <= root.not_valid_after_utc
    assert issuing.not_valid_before_utc >= root.not_valid_before_utc
    root_constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert root_constraints.ca and root_constraints.path_length == 1
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert (
        aki.key_identifier == root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    # The offline root's key file is protected by scrypt, never PBKDF2.
    assert key_file_kdf(hierarchy["root"] / "root.key") == "scrypt"
    assert (hierarchy["root"] / "root.key").stat().st_mode & 0o777 == 0o600


# --- RFC 5280 ----------------------------------------------------------------------------------------


def test_device_certificates_conform_to_rfc_5280_and_take_their_subject_from_the_profile(hierarchy):
    ca = open_ca(hierarchy["line3"])
    try:
        cert = issue(
            ca,
            "202600000000007",
            bmp=True,
            crl_url="http://pki.example/line-3.crl",
            ca_issuers_url="http://pki.example/line-3.cer",
            validity_days=100000,
        )
    finally:
        ca.close()
    der = cert.public_bytes(serialization.Encoding.DER)
    # Serial: positive, at most 20 octets (RFC 5280 4.1.2.2), with at least 64 random bits.
    assert 0 < cert.serial_number < 2**159 and cert.serial_number.bit_length() > 64
    assert cert.version == x509.Version.v3
    # Validity never beyond the issuer's, notBefore not before it (4.1.2.5); UTCTime until 2049.
    assert cert.not_valid_after_utc <= ca.certificate.not_valid_after_utc
    assert cert.not_valid_before_utc >= ca.certificate.not_valid_before_utc
    # The subject is the station's: UTF8String, although the CSR asked in BMPString (4.1.2.6, 4.1.2.4).
    (cn,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert cn.value == "serial:202600000000007" and cn._type == x509.name._ASN1Type.UTF8String
    assert b"\x0c\x16serial:202600000000007" in der  # UTF8String tag 0x0c in the DER itself
    assert cert.issuer == ca.certificate.subject
    # Extensions: each once, criticality as RFC 5280 asks, key identifiers chained.
    oids = [ext.oid for ext in cert.extensions]
    assert len(oids) == len(set(oids))
    by_class = {type(ext.value): ext for ext in cert.extensions}
    assert by_class[x509.BasicConstraints].critical and by_class[x509.BasicConstraints].value.ca is False
    assert by_class[x509.KeyUsage].critical and by_class[x509.KeyUsage].value.digital_signature
    assert not by_class[x509.KeyUsage].value.key_cert_sign
    assert by_class[x509.ExtendedKeyUsage].value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert by_class[x509.SubjectKeyIdentifier].value == x509.SubjectKeyIdentifier.from_public_key(
        cert.public_key()
    )
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert by_class[x509.AuthorityKeyIdentifier].value.key_identifier == ca_ski
    cdp = by_class[x509.CRLDistributionPoints].value
    assert cdp[0].full_name == [x509.UniformResourceIdentifier("http://pki.example/line-3.crl")]
    aia = by_class[x509.AuthorityInformationAccess].value
    assert aia[0].access_location == x509.UniformResourceIdentifier("http://pki.example/line-3.cer")
    # The signature algorithm inside and outside the TBS agree, and the token's signature verifies.
    assert der.count(bytes.fromhex("06082a8648ce3d040302")) == 2
    cert.verify_directly_issued_by(ca.certificate)
    # openssl reads it with no complaint about encodings (strict parsing of the whole structure).
    shown = openssl("x509", "-inform", "DER", "-noout", "-text", stdin=der)
    assert (
        shown.returncode == 0
        and b"CA:FALSE" in shown.stdout
        and b"URI:http://pki.example/line-3.crl" in shown.stdout
    )


def test_the_crl_conforms_to_rfc_5280_and_verifies_with_openssl(hierarchy, tmp_path):
    ca = open_ca(hierarchy["line3"])
    try:
        now = datetime.now(UTC)
        first = ca.crl(
            [RevokedEntry(0x1234, now, "cessationOfOperation"), RevokedEntry(0x99, now, "superseded")],
            next_update_days=3,
        )
        second = ca.crl([], next_update_days=3)
    finally:
        ca.close()
    crl = x509.load_pem_x509_crl(first)
    assert crl.is_signature_valid(ca.certificate.public_key())
    assert crl.issuer == ca.certificate.subject
    assert timedelta(days=3) <= crl.next_update_utc - crl.last_update_utc <= timedelta(days=3, minutes=6)
    numbers = [
        x509.load_pem_x509_crl(pem).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        for pem in (first, second)
    ]
    assert numbers[1] == numbers[0] + 1  # CRL numbers only grow (5.2.3)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    reasons = {
        entry.serial_number: entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        for entry in crl
    }
    assert reasons == {0x1234: x509.ReasonFlags.cessation_of_operation, 0x99: x509.ReasonFlags.superseded}
    path = tmp_path / "crl.pem"
    path.write_bytes(first)
    checked = openssl("crl", "-in", path, "-noout", "-verify", "-CAfile", hierarchy["chain3"])
    assert b"verify OK" in checked.stdout + checked.stderr


# --- quota -------------------------------------------------------------------------------------------


def test_the_quota_is_counted_in_the_audit_log_warns_at_90_percent_and_refuses_at_the_limit(
    hierarchy, tmp_path
):
    db = tmp_path / "audit.db"
    recorded = 0
    for _ in range(3):
        with AuditLog(db) as audit:  # a fresh log object each time: the count survives a restart
            ca = open_ca(hierarchy["line4"])
            try:
                unit = audit.start_unit(
                    serial=f"20260000000010{recorded}", profile="p", device="d", operator="o", station="s"
                )
                issue(
                    ca,
                    unit.serial,
                    issued_since=audit.certificates_issued_since,
                    record=lambda cert, unit=unit, audit=audit: audit.record_certificate(
                        unit.id, certificate_pem=cert.public_bytes(serialization.Encoding.PEM)
                    ),
                )
                recorded += 1
                quota = ca.quota(audit.certificates_issued_since)
            finally:
                ca.close()
        assert quota.issued == recorded and quota.remaining == 3 - recorded
        assert quota.near_limit is (recorded == 3)
    with AuditLog(db) as audit:
        ca = open_ca(hierarchy["line4"])
        try:
            with pytest.raises(QuotaReached, match="issued 3 of the 3 certificates"):
                issue(
                    ca,
                    "202600000000200",
                    issued_since=audit.certificates_issued_since,
                    record=lambda cert: pytest.fail("nothing may be recorded past the quota"),
                )
        finally:
            ca.close()
        assert audit.certificates_issued_since(datetime(2000, 1, 1, tzinfo=UTC)) == 3


def test_a_daily_limit_from_station_toml_refuses_at_the_limit(hierarchy):
    ca = open_ca(hierarchy["line3"])
    try:
        ca.max_certificates_per_day = 2
        assert "1 of 2 today" in ca.quota(lambda since: 1).describe()
        with pytest.raises(QuotaReached, match="today's 2 certificates"):
            ca.quota(lambda since: 2).check()
    finally:
        ca.close()


# --- errors ------------------------------------------------------------------------------------------


def test_a_wrong_pin_a_missing_token_or_an_open_pin_file_sign_nothing(hierarchy, tmp_path):
    home = hierarchy["line3"]
    before = sorted(p.name for p in (home / "ca").iterdir())
    good = home / "token.pin"
    wrong = secret_file(tmp_path / "wrong.pin", "11112222")
    toml = home / "station.toml"
    original = toml.read_text()
    try:
        toml.write_text(original.replace(str(good), str(wrong)))
        run = station(home, "ca", "crl", "--out", str(tmp_path / "crl.pem"))
        assert (
            run.returncode != 0
            and "PIN of token 'LINE-3' is wrong" in run.stderr
            and "Nothing was signed" in run.stderr
        )
        assert PIN not in run.stderr and "11112222" not in run.stderr
        assert not (tmp_path / "crl.pem").exists()

        wrong.chmod(0o644)
        run = station(home, "ca", "crl", "--out", str(tmp_path / "crl.pem"))
        assert run.returncode != 0 and "mode 0644" in run.stderr and "chmod 600" in run.stderr

        toml.write_text(original)
        token = home / "ca" / "token.toml"
        saved = token.read_text()
        token.write_text(saved.replace('token_label = "LINE-3"', 'token_label = "LINE-9"'))
        try:
            run = station(home, "ca", "crl", "--out", str(tmp_path / "crl.pem"))
        finally:
            token.write_text(saved)
        assert run.returncode != 0 and "token 'LINE-9' is not present" in run.stderr
        assert "LINE-3" in run.stderr  # says which tokens it did find
        assert not (tmp_path / "crl.pem").exists()
    finally:
        toml.write_text(original)
    assert sorted(p.name for p in (home / "ca").iterdir()) == before
    # A PIN in the environment is not a way in: with no pin_file and no terminal the station asks for one.
    env = dict(os.environ, STATION_CA_PIN=PIN, PIN=PIN, PKCS11_PIN=PIN)
    toml.write_text(original.replace(f'pin_file = "{good}"', ""))
    try:
        run = station(home, "ca", "crl", "--out", str(tmp_path / "crl.pem"), env=env)
    finally:
        toml.write_text(original)
    assert run.returncode != 0 and "no terminal to ask on" in run.stderr and "pin_file" in run.stderr


# --- revocation and the signed audit log ------------------------------------------------------------


def _signed_log_with_a_failed_unit(home: Path) -> tuple[AuditLog, int]:
    audit = AuditLog(home / "audit.db")
    ca = open_ca(home)
    try:
        audit.attach_checkpoint_signer(CheckpointSigner.for_certificate(ca.certificate, ca.sign_bytes))
        unit = audit.start_unit(serial="202600000000300", profile="p", device="d", operator="o", station="s")
        issue(
            ca,
            unit.serial,
            record=lambda cert: audit.record_certificate(
                unit.id, certificate_pem=cert.public_bytes(serialization.Encoding.PEM)
            ),
        )
        audit.finish_unit(unit.id, result="failed", failed_step="push", message="read-back failed")
    finally:
        ca.close()
    return audit, unit.id


def test_a_unit_that_fails_after_signing_is_revoked_and_signed_in_the_same_transaction(hierarchy, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    for name in ("ca", "softhsm2.conf", "softhsm-tokens", "station.toml", "token.pin"):
        os.symlink(hierarchy["line3"] / name, home / name)
    audit, unit_id = _signed_log_with_a_failed_unit(home)
    record = audit.certificate_for_unit(unit_id)
    assert record is not None and record.revocation_reason == "cessationOfOperation"
    with sqlite3.connect(home / "audit.db") as db:
        last_event = db.execute("SELECT seq, kind FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        signed = db.execute("SELECT seq FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    audit.close()
    assert last_event[1] == "certificate.revoked" and signed[0] == last_event[0]
    verified = station(home, "audit", "verify")
    assert verified.returncode == 0 and "signed checkpoint(s) verified" in verified.stdout, (
        verified.stdout + verified.stderr
    )
    made = station(home, "ca", "crl", "--out", str(tmp_path / "crl.pem"))
    assert made.returncode == 0, made.stderr
    listed = {entry.serial_number for entry in x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())}
    assert record.serial_number in listed


def test_a_rewritten_log_with_a_recomputed_chain_fails_on_the_signature_and_gets_no_crl(hierarchy, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    for name in ("ca", "softhsm2.conf", "softhsm-tokens", "station.toml", "token.pin"):
        os.symlink(hierarchy["line3"] / name, home / name)
    audit, unit_id = _signed_log_with_a_failed_unit(home)
    audit.close()
    assert station(home, "audit", "verify").returncode == 0

    # Someone with only the database file un-revokes the certificate and recomputes the whole chain.
    with sqlite3.connect(home / "audit.db") as db:
        db.execute("DROP TRIGGER events_are_append_only_update")
        db.execute("UPDATE certificates SET revoked_at = NULL, revocation_reason = NULL, revoked_by = NULL")
        prev = "0" * 64
        for seq, at, kind, payload in db.execute(
            "SELECT seq, at, kind, payload FROM events ORDER BY seq"
        ).fetchall():
            data = __import__("json").loads(payload)
            if data["table"] == "certificates":
                data["row"].update(revoked_at=None, revocation_reason=None, revoked_by=None)
            payload = _canonical_json(data)
            digest = _event_hash(prev_hash=prev, seq=seq, at=at, kind=kind, payload=payload)
            db.execute(
                "UPDATE events SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                [payload, prev, digest, seq],
            )
            prev = digest
    with AuditLog(home / "audit.db") as plain:
        assert plain.verify().ok  # the unkeyed chain alone is fooled
    verified = station(home, "audit", "verify")
    assert verified.returncode == 1 and "signature fails" in verified.stdout, verified.stdout
    refused = station(home, "ca", "crl", "--out", str(tmp_path / "crl.pem"))
    assert (
        refused.returncode != 0
        and "Refusing to build a CRL" in refused.stderr
        and "signature" in refused.stderr
    )
    assert not (tmp_path / "crl.pem").exists()

    # Deleting the signed checkpoints as well does not help.
    with sqlite3.connect(home / "audit.db") as db:
        db.execute("DROP TRIGGER checkpoints_are_append_only_delete")
        db.execute("DELETE FROM checkpoints")
    verified = station(home, "audit", "verify")
    assert verified.returncode == 1 and "not covered by any signed checkpoint" in verified.stdout


# --- the demo CA keeps working -----------------------------------------------------------------------


def test_the_demo_file_ca_uses_scrypt_and_station_ca_init_still_works_without_a_token(tmp_path):
    env = dict(os.environ, STATION_CA_PASSPHRASE="demo station passphrase")
    made = station(tmp_path / "demo", "ca", "init", env=env)
    assert made.returncode == 0, made.stderr
    assert key_file_kdf(tmp_path / "demo" / "ca" / "ca.key") == "scrypt"
    assert key_file_kdf(tmp_path / "demo" / "ca" / "system.key") == "scrypt"
    shown = station(tmp_path / "demo", "ca", "show")
    assert shown.returncode == 0 and "key protection" not in shown.stdout
    assert re.search(r"CA certificate: .*ca\.cert", shown.stdout)


def test_recording_a_replacement_certificate_signs_the_supersession_without_deadlocking(tmp_path):
    # The sign step records under the CA's lock; recording a replacement revokes the old certificate, which the
    # audit log signs in the same transaction with the same CA. That must not wait on the CA's own lock.
    import threading

    ca = CertificateAuthority.init(tmp_path / "ca", passphrase=b"demo station passphrase")
    audit = AuditLog(tmp_path / "audit.db")
    audit.attach_checkpoint_signer(CheckpointSigner.for_certificate(ca.certificate, ca.sign_bytes))
    serial = "202600000000400"
    first = audit.start_unit(serial=serial, profile="p", device="d", operator="o", station="s")
    issue(
        ca,
        serial,
        record=lambda cert: audit.record_certificate(
            first.id, certificate_pem=cert.public_bytes(serialization.Encoding.PEM)
        ),
    )
    audit.finish_unit(first.id, result="passed")
    second = audit.start_unit(
        serial=serial,
        profile="p",
        device="d",
        operator="o",
        station="s",
        reprovision_reason="customer return",
    )
    done = threading.Event()

    def replace() -> None:
        issue(
            ca,
            serial,
            record=lambda cert: audit.record_certificate(
                second.id, certificate_pem=cert.public_bytes(serialization.Encoding.PEM)
            ),
        )
        done.set()

    worker = threading.Thread(target=replace, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done.is_set(), "recording the replacement certificate deadlocked"
    old = audit.certificate_for_unit(first.id)
    assert old is not None and old.revocation_reason == "superseded"
    report = audit.verify(trusted=[ca.certificate], require_signed_since=ca.certificate.not_valid_before_utc)
    assert report.ok and report.checkpoints and report.checkpoints >= 2, report
    audit.close()


def test_a_quality_leads_revocation_is_signed_with_the_token(hierarchy, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    for name in ("ca", "softhsm2.conf", "softhsm-tokens", "station.toml", "token.pin"):
        os.symlink(hierarchy["line3"] / name, home / name)
    with AuditLog(home / "audit.db") as audit:
        ca = open_ca(home)
        try:
            audit.attach_checkpoint_signer(CheckpointSigner.for_certificate(ca.certificate, ca.sign_bytes))
            unit = audit.start_unit(
                serial="202600000000500", profile="p", device="d", operator="o", station="s"
            )
            issue(
                ca,
                unit.serial,
                record=lambda cert: audit.record_certificate(
                    unit.id, certificate_pem=cert.public_bytes(serialization.Encoding.PEM)
                ),
            )
            audit.finish_unit(unit.id, result="passed")
        finally:
            ca.close()
    revoked = station(
        home, "revoke", "--serial", "202600000000500", "--reason", "keyCompromise", "--by", "qa"
    )
    assert revoked.returncode == 0, revoked.stderr
    verified = station(home, "audit", "verify")
    assert verified.returncode == 0 and "signed checkpoint(s) verified" in verified.stdout, verified.stdout


def test_the_crl_is_published_to_a_folder_and_put_to_a_url_on_a_schedule(hierarchy, tmp_path):
    import http.server
    import threading

    received: list[tuple[str, str, bytes]] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/crl/line-3.crl"
        put = station(hierarchy["line3"], "ca", "crl", "--publish", url, "--next-update-days", "2")
        assert put.returncode == 0, put.stderr
    finally:
        server.shutdown()
        server.server_close()
    (path, kind, body) = received[0]
    assert path == "/crl/line-3.crl" and kind == "application/pkix-crl"
    crl = x509.load_der_x509_crl(body)
    issuing = x509.load_pem_x509_certificates(hierarchy["chain3"].read_bytes())[0]
    assert crl.is_signature_valid(issuing.public_key())
    assert timedelta(days=2) <= crl.next_update_utc - crl.last_update_utc <= timedelta(days=2, minutes=6)

    folder = tmp_path / "www"
    folder.mkdir()
    scheduled = subprocess.Popen(
        [*station_argv(hierarchy["line3"]), "ca", "crl", "--publish", str(folder), "--every", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert scheduled.stdout is not None
        lines = [scheduled.stdout.readline() for _ in range(3)]  # the CRL, its next update, the next run
    finally:
        scheduled.terminate()
        scheduled.wait(timeout=30)
    assert "crl.pem" in lines[0] and "Next publication in 60 minute(s)" in lines[2], lines
    pem = x509.load_pem_x509_crl((folder / "crl.pem").read_bytes())
    assert pem.public_bytes(serialization.Encoding.DER) == (folder / "crl.der").read_bytes()


def station_argv(home: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "station", "--home", str(home)]


def test_an_offline_root_with_its_key_in_a_token_signs_a_station_ca(hierarchy, tmp_path):
    from tests.helpers.pki_tokens import SOFTHSM_MODULE, init_token, private_softhsm

    conf = private_softhsm(tmp_path)
    init_token(conf, "ROOT")
    pin_file = secret_file(tmp_path / "root.pin", PIN)
    made = station(
        tmp_path / "h",
        "ca",
        "root",
        "init",
        "--out",
        str(tmp_path / "root"),
        "--key-storage",
        "pkcs11",
        "--pkcs11-module",
        str(SOFTHSM_MODULE),
        "--token-label",
        "ROOT",
        "--softhsm2-conf",
        str(conf),
        "--pin-file",
        str(pin_file),
    )
    assert made.returncode == 0, made.stderr
    assert not (tmp_path / "root" / "root.key").exists()  # the key is in the token only
    chain = tmp_path / "chain.pem"
    signed = station(
        tmp_path / "h",
        "ca",
        "root",
        "sign-station",
        "--root",
        str(tmp_path / "root"),
        "--csr",
        str(hierarchy["line3"] / "ca" / "station-ca.csr"),
        "--name",
        "LINE-9",
        "--days",
        "30",
        "--out",
        str(chain),
        "--pin-file",
        str(pin_file),
    )
    assert signed.returncode == 0, signed.stderr
    issuing, root = x509.load_pem_x509_certificates(chain.read_bytes())
    issuing.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert issuing.not_valid_after_utc - issuing.not_valid_before_utc <= timedelta(days=30, minutes=6)
    again = station(
        tmp_path / "h",
        "ca",
        "root",
        "sign-station",
        "--root",
        str(tmp_path / "root"),
        "--csr",
        str(hierarchy["line3"] / "ca" / "station-ca.csr"),
        "--name",
        "LINE-9",
        "--out",
        str(chain),
        "--pin-file",
        str(pin_file),
    )
    assert again.returncode != 0 and "already exists" in again.stderr and "nothing was signed" in again.stderr
    assert len(list((tmp_path / "root" / "issued").glob("*.pem"))) == 1
