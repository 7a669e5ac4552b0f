"""Board identity's pure parts: the SoC id read as the profile says, the fixture inventory edited in place,
the trust summary, the profile's [identity]/[attestation] tables and the x509-chain attestation check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.attestation import AttestationFailed, verify_x509_chain
from station.config import load_config
from station.errors import ConfigError
from station.identity import Basis, SocIdUnreadable, read_soc_id, set_fixture_host_key, trust_summary
from station.profiles import IdentitySettings, load_profile, load_profile_file
from station.transport import CommandResult, Deadline

KEY = "SHA256:" + "k" * 43


class ReadLink:
    """Answers `cat PATH` from a dict: (exit status, output)."""

    def __init__(self, answers: dict[str, tuple[int, str]]) -> None:
        self.answers = answers
        self.commands: list[str] = []

    def run(self, cmd, deadline, *, check=True):  # noqa: ANN001 - a DeviceLink stand-in
        line = cmd.render()
        self.commands.append(line)
        status, output = self.answers.get(line.split()[-1], (1, "cat: No such file or directory\n"))
        if status == 0:
            return CommandResult(command=line, stdout=output, stderr="", exit_status=0, duration_s=0.0)
        return CommandResult(command=line, stdout="", stderr=output, exit_status=status, duration_s=0.0)


def test_the_soc_id_is_read_from_the_first_path_that_has_one_and_device_tree_nuls_are_dropped() -> None:
    link = ReadLink({"/proc/device-tree/serial-number": (0, "0123ABCD4567EF89\x00")})
    soc = read_soc_id(link, IdentitySettings(), Deadline(5, what="t"))  # type: ignore[arg-type]
    assert soc is not None and (soc.value, soc.source) == (
        "0123ABCD4567EF89",
        "/proc/device-tree/serial-number",
    )
    assert link.commands[0] == "cat /sys/devices/soc0/serial_number"


@pytest.mark.parametrize(
    "answers, expected",
    [
        ({}, "exit 1"),
        ({"/sys/devices/soc0/serial_number": (0, "\n")}, "/sys/devices/soc0/serial_number: empty"),
        ({"/sys/devices/soc0/serial_number": (0, "a b c\n")}, "not an id"),
    ],
)
def test_no_soc_id_where_one_is_required_is_a_clear_error(answers, expected) -> None:
    with pytest.raises(SocIdUnreadable) as error:
        read_soc_id(ReadLink(answers), IdentitySettings(), Deadline(5, what="t"))  # type: ignore[arg-type]
    assert expected in str(error.value) and "[identity]" in str(error.value)
    assert (
        read_soc_id(
            ReadLink(answers),
            IdentitySettings(soc_id_required=False),  # type: ignore[arg-type]
            Deadline(5, what="t"),
        )
        is None
    )


def test_pinning_edits_only_the_fixtures_table_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        '# line 3\n[station]\nname = "l3"\n\n[[fixture]]\nname = "a"\ndevice = "ssh://root@h:1"\n'
        f'host_key = "{KEY}"  # old\n\n[[fixture]]\nname = "b"  # bench b\ndevice = "ssh://root@h:2"\n'
    )
    new = "SHA256:" + "n" * 43
    assert set_fixture_host_key(path, "b", new) is None
    assert set_fixture_host_key(path, "a", new) == KEY
    config = load_config(path)
    assert [f.host_key for f in config.fixtures] == [new, new]
    assert "# line 3" in path.read_text() and "# bench b" in path.read_text()
    with pytest.raises(ConfigError, match="no \\[\\[fixture\\]\\] named 'c'"):
        set_fixture_host_key(path, "c", new)


def test_a_host_key_that_is_not_a_fingerprint_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text('[[fixture]]\nname = "a"\ndevice = "ssh://root@h:1"\nhost_key = "ssh-ed25519 AAAA"\n')
    with pytest.raises(ConfigError, match=r"line 4.*station fixtures pin"):
        load_config(path)
    path.write_text('[identity]\nfirst_contact = "trust-everyone"\n')
    with pytest.raises(ConfigError, match=r"line 2.*require-inventory"):
        load_config(path)


def test_the_trust_summary_separates_the_boards_word_from_what_the_station_checked() -> None:
    steps = ["identify", "guard", "keygen", "fetch_csr", "check_csr", "push", "tls_proof"]
    claims = {c.short: c.basis for c in trust_summary(steps, host_key_in_inventory=True, soc_id="AB12")}
    assert claims["key flags (never extractable, local)"] == Basis.REPORTED
    assert claims["token's public key"] == Basis.REPORTED
    assert claims["SoC id AB12"] == Basis.REPORTED
    assert claims["holds the certified key (mutual TLS)"] == Basis.VERIFIED
    assert claims["host key = fixture inventory"] == Basis.VERIFIED
    attested = {c.short: c.basis for c in trust_summary(steps, attested=True)}
    assert attested["key flags (never extractable, local)"] == Basis.VERIFIED


def test_profile_identity_and_attestation_tables(tmp_path: Path) -> None:
    shipped = load_profile("welma-optee")
    assert shipped.identity.soc_id_required and shipped.attestation.format == "none"
    text = shipped.source.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('soc_id_in_certificate = "none"', 'soc_id_in_certificate = "CN"'))
    with pytest.raises(ConfigError, match="soc_id_in_certificate"):
        load_profile_file(bad)
    bad.write_text(text.replace('[attestation]\nformat = "none"', '[attestation]\nformat = "x509-chain"'))
    with pytest.raises(ConfigError, match="attestation.command"):
        load_profile_file(bad)


# -- x509-chain attestation ----------------------------------------------------------------------


def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool, days: int = 30) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture
def vendor():
    root_key, signer_key, token_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("Vendor Root", root_key, "Vendor Root", root_key, ca=True)
    signer = _cert("Vendor Signer 7", signer_key, "Vendor Root", root_key, ca=True)
    leaf = _cert("attested key", token_key, "Vendor Signer 7", signer_key, ca=False)
    spki = token_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return root, signer, leaf, spki, signer_key


def test_a_chain_to_the_vendor_root_certifying_the_token_key_is_accepted(vendor) -> None:
    root, signer, leaf, spki, _ = vendor
    proved = verify_x509_chain(b"noise\n" + _pem(leaf, signer), vendor_root=root, token_public_key_der=spki)
    assert "Vendor Signer 7" in proved and "Vendor Root" in proved


def test_a_chain_for_another_key_or_from_another_root_is_refused(vendor) -> None:
    root, signer, leaf, spki, signer_key = vendor
    other = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(AttestationFailed, match="another key"):
        verify_x509_chain(_pem(leaf, signer), vendor_root=root, token_public_key_der=other)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_root = _cert("Vendor Root", rogue_key, "Vendor Root", rogue_key, ca=True)
    with pytest.raises(AttestationFailed, match="not signed by"):
        verify_x509_chain(_pem(leaf, signer), vendor_root=rogue_root, token_public_key_der=spki)
    not_ca = _cert("Vendor Signer 7", signer_key, "Vendor Root", signer_key, ca=False)
    with pytest.raises(AttestationFailed):
        verify_x509_chain(_pem(leaf, not_ca), vendor_root=root, token_public_key_der=spki)
    with pytest.raises(AttestationFailed, match="no PEM certificate"):
        verify_x509_chain(
            b"Access: sensitive, never extractable\n", vendor_root=root, token_public_key_der=spki
        )


def test_identity_records_are_in_the_hash_chain_and_an_edited_soc_id_is_caught(tmp_path: Path) -> None:
    import sqlite3

    from station.audit import AuditLog
    from station.identity_log import IdentityLog
    from tests.helpers.audit import start

    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        unit = start(log, "202600000000001")
        identities = IdentityLog(log)
        identities.record_soc_id(unit.id, soc_id="0123ABCD4567EF89", source="/proc/device-tree/serial-number")
        identities.record_soc_id(unit.id, soc_id="0123ABCD4567EF89", source="/proc/device-tree/serial-number")
        identities.record_host_key_pin(
            fixture="A1",
            device="ssh://root@h:22",
            key_type="ssh-ed25519",
            fingerprint=KEY,
            previous=None,
            file="/x/station.toml",
            by="admin",
        )
        assert log.verify().ok
        assert identities.soc_id_of(unit.id).soc_id == "0123ABCD4567EF89"
        assert [pin.fingerprint for pin in identities.host_key_pins("A1")] == [KEY]
    raw = sqlite3.connect(path)
    assert (
        raw.execute("SELECT count(*) FROM unit_identity").fetchone()[0] == 1
    )  # the same id is recorded once
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE unit_identity SET soc_id = 'FFFFFFFFFFFFFFFF'")
    raw.execute("DROP TRIGGER unit_identity_is_append_only_update")  # as a determined editor would
    raw.execute("UPDATE unit_identity SET soc_id = 'FFFFFFFFFFFFFFFF'")
    raw.commit()
    raw.close()
    with AuditLog(path) as log:
        report = log.verify()
    assert not report.ok and "board identity record 1 was edited outside the station" in report.problem


def test_the_mes_record_of_a_finished_unit_carries_its_soc_id(tmp_path: Path) -> None:
    import json
    import time

    from station.audit import AuditLog
    from station.config import MesSettings, StationConfig
    from station.home import StationHome
    from station.identity_log import IdentityLog
    from station.line.handoff import LineHandOff
    from tests.helpers.audit import start

    home = StationHome(tmp_path / "home").create()
    inbox = tmp_path / "mes-inbox"
    inbox.mkdir()
    config = StationConfig(name="l1", mes=MesSettings(drop_folder=str(inbox), retry_s=0.1))
    with AuditLog(home.audit_db) as audit:
        unit = start(audit, "202600000000001")
        IdentityLog(audit).record_soc_id(
            unit.id, soc_id="0123ABCD4567EF89", source="/proc/device-tree/serial-number"
        )
        unit = audit.finish_unit(unit.id, result="failed", failed_step="keygen")
        line = LineHandOff(config=config, home=home, audit=audit)
        try:
            line.unit_finished(unit)
            deadline = time.monotonic() + 10
            while not list(inbox.glob("*.json")) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            line.close()
    (record,) = [json.loads(path.read_text()) for path in inbox.glob("*.json")]
    assert record["serial"] == "202600000000001" and record["soc_id"] == "0123ABCD4567EF89"
