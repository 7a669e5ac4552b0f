"""OP-TEE: the station against a real OP-TEE board (`station sim up --kind optee`, a QEMU VM).

One VM runs TF-A, OP-TEE OS 4.10.0 with its PKCS#11 TA, Debian's u-boot, kernel and userland; it is
booted once for this module (the image is built once and cached in ~/.cache/welma-station/optee).
The tests run in file order on that one board: a unit over SSH with the TLS proof through the
dial address, the tutorial's step 5, a reboot of the VM, a unit over the real serial console, a
reset that leaves the SSH connection open, a wrong SO PIN, a board booted without the TA, and
`sim down` leaving nothing behind.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
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
from station.sim.farm import Farm, SimDevice
from station.sim.optee_farm import GUEST_STATION_ADDRESS, HOST_STATION_ADDRESS
from station.sim.process import ProcessRef
from station.sim.silicon import read_soc_id
from tests.helpers.farm import free_port
from tests.helpers.processes import wait_for_s_server

# The OP-TEE tests: one marker to select (-m optee) or leave out (-m "not optee") the QEMU part of CI.
pytestmark = [pytest.mark.integration, pytest.mark.optee, pytest.mark.timeout(900)]

PASSPHRASE = b"optee integration passphrase"
MODULE = "/usr/lib/libckteec.so.0"
SSH_TIMEOUT_S = 120.0
BACK_TIMEOUT_S = 180.0


class Board:
    """The module's OP-TEE board, its station home, CA and the station settings that reach it."""

    def __init__(self, home: StationHome, farm: Farm, device: SimDevice, tls_port: int) -> None:
        self.home = home
        self.farm = farm
        self.device = device
        self.tls_port = tls_port
        self.ca = CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE)
        self.config = StationConfig(
            name="optee-station",
            tls_listen_address=HOST_STATION_ADDRESS,
            tls_dial_address=GUEST_STATION_ADDRESS,
            tls_port=tls_port,
        )

    def ssh(
        self, command: str, *, check: bool = True, timeout: float = SSH_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.home.ssh_key),
            "-o",
            f"UserKnownHostsFile={self.home.root / 'test_known_hosts'}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=60",
            "-o",
            "LogLevel=ERROR",
            "-p",
            str(self.device.port),
            f"root@{self.device.address}",
            command,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"ssh {command!r} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def provision(
        self,
        serial: str,
        *,
        device: str | None = None,
        profile: DeviceProfile | None = None,
        events: list[FlowEvent] | None = None,
    ):  # noqa: ANN201 - UnitResult
        provisioner = Provisioner(
            home=self.home,
            config=self.config,
            ca=self.ca,
            audit=AuditLog(self.home.audit_db),
            observer=(events.append if events is not None else None),
        )
        # The board keeps the previous test's certificate until it reboots: enrol it again on purpose.
        return provisioner.provision(
            serial=serial,
            device=device or self.device.ssh_url,
            profile=profile or load_profile("welma-optee"),
            operator="alice",
            reprovision_reason="next OP-TEE test",
        )

    def boot_id(self) -> str:
        # An emulated board on a loaded machine can miss one connection: ask twice.
        done = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False)
        if done.returncode != 0:
            done = self.ssh("cat /proc/sys/kernel/random/boot_id")
        return done.stdout.strip()

    def wait_back(self, old_boot_id: str) -> str:
        deadline = time.monotonic() + BACK_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                done = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=90)
            except subprocess.TimeoutExpired:
                continue
            if done.returncode == 0 and done.stdout.strip() not in ("", old_boot_id):
                return done.stdout.strip()
            time.sleep(1.0)
        raise AssertionError(
            f"the OP-TEE board did not come back with a new boot id within {BACK_TIMEOUT_S:g} s"
        )

    def soc_id_shown(self) -> bytes:
        """What the board shows as its SoC id: the device tree's serial-number, raw (NUL-terminated)."""
        done = subprocess.run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-i",
                str(self.home.ssh_key),
                "-o",
                f"UserKnownHostsFile={self.home.root / 'test_known_hosts'}",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=60",
                "-o",
                "LogLevel=ERROR",
                "-p",
                str(self.device.port),
                f"root@{self.device.address}",
                "cat /proc/device-tree/serial-number",
            ],
            capture_output=True,
            timeout=SSH_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def reboot(self) -> None:
        before = self.boot_id()
        self.ssh("reboot", check=False)
        self.wait_back(before)


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    home = StationHome(tmp_path_factory.mktemp("optee") / "home").create()
    farm = Farm(home)
    tls_port = free_port(1)
    try:
        (device,) = farm.up(
            1, kind="optee", port=free_port(1), tls_proof_port=tls_port, progress=lambda _: None
        )
        yield Board(home, farm, device, tls_port)
    finally:
        farm.down()


def steps_of(events: list[FlowEvent]) -> dict[str, FlowEvent]:
    return {event.step: event for event in events if event.kind == "step_finished"}


def test_a_unit_over_ssh_passes_with_the_tls_proof_through_the_dial_address(board: Board) -> None:
    events: list[FlowEvent] = []
    result = board.provision("202600000000101", events=events)
    assert result.passed, result.message
    steps = steps_of(events)
    assert all(event.outcome == "passed" for event in steps.values()), {
        k: v.outcome for k, v in steps.items()
    }
    proof = [e.message for e in events if e.kind == "output" and e.step == "tls_proof"]
    assert any("Verify return code: 0 (ok)" in message for message in proof), proof

    # The certificate on the board is ours and verifies against the CA.
    on_board = board.ssh("cat /var/lib/key0.cert").stdout
    cert_file = board.home.root / "key0.cert"
    cert_file.write_text(on_board)
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(board.ca.certificate_path),
            "-purpose",
            "sslclient",
            str(cert_file),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr
    assert (
        x509.load_pem_x509_certificate(on_board.encode()).subject.rfc4514_string()
        == "CN=serial:202600000000101"
    )

    # The real TA: three fixed slots, token serial 0000000000000000, key0 sensitive and never extractable.
    slots = board.ssh(f"pkcs11-tool --module {MODULE} --list-slots").stdout
    assert re.search(r"serial num\s*:\s*0{16}\s*$", slots, re.M) and "OP-TEE PKCS11 TA" in slots, slots
    objects = board.ssh(f"pkcs11-tool --module {MODULE} --list-objects --login --pin 0000").stdout
    private = objects[objects.index("Private Key Object") :]
    assert "label:      key0" in private
    assert "never extractable" in private and "sensitive" in private
    assert re.search(r"/var/lib/tee", board.ssh("ls -d /var/lib/tee && ls /var/lib/tee").stdout)
    assert "dirf.db" in board.ssh("ls /var/lib/tee").stdout


def test_the_tutorials_step_5_passes_against_a_tls_server_on_the_station(board: Board) -> None:
    env = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE.decode())
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"{HOST_STATION_ADDRESS}:{board.tls_port}",
            "-key",
            str(board.ca.system_key_path),
            "-cert",
            str(board.ca.system_certificate_path),
            "-pass",
            "env:STATION_CA_PASSPHRASE",
            "-verifyCAfile",
            str(board.ca.certificate_path),
            "-Verify",
            "1",
            "-naccept",
            "1",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        seen = wait_for_s_server(server)
        client = board.ssh(
            f"PKCS11_MODULE_PATH={MODULE} openssl s_client -connect {GUEST_STATION_ADDRESS}:{board.tls_port} "
            "-engine pkcs11 -keyform engine -key 'pkcs11:object=key0;pin-value=0000' -CAfile /var/lib/ca.cert "
            "-cert /var/lib/key0.cert -verify_return_error </dev/null",
            check=False,
        )
        assert client.returncode == 0, client.stdout + client.stderr
        assert "Verify return code: 0 (ok)" in client.stdout
        rest, _ = server.communicate(timeout=30)
        server_out = seen + rest
    finally:
        server.kill()
        server.wait(timeout=10)
    assert "serial:202600000000101" in server_out


def test_the_board_shows_its_persistent_soc_id_in_the_device_tree(board: Board) -> None:
    soc_id = read_soc_id(board.device.state_dir)
    assert re.fullmatch(r"[0-9A-F]{16}", soc_id)
    # As a real device tree has it: the string and its terminating NUL.
    assert board.soc_id_shown() == soc_id.encode() + b"\0"


def test_token_and_key_survive_a_reboot_of_the_vm(board: Board) -> None:
    host_key = board.device.host_key_fingerprint
    soc_id = board.soc_id_shown()
    board.reboot()
    # The SoC id is fuses: the same after a real reboot of the VM.
    assert board.soc_id_shown() == soc_id == read_soc_id(board.device.state_dir).encode() + b"\0"
    objects = board.ssh(f"pkcs11-tool --module {MODULE} --list-objects --login --pin 0000").stdout
    assert "label:      key0" in objects and "never extractable" in objects
    assert (
        next(d for d in board.farm.status() if d.name == board.device.name).host_key_fingerprint == host_key
    )
    # The host key the VM shows is still the one recorded (strict known_hosts from the first test).
    assert board.ssh("true").returncode == 0


def test_a_unit_over_the_real_serial_console_passes(board: Board) -> None:
    console = board.device.console_path
    assert console is not None and Path(os.readlink(console)).as_posix().startswith("/dev/pts/")
    events: list[FlowEvent] = []
    result = board.provision("202600000000102", device=f"serial://{console}", events=events)
    assert result.passed, result.message
    steps = steps_of(events)
    assert all(event.outcome == "passed" for event in steps.values()), {
        k: v.outcome for k, v in steps.items()
    }
    # It was the VM's real console: the kernel and a real getty spoke on it.
    said = (board.device.state_dir / "console.log").read_text(errors="replace")
    assert "login:" in said and "welma-init: ready" in said


def test_a_reset_that_leaves_the_connection_open_is_seen_as_down_within_seconds(board: Board) -> None:
    board.farm.set_fault(board.device.name, "abrupt-reset")
    try:
        events: list[FlowEvent] = []
        result = board.provision("202600000000103", events=events)
    finally:
        board.farm.set_fault(board.device.name, None)
    assert result.passed, result.message
    reboot = steps_of(events)["reboot"]
    assert reboot.outcome == "passed"
    # Without the liveness probe the step waited 30 s for a drop that never came, then failed.  Down
    # is seen within a few seconds; the rest is the VM booting again (10-25 s under TCG).
    assert reboot.duration_s < 30.0 + 20.0
    assert reboot.attempt == 1


def test_a_wrong_so_pin_is_reported_as_the_real_ckr_pin_incorrect_in_words(board: Board) -> None:
    profile_text = (
        load_profile("welma-optee")
        .source.read_text()
        .replace('name = "welma-optee"', 'name = "welma-optee-wrong-so-pin"')
    )
    # init_pin logs in as SO with another SO PIN than the one the token was just initialised with.
    profile_text = profile_text.replace(
        '"--init-pin", "--label", "{token_label}", "--login", "--so-pin", "{so_pin}"',
        '"--init-pin", "--label", "{token_label}", "--login", "--so-pin", "87654321"',
    )
    board.home.profiles_dir.mkdir(parents=True, exist_ok=True)
    path = board.home.profiles_dir / "welma-optee-wrong-so-pin.toml"
    path.write_text(profile_text)
    result = board.provision("202600000000104", profile=load_profile_file(path))
    assert not result.passed
    assert result.failed_step == "init_pin"
    assert "CKR_PIN_INCORRECT" in result.message
    assert "the token refused the PIN" in result.message


def test_a_board_booted_without_the_pkcs11_ta_fails_clearly_at_identify(board: Board) -> None:
    board.farm.set_fault(board.device.name, "no-ta")
    try:
        board.reboot()
        assert board.ssh("ls /lib/optee_armtz/").stdout.strip() == ""
        result = board.provision("202600000000105")
    finally:
        board.farm.set_fault(board.device.name, None)
    assert not result.passed
    assert result.failed_step == "identify"
    assert "TA not found" in result.message and "PKCS#11 TA" in result.message


def test_sim_reset_makes_the_board_factory_fresh_and_keeps_its_host_key(board: Board) -> None:
    before = board.boot_id()
    board.farm.reset(board.device.name)  # also boots it again with the TA (the no-ta fault is cleared)
    assert board.boot_id() != before
    slots = board.ssh(f"pkcs11-tool --module {MODULE} --list-slots").stdout
    assert "token0" not in slots and "uninitialized" in slots
    # (/var/lib/tee is not empty: opening the fresh TA wrote its own files, dirf.db and one per token.)
    assert board.ssh("test -e /var/lib/key0.cert || echo no-certificate").stdout.split() == ["no-certificate"]
    # Factory-fresh storage, same silicon: the SoC id is unchanged.
    assert board.soc_id_shown() == read_soc_id(board.device.state_dir).encode() + b"\0"
    # Same host key: accept-new refuses a changed key for a host it knows, so the ssh above proves it.
    assert next(d for d in board.farm.status() if d.name == board.device.name).state == "up"


def test_sim_down_kills_every_qemu_and_leaves_nothing_behind(board: Board) -> None:
    settings = (board.home.sim_dir / "optee" / "farm.json").read_text()
    pid = int(re.search(r'"pid": (\d+)', settings).group(1))  # type: ignore[union-attr]
    qemu = ProcessRef.of(pid)
    assert qemu is not None and "qemu-system-aarch64" in Path(f"/proc/{pid}/cmdline").read_text()
    board.farm.down()
    assert not qemu.alive()
    with socket.socket() as probe:
        assert probe.connect_ex((board.device.address, board.device.port)) != 0
    state = board.device.state_dir
    assert (
        not (state / "console").exists()
        and not (state / "qmp.sock").exists()
        and not (state / "qemu.pid").exists()
    )
    assert not (board.home.sim_dir / "fixtures.toml").exists()
    # No QEMU anywhere still uses this home's disks.
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                assert str(board.home.root) not in (proc / "cmdline").read_text(errors="replace")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    assert [d.state for d in board.farm.status()] == ["down"]
