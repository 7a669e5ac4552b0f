"""A quality lead revokes a board's certificate, publishes the CRL, and OpenSSL sees every revocation.

No device is provisioned: units and certificates are recorded straight into a real audit log, the
certificates are issued by a real station CA, and the CRL is checked by the real `openssl` binary.
Re-provisioning a board revokes its old certificate ("superseded") when the new one is recorded.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.audit import SUPERSEDED_REASON, AuditLog, PublicKeyReused
from station.cli import main
from station.errors import StationError
from station.pki import CertificateAuthority
from tests.helpers.audit import Clock, make_certificate, start

PASSPHRASE = "quality lead test passphrase"
OPENSSL_TIMEOUT_S = 30
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A station home with a CA made by `station ca init`."""
    monkeypatch.setenv("STATION_CA_PASSPHRASE", PASSPHRASE)
    root = tmp_path / "home"
    assert main(["--home", str(root), "ca", "init"]) == 0
    return root


@pytest.fixture
def ca(home: Path) -> CertificateAuthority:
    return CertificateAuthority.load(home / "ca", passphrase=PASSPHRASE.encode())


@pytest.fixture
def log(home: Path) -> Iterator[AuditLog]:
    with AuditLog(home / "audit.db", clock=Clock(T0)) as audit:
        yield audit


def issue(ca: CertificateAuthority, serial: str, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """A device certificate from the station CA, as the sign step makes it."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"serial:{serial}")]))
        .sign(key, hashes.SHA256())
    )
    certificate = ca.issue_device_certificate(csr, validity_days=30)
    return certificate.public_bytes(serialization.Encoding.PEM)


def enrol(log: AuditLog, ca: CertificateAuthority, serial: str, **fields: str) -> int:
    """A board that passed with a certificate; returns its certificate's serial number."""
    unit = start(log, serial, **fields)
    record = log.record_certificate(unit.id, certificate_pem=issue(ca, serial))
    log.finish_unit(unit.id, result="passed")
    return record.serial_number


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S, check=False
    )


def crl_serials(text: str) -> set[int]:
    return {int(match, 16) for match in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", text)}


# ------------------------------------------------------------------------------------------ the story


def test_revoked_and_superseded_certificates_reach_a_crl_that_openssl_verifies(
    home: Path, ca: CertificateAuthority, log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    compromised = enrol(log, ca, "202600000000001")
    scrapped = enrol(log, ca, "202600000000002")
    replaced = enrol(log, ca, "202600000000003")
    still_good = enrol(log, ca, "202600000000004")
    # Board 3 comes back from rework and is enrolled again: its old certificate is superseded.
    again = start(log, "202600000000003", reprovision_reason="customer return")
    renewed = log.record_certificate(again.id, certificate_pem=issue(ca, "202600000000003")).serial_number
    log.finish_unit(again.id, result="passed")
    log.close()

    assert (
        main(
            [
                "--home",
                str(home),
                "revoke",
                "--serial",
                "202600000000001",
                "--reason",
                "keyCompromise",
                "--by",
                "Q. Lead",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert f"Revoked certificate {compromised:x} of board 202600000000001" in said
    assert f"station --home {home} ca crl --out FILE" in said
    assert (
        main(
            [
                "--home",
                str(home),
                "revoke",
                "--serial",
                "202600000000002",
                "--reason",
                "board scrapped after drop test",
                "--by",
                "Q. Lead",
            ]
        )
        == 0
    )

    crl_file = home / "crl.pem"
    assert main(["--home", str(home), "ca", "crl", "--out", str(crl_file)]) == 0
    shown = openssl("crl", "-in", crl_file, "-CAfile", home / "ca" / "ca.cert", "-verify", "-noout", "-text")

    assert shown.returncode == 0, shown.stderr
    assert "verify OK" in shown.stdout + shown.stderr
    assert crl_serials(shown.stdout) == {compromised, scrapped, replaced}
    assert still_good not in crl_serials(shown.stdout) and renewed not in crl_serials(shown.stdout)
    assert "Key Compromise" in shown.stdout and "Superseded" in shown.stdout
    with AuditLog(home / "audit.db") as reopened:
        assert reopened.verify().ok


def test_openssl_refuses_a_revoked_board_certificate_once_the_crl_is_published(
    home: Path, ca: CertificateAuthority, log: AuditLog
) -> None:
    unit = start(log, "202600000000001")
    pem = issue(ca, "202600000000001")
    log.record_certificate(unit.id, certificate_pem=pem)
    log.finish_unit(unit.id, result="passed")
    log.close()
    board_cert = home / "board.cert"
    board_cert.write_bytes(pem)
    crl_file = home / "crl.pem"

    assert main(["--home", str(home), "ca", "crl", "--out", str(crl_file)]) == 0
    before = openssl(
        "verify", "-crl_check", "-CRLfile", crl_file, "-CAfile", home / "ca" / "ca.cert", board_cert
    )
    assert before.returncode == 0, before.stdout + before.stderr

    assert (
        main(["--home", str(home), "revoke", "--serial", "202600000000001", "--reason", "keyCompromise"]) == 0
    )
    assert main(["--home", str(home), "ca", "crl", "--out", str(crl_file)]) == 0
    after = openssl(
        "verify", "-crl_check", "-CRLfile", crl_file, "-CAfile", home / "ca" / "ca.cert", board_cert
    )
    assert after.returncode != 0
    assert "certificate revoked" in after.stdout + after.stderr


def test_revoke_records_who_and_why_defaulting_to_the_login_name(
    home: Path, ca: CertificateAuthority, log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    enrol(log, ca, "202600000000001")
    log.close()
    monkeypatch.setattr("getpass.getuser", lambda: "qlead")

    assert (
        main(["--home", str(home), "revoke", "--serial", "202600000000001", "--reason", "keyCompromise"]) == 0
    )

    with AuditLog(home / "audit.db") as reopened:
        record = reopened.certificate_for_unit(reopened.units()[0].id)
    assert record is not None
    assert (record.revocation_reason, record.revoked_by) == ("keyCompromise", "qlead")


def test_revoke_says_what_went_wrong_and_changes_nothing(
    home: Path, ca: CertificateAuthority, log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    enrol(log, ca, "202600000000001")
    unit = start(log, "202600000000002")  # started, never certified
    log.finish_unit(unit.id, result="failed", failed_step="keygen")
    log.close()
    revoke = ["--home", str(home), "revoke", "--by", "Q. Lead", "--serial"]

    assert main([*revoke, "202600000000009", "--reason", "keyCompromise"]) == 1
    assert "No certificate was issued to board 202600000000009" in capsys.readouterr().err
    assert main([*revoke, "202600000000002", "--reason", "keyCompromise"]) == 1
    assert "No certificate was issued to board 202600000000002" in capsys.readouterr().err
    assert main([*revoke, "202600000000001", "--reason", "   "]) == 1
    assert "--reason is empty" in capsys.readouterr().err
    with AuditLog(home / "audit.db") as reopened:
        assert reopened.revoked_certificates() == []

    assert main([*revoke, "202600000000001", "--reason", "keyCompromise"]) == 0
    assert main([*revoke, "202600000000001", "--reason", "keyCompromise"]) == 1
    assert "was already revoked" in capsys.readouterr().err


def test_revoke_without_an_audit_log_does_not_create_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-home"
    args = [
        "--home",
        str(empty),
        "revoke",
        "--serial",
        "202600000000001",
        "--reason",
        "keyCompromise",
        "--by",
        "q",
    ]
    assert main(args) == 1
    assert "There is no audit log" in capsys.readouterr().err
    assert not (empty / "audit.db").exists()


# ------------------------------------------------------------------------ superseded when replaced


def test_a_reprovisioned_board_s_old_certificate_is_revoked_when_the_new_one_is_recorded(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    with AuditLog(tmp_path / "audit.db", clock=clock) as log:
        first = start(log, "202600000000001", operator="ann")
        old = log.record_certificate(first.id, certificate_pem=make_certificate())
        log.finish_unit(first.id, result="passed")
        events = log.verify().events

        clock.advance(days=3)
        second = start(log, "202600000000001", operator="bob", reprovision_reason="rework")
        # Until the replacement exists the board keeps a valid certificate: the re-provisioning may be given up.
        assert log.certificate_for_unit(first.id) == old
        clock.advance(minutes=2)
        new = log.record_certificate(second.id, certificate_pem=make_certificate())

        superseded = log.certificate_for_unit(first.id)
        assert superseded is not None
        assert (superseded.revoked_at, superseded.revocation_reason, superseded.revoked_by) == (
            clock(),
            SUPERSEDED_REASON,
            "bob",
        )
        assert new.revoked_at is None
        assert [r.serial_number for r in log.revoked_certificates()] == [old.serial_number]
        # unit.superseded + unit.started, then certificate.issued + certificate.superseded: one event per row.
        assert log.verify().ok and log.verify().events == events + 4


def test_a_certificate_refused_for_a_reused_key_leaves_the_old_certificate_valid(tmp_path: Path) -> None:
    shared_key = ec.generate_private_key(ec.SECP256R1())
    with AuditLog(tmp_path / "audit.db") as log:
        first = start(log, "202600000000001")
        log.record_certificate(first.id, certificate_pem=make_certificate(key=shared_key))
        log.finish_unit(first.id, result="passed")
        second = start(log, "202600000000001", reprovision_reason="rework")

        with pytest.raises(PublicKeyReused):
            log.record_certificate(second.id, certificate_pem=make_certificate(key=shared_key))

        assert log.revoked_certificates() == []
        assert log.verify().ok


def test_a_second_certificate_in_the_same_unit_supersedes_the_first(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        unit = start(log, "202600000000001")
        first = log.record_certificate(unit.id, certificate_pem=make_certificate())
        # The push failed; the operator's Retry ran keygen again and a new key was certified.
        second = log.record_certificate(unit.id, certificate_pem=make_certificate())

        assert [r.serial_number for r in log.revoked_certificates()] == [first.serial_number]
        assert log.certificate_for_unit(unit.id) == second
        assert log.unit(unit.id).certificate_revoked_at is None


def test_other_boards_certificates_are_never_superseded(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        for serial in ("202600000000001", "2026000000000010", "202600000000002"):
            unit = start(log, serial)
            log.record_certificate(unit.id, certificate_pem=make_certificate())
        assert log.revoked_certificates() == []


def test_the_supersede_revocation_commits_with_the_new_certificate_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        first = start(log, "202600000000001")
        log.record_certificate(first.id, certificate_pem=make_certificate())
        log.finish_unit(first.id, result="passed")
        second = start(log, "202600000000001", reprovision_reason="rework")
        events = log.verify().events
        # Something refuses the revocation after the new certificate's row was written.
        raw = sqlite3.connect(path)
        raw.execute(
            "CREATE TRIGGER refuse_revocation BEFORE UPDATE OF revoked_at ON certificates "
            "BEGIN SELECT RAISE(ABORT, 'disk full, say'); END"
        )
        raw.commit()
        raw.close()

        with pytest.raises(sqlite3.IntegrityError, match="disk full"):
            log.record_certificate(second.id, certificate_pem=make_certificate())

        assert log.certificate_for_unit(second.id) is None
        assert log.revoked_certificates() == []
        assert log.verify().events == events


def test_revoking_needs_a_reason_and_a_name(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        unit = start(log, "202600000000001")
        log.record_certificate(unit.id, certificate_pem=make_certificate())
        with pytest.raises(ValueError, match="reason"):
            log.revoke(serial="202600000000001", reason=" ", by="q")
        with pytest.raises(StationError, match="No certificate"):
            log.revoke(serial="20260000000000", reason="keyCompromise", by="q")
