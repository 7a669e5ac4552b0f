"""SSH host keys: pinned on first sight, accepted again after a reboot, refused when they change.

A board's host key is what tells the station it is still talking to the same board.  The first key
a unit sees is pinned to the unit; the same key after the reboot is accepted; a different key in
the middle of a unit (another machine answering at the board's address, or a board swapped under
the station) aborts the unit.  The board is then refused — also by a new, plain provision — until
it is re-onboarded explicitly with a reason, which pins its new key; the audit log keeps both.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from station.audit import AuditLog
from station.config import StationConfig
from station.flow import FlowEvent, Provisioner
from station.home import StationHome
from station.pki import CertificateAuthority
from station.sim.farm import Farm, SimDevice, host_key_fingerprint
from tests.helpers.kit import (
    PASSPHRASE,
    assert_audit_sound,
    assert_board_certificate_recorded,
    certificate_on_board,
    profile_copy,
    station_cli,
)

pytestmark = pytest.mark.integration

SERIAL = "202600000000401"
PROFILE = "host-keys"


def new_host_key(device: SimDevice) -> str:
    """Give the board a new SSH host key (as re-imaging it would); it shows from its next boot on."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    (device.state_dir / "ssh_host_ed25519_key").write_bytes(private)
    (device.state_dir / "ssh_host_ed25519_key.pub").write_bytes(public + b" root@re-imaged\n")
    return host_key_fingerprint(public.decode())


def provisioner(
    home: StationHome,
    ca: CertificateAuthority,
    audit: AuditLog,
    events: list[FlowEvent] | None = None,
    observer: object = None,
) -> Provisioner:
    return Provisioner(
        home=home,
        config=StationConfig(name="host-keys"),
        ca=ca,
        audit=audit,
        observer=observer or (events.append if events is not None else None),
    )  # type: ignore[arg-type]


def test_the_first_key_is_pinned_and_the_same_key_is_accepted_after_the_reboot(start_farm, sim_home):
    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(sim_home, PROFILE)
    events: list[FlowEvent] = []
    with AuditLog(sim_home.audit_db) as audit:
        result = provisioner(sim_home, ca, audit, events).provision(
            serial=SERIAL, device=device.ssh_url, profile=profile, operator="hana"
        )
    assert result.passed, result.message
    assert (result.unit.host_key_type, result.unit.host_key_fingerprint) == (
        "ssh-ed25519",
        device.host_key_fingerprint,
    )
    assert f"host key ssh-ed25519 {device.host_key_fingerprint} pinned for this unit" in [
        event.message for event in events if event.kind == "output"
    ]
    reboot = [event for event in events if event.kind == "step_finished" and event.step == "reboot"]
    assert [event.outcome for event in reboot] == ["passed"]  # reconnected to the pinned key


def test_a_key_that_changes_mid_unit_aborts_it_until_the_board_is_re_onboarded(
    start_farm, sim_farm, sim_home
):
    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(sim_home, PROFILE)
    changed: list[str] = []

    def swap_the_board_during_wipe(event: FlowEvent) -> None:
        # After the key was pinned, before the reboot: the board that comes back is "another machine".
        if event.kind == "step_started" and event.step == "wipe" and not changed:
            changed.append(new_host_key(device))

    with AuditLog(sim_home.audit_db) as audit:
        first = provisioner(sim_home, ca, audit, observer=swap_the_board_during_wipe).provision(
            serial=SERIAL, device=device.ssh_url, profile=profile, operator="hana"
        )
    assert not first.passed and first.unit.state == "aborted" and first.failed_step == "reboot"
    assert f"presented host key {changed[0]}" in first.message
    assert f"this unit pinned {device.host_key_fingerprint}" in first.message
    assert first.unit.host_key_fingerprint == device.host_key_fingerprint
    assert certificate_on_board(device) is None

    # Aborted is not resumable ...
    resumed = station_cli(
        sim_home,
        "provision",
        "--serial",
        SERIAL,
        "--device",
        device.ssh_url,
        "--profile",
        PROFILE,
        "--resume",
    )
    assert resumed.returncode == 1 and "nothing to resume" in resumed.stderr
    # ... and a plain new unit must still see the key pinned before: refused, and said how to go on.
    plain = station_cli(
        sim_home, "provision", "--serial", SERIAL, "--device", device.ssh_url, "--profile", PROFILE
    )
    assert plain.returncode == 1 and "ABORTED" in plain.stdout, plain.stdout + plain.stderr
    assert "--reprovision and a reason" in plain.stdout
    assert certificate_on_board(device) is None
    # --restart has nothing to abandon (the unit is already aborted): the same refusal.
    restart = station_cli(
        sim_home,
        "provision",
        "--serial",
        SERIAL,
        "--device",
        device.ssh_url,
        "--profile",
        PROFILE,
        "--restart",
    )
    assert restart.returncode == 1 and "ABORTED" in restart.stdout

    # Explicit re-onboarding: the administrator pins the key the board now shows in the fixture's inventory
    # (a reason alone does not override the inventory) ...
    without_pin = station_cli(
        sim_home,
        "provision",
        "--serial",
        SERIAL,
        "--device",
        device.ssh_url,
        "--profile",
        PROFILE,
        "--reprovision",
        "--reason",
        "board re-imaged: new SSH host key",
    )
    assert without_pin.returncode == 1 and f"station fixtures pin {device.name}" in without_pin.stdout
    pinned = station_cli(sim_home, "fixtures", "pin", device.name, "--expect", changed[0])
    assert pinned.returncode == 0 and f"now expects {changed[0]}" in pinned.stdout, (
        pinned.stdout + pinned.stderr
    )
    # ... then a reason, recorded; the new key is pinned for the unit; the board is enrolled.
    onboard = station_cli(
        sim_home,
        "provision",
        "--serial",
        SERIAL,
        "--device",
        device.ssh_url,
        "--profile",
        PROFILE,
        "--reprovision",
        "--reason",
        "board re-imaged: new SSH host key",
    )
    assert onboard.returncode == 0, onboard.stdout + onboard.stderr
    with AuditLog(sim_home.audit_db) as audit:
        units = sorted(
            (u for u in audit.units(serial_prefix=SERIAL) if u.serial == SERIAL), key=lambda u: u.id
        )
    assert [u.state for u in units] == ["aborted", "aborted", "aborted", "aborted", "passed"]
    assert units[0].host_key_fingerprint == device.host_key_fingerprint  # the key first pinned
    # refused at identify, before any command: nothing pinned for these units
    assert all(u.host_key_fingerprint is None for u in units[1:4])
    assert units[4].host_key_fingerprint == changed[0]  # the re-onboarded key
    assert units[4].reprovision_reason == "board re-imaged: new SSH host key"
    facts = assert_audit_sound(sim_home.audit_db)
    assert assert_board_certificate_recorded(device, facts) is not None

    # From now on the new key is the board's: a later reprovision keeps it, no reason about keys needed.
    assert next(d for d in Farm(sim_home).status()).host_key_fingerprint == changed[0]


def test_a_key_changed_while_a_unit_waits_for_retry_aborts_the_resume(start_farm, sim_farm, sim_home):
    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(sim_home, PROFILE)
    sim_farm.set_fault(device.name, "fail:--keypairgen")
    with AuditLog(sim_home.audit_db) as audit:
        failed = provisioner(sim_home, ca, audit).provision(
            serial=SERIAL, device=device.ssh_url, profile=profile, operator="hana"
        )
        assert failed.failed_step == "keygen" and failed.unit.state == "failed"
        sim_farm.set_fault(device.name, None)
        new_key = new_host_key(device)
        sim_farm.reset(device.name)  # the board is swapped for another one on the fixture
        resumed = provisioner(sim_home, ca, audit).provision(
            serial=SERIAL, device=device.ssh_url, profile=profile, operator="hana", resume=True
        )
    assert not resumed.passed and resumed.unit.state == "aborted" and resumed.failed_step == "identify"
    assert f"presented host key {new_key}" in resumed.message
    assert resumed.unit.host_key_fingerprint == device.host_key_fingerprint
