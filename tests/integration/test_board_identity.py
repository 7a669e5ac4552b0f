"""Board identity on real simulated boards: the silicon and the host key tell which board is on the fixture.

A board enrolled under one serial and scanned again under another label is refused by its SoC unique
id (and, where the profile reads none, by its host key); a factory-fresh board put on the fixture
(`station sim swap`) then takes the second serial.  A fixture whose inventory holds another host key
is aborted before any command runs, until an administrator pins the key the board answers with.
"""

from __future__ import annotations

import io
import json

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from station.audit import AuditLog
from station.config import StationConfig, load_config
from station.flow import FlowEvent, Provisioner
from station.home import StationHome
from station.identity_log import IdentityLog
from station.pki import CertificateAuthority
from station.profiles import DeviceProfile
from station.sim.farm import Farm
from tests.helpers.kit import (
    PASSPHRASE,
    assert_audit_sound,
    certificate_on_board,
    profile_copy,
    station_cli,
)

pytestmark = pytest.mark.integration

FIRST, SECOND = "202600000001701", "202600000001702"
WRONG_KEY = "SHA256:" + "A" * 43


def provision(
    home: StationHome,
    audit: AuditLog,
    ca: CertificateAuthority,
    profile: DeviceProfile,
    serial: str,
    device: str,
    events: list[FlowEvent] | None = None,
    **options: object,
):
    provisioner = Provisioner(
        home=home,
        config=StationConfig(name="identity"),
        ca=ca,
        audit=audit,
        observer=events.append if events is not None else None,
    )
    return provisioner.provision(serial=serial, device=device, profile=profile, operator="ines", **options)  # type: ignore[arg-type]


def subject_serial_number(pem: bytes) -> str | None:
    values = x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else None


def test_the_same_board_under_a_second_label_is_refused_by_its_soc_id_until_another_board_is_put_there(
    start_farm, sim_farm: Farm, sim_home: StationHome
):
    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(
        sim_home,
        "identity",
        replace={'soc_id_in_certificate = "none"': 'soc_id_in_certificate = "subject-serialNumber"'},
    )
    with AuditLog(sim_home.audit_db) as audit:
        events: list[FlowEvent] = []
        first = provision(sim_home, audit, ca, profile, FIRST, device.ssh_url, events)
        assert first.passed, first.message
        # Recorded per unit, shown while it runs, and in the certificate's subject as the profile asks.
        assert IdentityLog(audit).soc_id_of(first.unit.id).soc_id == device.soc_id
        assert any(f"SoC unique id {device.soc_id} (reported by the board" in e.message for e in events)
        on_board = certificate_on_board(device)
        assert on_board is not None and subject_serial_number(on_board) == device.soc_id

        # The same board, scanned under another label: refused by the silicon, nothing done to it.
        second = provision(sim_home, audit, ca, profile, SECOND, device.ssh_url)
        assert not second.passed and second.failed_step == "guard" and second.unit.state == "aborted"
        assert f"SoC id {device.soc_id}" in second.message and f"enrolled as serial {FIRST}" in second.message
        assert SECOND in second.message and "set the board aside" in second.message
        assert audit.certificate_for_unit(second.unit.id) is None
        assert certificate_on_board(device) == on_board  # the first enrollment is untouched

        # A factory-fresh board on the fixture: new silicon, new host key, empty storage.
        fresh = sim_farm.swap(device.name)
        assert fresh.soc_id != device.soc_id and fresh.host_key_fingerprint != device.host_key_fingerprint
        assert certificate_on_board(fresh) is None
        again = provision(sim_home, audit, ca, profile, SECOND, fresh.ssh_url)
        assert again.passed, again.message
        assert subject_serial_number(certificate_on_board(fresh)) == fresh.soc_id

        # The exports carry the SoC id of each unit.
        out = io.StringIO()
        audit.export_jsonl(out)
        rows = {
            (row["serial"], row["state"]): row["soc_id"]
            for row in map(json.loads, out.getvalue().splitlines())
        }
        assert rows[(FIRST, "passed")] == device.soc_id and rows[(SECOND, "passed")] == fresh.soc_id
        assert rows[(SECOND, "aborted")] == device.soc_id
    assert_audit_sound(sim_home.audit_db)


def test_where_no_soc_id_is_read_the_host_key_catches_the_swapped_label(start_farm, sim_home: StationHome):
    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(
        sim_home,
        "no-soc-id",
        replace={
            "soc_id_required = true": 'soc_id_required = false\nsoc_id_command = ["cat", "/nonexistent/soc-id"]'
        },
    )
    with AuditLog(sim_home.audit_db) as audit:
        assert provision(sim_home, audit, ca, profile, FIRST, device.ssh_url).passed
        second = provision(sim_home, audit, ca, profile, SECOND, device.ssh_url)
    assert not second.passed and second.unit.state == "aborted" and second.failed_step == "guard"
    assert f"host key {device.host_key_fingerprint} belongs to serial {FIRST}" in second.message
    assert "swapped label" in second.message


@pytest.mark.parametrize("how", ["read fails", "empty"])
def test_a_board_that_gives_no_soc_id_is_stopped_at_identify_with_a_clear_error(
    how: str, start_farm, sim_farm: Farm, sim_home: StationHome
):
    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    if how == "read fails":
        profile = profile_copy(sim_home, "soc-fails")
        sim_farm.set_fault(device.name, "fail:serial.number")  # every read of the id fails on the board
    else:
        profile = profile_copy(
            sim_home,
            "soc-empty",
            replace={
                "soc_id_required = true": 'soc_id_required = true\nsoc_id_command = ["cat", "/dev/null"]'
            },
        )
    with AuditLog(sim_home.audit_db) as audit:
        result = provision(sim_home, audit, ca, profile, FIRST, device.ssh_url)
    assert not result.passed and result.failed_step == "identify"
    assert "did not give its SoC unique id" in result.message
    assert ("exit 2" in result.message) if how == "read fails" else ("/dev/null: empty" in result.message)
    assert "set the board aside" in result.message.lower()
    assert certificate_on_board(device) is None


def test_a_fixture_with_a_wrong_host_key_is_aborted_before_any_command_until_it_is_pinned(
    start_farm, sim_farm: Farm, sim_home: StationHome
):
    (device,) = start_farm(1)
    CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile_copy(sim_home, "inventory")
    sim_home.config_file.write_text(
        '# the line\'s fixtures\n[station]\nname = "line-3"\n\n'
        f'[[fixture]]\nname = "bench-1"\ndevice = "{device.ssh_url}"\nhost_key = "{WRONG_KEY}"  # typed by hand\n'
    )
    # Any command reaching the board would fail: the refusal must come before the first one.
    sim_farm.set_fault(device.name, "fail:.")
    refused = station_cli(
        sim_home,
        "provision",
        "--serial",
        FIRST,
        "--device",
        device.ssh_url,
        "--fixture",
        "bench-1",
        "--profile",
        "inventory",
    )
    assert refused.returncode == 1 and "ABORTED" in refused.stdout, refused.stdout + refused.stderr
    assert device.host_key_fingerprint in refused.stdout and WRONG_KEY in refused.stdout
    assert (
        "station fixtures pin bench-1" in refused.stdout and "nothing was run on the board" in refused.stdout
    )
    with AuditLog(sim_home.audit_db) as audit:
        unit = audit.units(serial_prefix=FIRST)[0]
        assert (
            unit.state == "aborted" and unit.failed_step == "identify" and unit.host_key_fingerprint is None
        )
        assert [step.step for step in audit.steps(unit.id)] == ["identify"]
        assert audit.certificate_for_unit(unit.id) is None
    sim_farm.set_fault(device.name, None)

    # The administrator checked the key on the board's console and pins it.
    wrong = station_cli(sim_home, "fixtures", "pin", "bench-1", "--expect", WRONG_KEY)
    assert wrong.returncode == 1 and "nothing was pinned" in wrong.stderr
    pinned = station_cli(sim_home, "fixtures", "pin", "bench-1", "--expect", device.host_key_fingerprint)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    text = sim_home.config_file.read_text()
    assert f'host_key = "{device.host_key_fingerprint}"' in text and WRONG_KEY not in text
    assert "# the line's fixtures" in text  # the file was edited, not rewritten
    assert load_config(sim_home.config_file).fixtures[0].host_key == device.host_key_fingerprint
    listing = station_cli(sim_home, "fixtures", "list")
    assert "bench-1" in listing.stdout and device.host_key_fingerprint in listing.stdout
    with AuditLog(sim_home.audit_db) as audit:
        (pin,) = IdentityLog(audit).host_key_pins("bench-1")
        assert (pin.fingerprint, pin.previous_fingerprint) == (device.host_key_fingerprint, WRONG_KEY)

    passed = station_cli(
        sim_home,
        "provision",
        "--serial",
        FIRST,
        "--device",
        device.ssh_url,
        "--fixture",
        "bench-1",
        "--profile",
        "inventory",
    )
    assert passed.returncode == 0 and "PASS" in passed.stdout, passed.stdout + passed.stderr
    with AuditLog(sim_home.audit_db) as audit:
        unit = audit.find_unit(FIRST)
        identify = next(step for step in audit.steps(unit.id) if step.step == "identify")
    assert (
        f"verified by the station: host key {device.host_key_fingerprint} is the one fixture bench-1"
        in identify.excerpt
    )
    assert_audit_sound(sim_home.audit_db)


def test_require_inventory_refuses_a_fixture_nobody_pinned(start_farm, sim_home: StationHome):
    (device,) = start_farm(1)
    CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile_copy(sim_home, "inventory")
    sim_home.config_file.write_text(
        '[identity]\nfirst_contact = "require-inventory"\n\n'
        f'[[fixture]]\nname = "bench-2"\ndevice = "{device.ssh_url}"\n'
    )
    refused = station_cli(
        sim_home,
        "provision",
        "--serial",
        FIRST,
        "--device",
        device.ssh_url,
        "--fixture",
        "bench-2",
        "--profile",
        "inventory",
    )
    assert refused.returncode == 1 and "ABORTED" in refused.stdout
    assert (
        "no host key in the inventory" in refused.stdout and "station fixtures pin bench-2" in refused.stdout
    )
    assert certificate_on_board(device) is None


def _attestation_chain(token_spki_der: bytes, signer_key, root_key) -> bytes:
    """What a vendor's secure element would print: leaf (certifying the key) then the vendor's signer."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes, serialization

    now = datetime.now(UTC)

    def cert(subject: str, public_key, issuer: str, key, ca: bool) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )

    leaf = cert(
        "token key", serialization.load_der_public_key(token_spki_der), "SE Signer", signer_key, False
    )
    signer = cert("SE Signer", signer_key.public_key(), "SE Vendor Root", root_key, True)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, signer))


def test_a_profile_with_attestation_signs_only_a_key_the_vendor_chain_certifies(
    start_farm, sim_farm: Farm, sim_home: StationHome, tmp_path
):
    import base64
    import datetime as dt
    import subprocess

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    root_key, signer_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SE Vendor Root")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SE Vendor Root")]))
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    vendor_root = tmp_path / "vendor-root.pem"
    vendor_root.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    profile = profile_copy(
        sim_home,
        "attested",
        replace={
            '[attestation]\nformat = "none"': '[attestation]\nformat = "x509-chain"\ncommand = ["cat", "/var/lib/attestation.pem"]\n'
            f'vendor_root = "{vendor_root}"'
        },
    )
    lie = {"on": False}

    def ssh(board, command: str) -> subprocess.CompletedProcess[str]:
        # The plain OpenSSH client; the board is replaced below, so no known_hosts (this is the test's back door).
        return subprocess.run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-i",
                str(sim_home.ssh_key),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "BatchMode=yes",
                "-p",
                str(board.port),
                f"root@{board.address}",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )

    def secure_element_attests(event: FlowEvent) -> None:
        # Between fetching the token key and checking the CSR, the "secure element" certifies the key it
        # made — or, on a lying board, some other key.
        if event.kind == "step_started" and event.step == "check_csr":
            public = base64.b64decode(ssh(device, "base64 -w0 /tmp/key0.pub").stdout)
            spki = serialization.load_der_public_key(public).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if lie["on"]:
                spki = (
                    ec.generate_private_key(ec.SECP256R1())
                    .public_key()
                    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
                )
            chain = _attestation_chain(spki, signer_key, root_key).decode()
            ssh(device, f"printf '%s' '{chain}' > /var/lib/attestation.pem")

    with AuditLog(sim_home.audit_db) as audit:
        provisioner = Provisioner(
            home=sim_home,
            config=StationConfig(name="identity"),
            ca=ca,
            audit=audit,
            observer=secure_element_attests,
        )
        honest = provisioner.provision(serial=FIRST, device=device.ssh_url, profile=profile, operator="ines")
        assert honest.passed, honest.message
        check = next(s for s in audit.steps(honest.unit.id) if s.step == "check_csr")
        assert "verified by the station: the token key is attested by CN=SE Signer" in check.excerpt

        device = sim_farm.swap(device.name)
        lie["on"] = True
        lying = provisioner.provision(serial=SECOND, device=device.ssh_url, profile=profile, operator="ines")
    assert not lying.passed and lying.failed_step == "check_csr" and lying.unit.state == "aborted"
    assert (
        "certifies another key than the token's key" in lying.message
        and "nothing was signed" in lying.message
    )
    assert certificate_on_board(device) is None


def test_a_relabelled_board_is_accepted_only_when_re_provisioned_with_a_reason_which_is_audited(
    start_farm, sim_home: StationHome
):
    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(sim_home, "relabel")
    reason = "label reprinted: the first one was damaged"
    with AuditLog(sim_home.audit_db) as audit:
        assert provision(sim_home, audit, ca, profile, FIRST, device.ssh_url).passed
        assert not provision(sim_home, audit, ca, profile, SECOND, device.ssh_url).passed
        relabelled = provision(
            sim_home, audit, ca, profile, SECOND, device.ssh_url, reprovision_reason=reason
        )
        assert relabelled.passed, relabelled.message
        assert relabelled.unit.reprovision_reason == reason
        guard = next(s for s in audit.steps(relabelled.unit.id) if s.step == "guard")
        assert (
            f"enrolled as serial {FIRST}" in guard.excerpt
            and f"accepted: re-provisioned with reason {reason!r}" in guard.excerpt
        )
    assert_audit_sound(sim_home.audit_db)


def test_a_simulated_boards_soc_id_survives_reboot_reset_and_restart_and_only_swap_replaces_it(
    start_farm, sim_farm: Farm, sim_home: StationHome, ssh, wait_for_state
):
    (device,) = start_farm(1)

    def board_soc_id(board) -> str:
        shown = ssh(board, "cat /sys/firmware/devicetree/base/serial-number", strict=False).stdout
        assert shown.endswith("\x00")  # a device-tree string, as on a real board
        return shown.rstrip("\x00")

    assert board_soc_id(device) == device.soc_id and len(device.soc_id) == 16
    ssh(device, "reboot", check=False)
    wait_for_state(device.name, "up")
    assert board_soc_id(device) == device.soc_id
    reset = station_cli(sim_home, "sim", "reset", device.name)
    assert reset.returncode == 0, reset.stderr
    assert board_soc_id(device) == device.soc_id
    (device,) = start_farm(1)  # down and up again
    assert board_soc_id(device) == device.soc_id

    swapped = station_cli(sim_home, "sim", "swap", device.name)
    assert swapped.returncode == 0, swapped.stderr
    (fresh,) = Farm(sim_home).status()
    assert fresh.soc_id != device.soc_id and fresh.soc_id in swapped.stdout
    assert (
        fresh.host_key_fingerprint != device.host_key_fingerprint
        and fresh.host_key_fingerprint in swapped.stdout
    )
    assert f'host_key = "{fresh.host_key_fingerprint}"' in (sim_home.sim_dir / "fixtures.toml").read_text()
    status = station_cli(sim_home, "sim", "status")
    assert "SOC ID" in status.stdout and fresh.soc_id in status.stdout
    new_ssh = station_cli(sim_home, "fixtures", "list")
    assert fresh.host_key_fingerprint in new_ssh.stdout


@pytest.mark.parametrize("link", ["ssh", "serial"])
def test_a_unit_resumed_on_another_board_is_stopped_at_identify(
    link: str, start_farm, sim_farm: Farm, sim_home: StationHome
):
    (device,) = start_farm(1, serial_console=link == "serial")
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(
        sim_home,
        "resume-elsewhere",
        steps={
            "identify": (15.0, 1),
            "guard": (10.0, 0),
            "wipe": (10.0, 0),
            "reboot": (30.0, 0),
            "init_token": (10.0, 0),
            "init_pin": (10.0, 0),
            "keygen": (10.0, 0),
            "csr": (10.0, 0),
            "fetch_csr": (10.0, 1),
            "check_csr": (5.0, 0),
            "sign": (5.0, 0),
            "push": (10.0, 1),
            "tls_proof": (10.0, 1),
        },
    )
    url = device.ssh_url if link == "ssh" else f"serial://{device.console_path}"
    sim_farm.set_fault(device.name, "fail:--keypairgen")
    with AuditLog(sim_home.audit_db) as audit:
        failed = provision(sim_home, audit, ca, profile, FIRST, url)
        assert failed.failed_step is not None and failed.unit.state == "failed", failed.message
        sim_farm.set_fault(device.name, None)
        fresh = sim_farm.swap(device.name)  # the label now sits on another board
        resumed = provision(sim_home, audit, ca, profile, FIRST, url, resume=True)
    assert not resumed.passed and resumed.failed_step == "identify"
    if link == "ssh":
        # The board's host key changed too: the link refuses it before the SoC id is even read.
        assert "host key" in resumed.message and fresh.host_key_fingerprint in resumed.message
    else:
        # A console has no host key: the silicon tells the boards apart.
        assert f"its SoC id was {device.soc_id}" in resumed.message and fresh.soc_id in resumed.message
    assert certificate_on_board(fresh) is None


def test_in_the_engine_a_units_worker_reads_records_and_certifies_the_soc_id_through_the_station(
    start_farm, sim_farm: Farm, sim_home: StationHome
):
    """The station's own path: each unit in a worker process, which asks the station (its parent) for every
    identity record and check — the same refusal and the same certificate as in one process."""
    from station.engine import Ending, Scheduler, UnitJob

    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(
        sim_home,
        "identity-engine",
        replace={'soc_id_in_certificate = "none"': 'soc_id_in_certificate = "subject-serialNumber"'},
    )
    events: list[FlowEvent] = []

    def run(serial: str, url: str):
        scheduler = Scheduler(
            home=sim_home, config=StationConfig(name="identity"), ca=ca, observer=events.append
        )
        (outcome,) = scheduler.run(
            [UnitJob(serial=serial, device=url, profile=profile, operator="ines", fixture=device.name)]
        )
        return outcome

    first = run(FIRST, device.ssh_url)
    assert first.kind == Ending.PASSED, first.message
    assert {event.pid for event in events if event.kind == "step_started"} - {None} != set()
    on_board = certificate_on_board(device)
    assert on_board is not None and subject_serial_number(on_board) == device.soc_id

    second = run(SECOND, device.ssh_url)
    assert second.kind == Ending.ABORTED and second.failed_step == "guard", second.message
    assert f"SoC id {device.soc_id}" in second.message and f"enrolled as serial {FIRST}" in second.message

    fresh = sim_farm.swap(device.name)
    again = run(SECOND, fresh.ssh_url)
    assert again.kind == Ending.PASSED, again.message
    assert subject_serial_number(certificate_on_board(fresh)) == fresh.soc_id
    with AuditLog(sim_home.audit_db) as audit:
        assert audit.unit_soc_id(first.unit_id).soc_id == device.soc_id
        assert audit.unit_soc_id(second.unit_id).soc_id == device.soc_id
        assert audit.unit_soc_id(again.unit_id).soc_id == fresh.soc_id
    assert_audit_sound(sim_home.audit_db)
