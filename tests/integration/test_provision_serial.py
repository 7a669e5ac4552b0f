"""The enrollment end to end over the serial console of real simulated Welma devices.

A board with no network path is cabled to the station's USB-serial adapter: the same steps run
over its console — log in, wipe, reboot and log in again, keygen, CSR, certificates pushed back —
and the board comes out enrolled.  Kernel chatter on the console does not disturb it; a pulled
cable or a board that stays dark gives a clear message and a unit that resumes once it is fixed.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from station.audit import AuditLog
from station.config import StationConfig
from station.flow import FlowEvent, Provisioner
from station.home import StationHome
from station.pki import CertificateAuthority
from station.profiles import DeviceProfile, load_profile, load_profile_file
from tests.helpers.deadlines import assert_within_deadline

pytestmark = pytest.mark.integration

PASSPHRASE = b"line-1 serial integration passphrase"
SERIAL = "202600000000001"
CABLE_TIMEOUT_S = 5.0


@pytest.fixture
def ca(sim_home: StationHome) -> CertificateAuthority:
    return CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE)


def provisioner(
    home: StationHome, ca: CertificateAuthority, events: list[FlowEvent] | None = None
) -> Provisioner:
    return Provisioner(
        home=home,
        config=StationConfig(name="test-station"),
        ca=ca,
        audit=AuditLog(home.audit_db),
        observer=(events.append if events is not None else None),
    )


def profile_variant(home: StationHome, name: str, **replacements: str) -> DeviceProfile:
    """welma-optee with some of its lines replaced (``old line`` → ``new line``), as a plant would copy it."""
    text = load_profile("welma-optee").source.read_text()
    text = text.replace('name = "welma-optee"', f'name = "{name}"')
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    home.profiles_dir.mkdir(parents=True, exist_ok=True)
    path = home.profiles_dir / f"{name}.toml"
    path.write_text(text)
    return load_profile_file(path)


def finished_steps(events: list[FlowEvent]) -> dict[str, str]:
    return {event.step: event.outcome for event in events if event.kind == "step_finished"}


class Cable:
    """A USB-serial cable between the station and a console: a socat relay we can pull and plug back."""

    def __init__(self, console: Path, station_end: Path) -> None:
        self.console = console
        self.station_end = station_end
        self._relay: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"serial://{self.station_end}"

    def plug(self) -> None:
        self.station_end.unlink(missing_ok=True)
        self._relay = subprocess.Popen(
            ["socat", f"PTY,link={self.station_end},raw,echo=0", f"FILE:{self.console},raw,echo=0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ready_by = time.monotonic() + CABLE_TIMEOUT_S
        while not self.station_end.is_symlink():
            assert time.monotonic() < ready_by, "socat did not create the cable's pty within 5 s"
            time.sleep(0.02)

    def pull(self) -> None:
        if self._relay is not None:
            self._relay.kill()
            self._relay.wait(timeout=CABLE_TIMEOUT_S)
            self._relay = None


@pytest.fixture
def cable(tmp_path: Path) -> Iterator[list[Cable]]:
    made: list[Cable] = []
    yield made
    for each in made:
        each.pull()


def test_a_board_without_network_is_enrolled_over_its_console(start_farm, sim_home, ca, ssh):
    (device,) = start_farm(count=1, serial_console=True)
    events: list[FlowEvent] = []
    result = provisioner(sim_home, ca, events).provision(
        serial=SERIAL,
        device=f"serial://{device.console_path}",
        profile=load_profile("welma-optee"),
        operator="alice",
    )
    assert result.passed, result.message
    steps = finished_steps(events)
    assert steps["reboot"] == "passed" and steps["tls_proof"] == "passed"
    assert all(outcome == "passed" for outcome in steps.values()), steps
    assert "board is back" in [event.message for event in events if event.kind == "output"]
    # The board really went through a second boot, and the reboot cleared its /tmp.
    assert "boot 2" in (device.state_dir / "boot.log").read_text()

    # Looked at from outside, over SSH: the certificate on the board is the one recorded.
    audit = AuditLog(sim_home.audit_db)
    unit = audit.find_unit(SERIAL)
    assert unit is not None and unit.state == "passed" and unit.device == f"serial://{device.console_path}"
    record = audit.certificate_for_unit(unit.id)
    on_board = ssh(device, "cat /var/lib/key0.cert").stdout
    assert record is not None and on_board.strip() == record.pem.strip()
    assert x509.load_pem_x509_certificate(on_board.encode()).subject.rfc4514_string() == f"CN=serial:{SERIAL}"
    assert ssh(device, "cat /var/lib/ca.cert").stdout.encode() == ca.certificate_pem
    assert ssh(device, "ls /var/lib").stdout.split().count("key0.cert.station-tmp") == 0
    # The PINs typed on the console did not land in a shell history on the board.
    assert ssh(device, "cat /root/.bash_history", check=False).returncode != 0


def test_a_serial_only_profile_skips_the_tls_proof(start_farm, sim_home, ca):
    (device,) = start_farm(count=1, serial_console=True)
    profile = profile_variant(
        sim_home, "welma-serial-only", **{"device_has_network = true": "device_has_network = false"}
    )
    events: list[FlowEvent] = []
    result = provisioner(sim_home, ca, events).provision(
        serial=SERIAL,
        device=f"serial://{device.console_path}",
        profile=profile,
        operator="alice",
    )
    assert result.passed, result.message
    assert finished_steps(events)["tls_proof"] == "skipped"


def test_kernel_messages_on_the_console_do_not_disturb_the_flow(start_farm, sim_farm, sim_home, ca):
    (device,) = start_farm(count=1, serial_console=True)
    board_side = sim_farm.layout.device(1).console_device_link
    stop = threading.Event()
    written: list[int] = []

    def kernel() -> None:
        # As printk does: whole lines, at any moment, between (or inside) the shell's own lines.
        fd = os.open(board_side, os.O_WRONLY | os.O_NOCTTY)
        try:
            while not stop.wait(0.001):
                n = len(written) + 1
                os.write(
                    fd,
                    f"[  {40 + n // 1000:3d}.{n:06d}] imx-sdma 30bd0000.dma-controller: "
                    f"external firmware not found, using ROM firmware ({n})\n".encode(),
                )
                written.append(n)
        finally:
            os.close(fd)

    chatter = threading.Thread(target=kernel, name="printk")
    chatter.start()
    try:
        result = provisioner(sim_home, ca).provision(
            serial=SERIAL,
            device=f"serial://{device.console_path}",
            profile=load_profile("welma-optee"),
            operator="alice",
        )
    finally:
        stop.set()
        chatter.join(10)
    assert result.passed, result.message
    assert len(written) > 50, "the kernel must have talked during the flow for this test to mean anything"


def test_a_cable_pulled_mid_keygen_leaves_a_resumable_unit(start_farm, sim_home, ca, cable, tmp_path):
    (device,) = start_farm(count=1, serial_console=True, keygen_delay=3)
    usb = Cable(device.console_path, tmp_path / "ttyUSB0")
    cable.append(usb)
    usb.plug()
    profile = load_profile("welma-optee")

    def pull_during_keygen(event: FlowEvent) -> None:
        if event.kind == "step_started" and event.step == "keygen":
            threading.Timer(1.0, usb.pull).start()

    started = time.monotonic()
    first = provisioner(sim_home, ca, [])
    first.observer = pull_during_keygen
    failed = first.provision(serial=SERIAL, device=usb.url, profile=profile, operator="carol")
    assert time.monotonic() - started < 30
    assert not failed.passed and failed.failed_step == "keygen"
    assert "closed in the middle of `pkcs11-tool`" in failed.message
    assert "check the cable, then press Retry" in failed.message
    assert failed.unit.state == "failed"

    usb.plug()
    events: list[FlowEvent] = []
    resumed = provisioner(sim_home, ca, events).provision(
        serial=SERIAL,
        device=usb.url,
        profile=profile,
        operator="carol",
        resume=True,
    )
    assert resumed.passed, resumed.message
    ran = [event.step for event in events if event.kind == "step_finished"]
    assert ran[:3] == ["identify", "guard", "init_token"] and "reboot" not in ran
    assert resumed.unit.id == failed.unit.id and resumed.unit.attempt == 2


def test_a_console_that_never_shows_a_prompt_fails_within_its_deadline(sim_home, ca, tmp_path):
    # A board that is not powered: the cable is there, nothing answers on it.
    dead_end, board_end = tmp_path / "ttyUSB0", tmp_path / "unpowered-board"
    pair = subprocess.Popen(
        ["socat", f"PTY,link={dead_end},raw,echo=0", f"PTY,link={board_end},raw,echo=0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready_by = time.monotonic() + CABLE_TIMEOUT_S
        while not dead_end.is_symlink():
            assert time.monotonic() < ready_by
            time.sleep(0.02)
        profile = profile_variant(
            sim_home,
            "welma-short-identify",
            **{
                "[steps.identify]\ntimeout_s = 30\nretries = 2": "[steps.identify]\ntimeout_s = 3\nretries = 1"
            },
        )
        started = time.monotonic()
        result = provisioner(sim_home, ca).provision(
            serial=SERIAL,
            device=f"serial://{dead_end}",
            profile=profile,
            operator="dave",
        )
        elapsed = time.monotonic() - started
    finally:
        pair.kill()
        pair.wait(timeout=CABLE_TIMEOUT_S)
    assert not result.passed and result.failed_step == "identify"
    assert f"the console on {dead_end} showed no login or shell prompt within 3 s" in result.message
    assert "press Retry" in result.message
    # Two attempts (identify is retried once here) of the 3 s connect deadline each, plus the station's own work.
    assert elapsed < 2 * 3 + 3


def test_a_board_that_stays_dark_after_reboot_fails_the_reboot_step_then_resumes(
    start_farm, sim_farm, sim_home, ca
):
    (device,) = start_farm(count=1, serial_console=True)
    sim_farm.set_fault(device.name, "no-boot")
    profile = profile_variant(
        sim_home, "welma-short-reboot", **{"[steps.reboot]\ntimeout_s = 90": "[steps.reboot]\ntimeout_s = 5"}
    )
    url = f"serial://{device.console_path}"
    started = time.monotonic()
    dark = provisioner(sim_home, ca).provision(serial=SERIAL, device=url, profile=profile, operator="erin")
    assert not dark.passed and dark.failed_step == "reboot"
    # The reboot step's 5 s deadline, and the steps before it on a console.
    assert_within_deadline(started, 5, "a board that stays dark", slack_s=5)
    assert dark.message.startswith(
        f"Device on {device.console_path} did not show its login prompt within 5 s after reboot"
    )
    assert "check power and the console cable, then press Retry" in dark.message

    sim_farm.set_fault(device.name, None)  # the technician power-cycles the board
    events: list[FlowEvent] = []
    resumed = provisioner(sim_home, ca, events).provision(
        serial=SERIAL,
        device=url,
        profile=profile,
        operator="erin",
        resume=True,
    )
    assert resumed.passed, resumed.message
    assert finished_steps(events)["reboot"] == "passed"
