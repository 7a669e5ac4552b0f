"""Simulated boards of the ``optee`` kind: QEMU virtual machines running the real OP-TEE stack.

``station sim up --kind optee`` boots each board as one QEMU (TCG) process: TF-A, OP-TEE OS 4.10.0
with its PKCS#11 TA, Debian's u-boot, kernel and userland (built once and cached by
:mod:`station.sim.optee_build`).  The contract is the SoftHSM2 kind's: SSH on a loopback address
and port, a fixtures entry per board, a serial console pty (the VM's real console), a real
``reboot`` that keeps the host key and the secure storage, ``status``, ``reset`` and ``down``::

    HOME/sim/optee/
      farm.json                         what `up` asked for and the QEMU processes it started
      devices/optee-01/
        ssh_host_ed25519_key[.pub]      the board's host key (on its read-only board disk)
        soc_id                          the board's SoC unique id (station.sim.silicon: kept across reboots,
                                        `sim reset` and down/up, like fuses)
        board.img                       ext4 "welma-board": hostname, host key, authorized_keys, soc_id
                                        (shown by the guest as the device tree's serial-number)
        tee.img                         ext4 "welma-tee": the persistent /var/lib (secure storage /var/lib/tee,
                                        the certificates); recreated empty by `sim reset`
        faults.img                      raw: the faults armed on the board (read by its scripts)
        console -> /dev/pts/N           the serial console (ttyAMA0); console.log keeps what it said
        secure.log                      OP-TEE's own (secure-world) console
        qemu.pid, qmp.sock, qemu.log    the QEMU process, its control socket, its messages

QEMU's user networking is restricted (``restrict=on``): the board reaches nothing but its
forwards — SSH from ``127.0.0.N:PORT`` to its port 22, and the station's TLS-proof listener at
``127.0.0.1:TLS_PORT``, which the board dials as ``10.0.2.100:TLS_PORT`` (set ``[tls_proof]
dial_address`` and ``port`` in station.toml accordingly; ``up`` prints them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from station.errors import StationError
from station.home import StationHome
from station.sim.fixtures import write_fixtures
from station.sim.layout import DEFAULT_PORT, FIRST_HOST_OCTET
from station.sim.optee_build import RUN_TOOLS, BoardImage, ensure_built, missing_tools
from station.sim.process import ProcessRef, wait_gone
from station.sim.settings_file import load_settings, save_settings
from station.sim.silicon import read_soc_id

MAX_BOARDS = 8  # each is a CPU-heavy TCG machine; a line PC's test bench needs a few
DEFAULT_TLS_PROOF_PORT = 8443
# What the board dials for the station's TLS proof (a QEMU guestfwd to 127.0.0.1:TLS_PORT).
GUEST_STATION_ADDRESS = "10.0.2.100"
HOST_STATION_ADDRESS = "127.0.0.1"
MEMORY_MB = 1024
TEE_DISK_MB = 32
BOARD_DISK_MB = 4
FAULTS_DISK_BYTES = 4096
FAULTS_MAGIC = b"welma-faults\n"

# Deadlines (seconds).  Under TCG a board boots in 10-12 s on an idle machine; a shared, loaded
# machine booting two at once needs far more.
BOOT_TIMEOUT_S = 180.0
START_TIMEOUT_S = 30.0  # until QEMU has daemonised and written its PID file
QMP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0
MKFS_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.25
QEMU_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class OpteeFault(StrEnum):
    """Faults of an OP-TEE board (one at a time; `station sim fault optee-01 no-ta`)."""

    NO_TA = "no-ta"  # from the next boot on, the PKCS#11 TA is missing: OP-TEE's real "TA not found"
    ABRUPT_RESET = "abrupt-reset"  # `reboot` resets the machine without closing any connection first


@dataclass(frozen=True)
class OpteeSettings:
    count: int
    port: int
    tls_proof_port: int
    image: str
    qemu: dict[str, ProcessRef]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "optee",
            "count": self.count,
            "port": self.port,
            "tls_proof_port": self.tls_proof_port,
            "image": self.image,
            "qemu": {name: ref.to_json() for name, ref in self.qemu.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpteeSettings:
        return cls(
            count=int(data["count"]),
            port=int(data["port"]),
            tls_proof_port=int(data["tls_proof_port"]),
            image=str(data["image"]),
            qemu={name: ProcessRef.from_json(ref) for name, ref in data["qemu"].items()},
        )


@dataclass(frozen=True)
class BoardLayout:
    root: Path
    index: int

    @property
    def name(self) -> str:
        return f"optee-{self.index:02d}"

    @property
    def hostname(self) -> str:
        return f"welma-optee-{self.index:02d}"

    @property
    def address(self) -> str:
        return f"127.0.0.{FIRST_HOST_OCTET - 1 + self.index}"

    def file(self, name: str) -> Path:
        return self.root / name


def board_name(index: int) -> str:
    return f"optee-{index:02d}"


class OpteeFarm:
    """The OP-TEE boards of one station home (HOME/sim/optee)."""

    def __init__(self, home: StationHome) -> None:
        self.home = home
        self.root = home.sim_dir / "optee"
        self.settings_file = self.root / "farm.json"
        self.fixtures_file = home.sim_dir / "fixtures.toml"

    def board(self, index: int) -> BoardLayout:
        return BoardLayout(self.root / "devices" / board_name(index), index)

    def board_named(self, name: str) -> BoardLayout | None:
        prefix, _, number = name.partition("-")
        if (
            prefix != "optee"
            or not number.isdigit()
            or len(number) != 2
            or not 1 <= int(number) <= MAX_BOARDS
        ):
            return None
        board = self.board(int(number))
        return board if board.root.is_dir() else None

    # ---- public API -------------------------------------------------------------------------

    def up(
        self,
        count: int = 1,
        *,
        port: int = DEFAULT_PORT,
        tls_proof_port: int = DEFAULT_TLS_PROOF_PORT,
        faults: dict[str, str] | None = None,
        progress: Any = print,
    ) -> list[Any]:
        """Boot ``count`` OP-TEE boards and return (as SimDevice) once each accepts SSH connections."""
        from station.sim import preflight

        if not 1 <= count <= MAX_BOARDS:
            raise StationError(
                f"--count must be between 1 and {MAX_BOARDS} for OP-TEE boards (each is a QEMU VM), not {count}"
            )
        for what, value in (("--port", port), ("--tls-proof-port", tls_proof_port)):
            if not 1 <= value <= 65535:
                raise StationError(f"{what} must be a TCP port (1-65535), not {value}")
        boards = [self.board(index) for index in range(1, count + 1)]
        armed = self._parse_faults(faults or {}, boards)
        problem = missing_tools(RUN_TOOLS)
        if problem:
            raise StationError(problem)
        if self.running():
            raise StationError(
                f"OP-TEE boards are already running in {self.home.root} ({', '.join(sorted(self.running()))}); "
                "stop them first with `station sim down`"
            )
        busy = preflight.check_addresses([(board.name, board.address) for board in boards], port)
        if busy:
            raise StationError(busy)
        image = ensure_built(progress)
        self.home.ensure_station_key()
        station_key = self.home.ssh_public_key.read_text()
        for board in boards:
            self._prepare(board, station_key)
            self._write_faults(board, armed.get(board.name))
        settings = OpteeSettings(count, port, tls_proof_port, str(image.directory), qemu={})
        try:
            for board in boards:
                settings.qemu[board.name] = self._start(board, image, settings)
                self._save(settings)  # after each start, so `down` finds every VM even if a later start fails
            self._wait_until_up(boards, settings, after="power-on")
        except BaseException:
            self.down()
            raise
        devices = [self._describe(board, settings, "up") for board in boards]
        write_fixtures(self.fixtures_file, devices)
        return devices

    def running(self) -> list[str]:
        settings = self._load()
        if settings is None:
            return []
        return [name for name, ref in settings.qemu.items() if ref.alive()]

    def status(self) -> list[Any]:
        settings = self._load()
        if settings is None:
            return []
        result = []
        for index in range(1, settings.count + 1):
            board = self.board(index)
            ref = settings.qemu.get(board.name)
            if ref is None or not ref.alive():
                state = "down"
            else:
                state = "up" if _ssh_answers(board.address, settings.port) else "booting"
            result.append(self._describe(board, settings, state))
        return result

    def reset(self, name: str) -> None:
        """Factory-fresh board (a new, empty /var/lib disk: no token store, no certificates), then a VM reset.

        The VM is paused while its disk is recreated, then reset and resumed: the console pty and
        the forwards stay, as for a board power-cycled on its fixture.
        """
        board = self._existing(name)
        settings = self._load()
        ref = settings.qemu.get(name) if settings is not None else None
        if settings is None or ref is None or not ref.alive():
            self._make_tee_disk(board)
            return
        qmp(board.file("qmp.sock"), "stop")
        self._make_tee_disk(board)
        qmp(board.file("qmp.sock"), "system_reset", "cont")
        self._wait_until_up([board], settings, after="reset")

    def set_fault(self, name: str, fault: str | None) -> None:
        board = self._existing(name)
        self._write_faults(board, _parse_fault(fault) if fault is not None else None)

    def down(self) -> None:
        """Stop every QEMU this farm started (by PID), and remove what they left outside the disks."""
        settings = self._load()
        if settings is None:
            return
        refs = {name: ref for name, ref in settings.qemu.items() if ref.alive()}
        for name, ref in refs.items():
            board = self.board_named(name)
            try:
                if board is not None:
                    qmp(board.file("qmp.sock"), "quit", timeout_s=2.0)
            except StationError:
                ref.signal(signal.SIGTERM)
        stubborn = wait_gone(list(refs.values()), STOP_TIMEOUT_S, POLL_INTERVAL_S)
        for ref in stubborn:
            ref.signal(signal.SIGKILL)
        left = wait_gone(stubborn, KILL_TIMEOUT_S, POLL_INTERVAL_S)
        if left:
            pids = ", ".join(str(ref.pid) for ref in left)
            raise StationError(
                f"could not stop the OP-TEE boards' QEMU processes (PIDs {pids}); stop them with `kill -9 {pids}`"
            )
        for name in settings.qemu:
            board = self.board_named(name)
            if board is not None:
                for leftover in ("qemu.pid", "qmp.sock", "console"):
                    board.file(leftover).unlink(missing_ok=True)
        self._save(
            OpteeSettings(settings.count, settings.port, settings.tls_proof_port, settings.image, qemu={})
        )
        if refs:
            self.fixtures_file.unlink(missing_ok=True)

    # ---- boards -----------------------------------------------------------------------------

    def _parse_faults(self, faults: dict[str, str], boards: list[BoardLayout]) -> dict[str, OpteeFault]:
        names = {board.name for board in boards}
        unknown = sorted(set(faults) - names)
        if unknown:
            raise StationError(
                f"a fault is given for {', '.join(unknown)}, but the boards are {', '.join(sorted(names))}"
            )
        return {name: _parse_fault(value) for name, value in faults.items()}

    def _existing(self, name: str) -> BoardLayout:
        board = self.board_named(name)
        if board is None:
            raise StationError(
                f"no OP-TEE board named {name!r} in {self.home.root}; `station sim status` lists them"
            )
        return board

    def _prepare(self, board: BoardLayout, station_key: str) -> None:
        from station.sim.farm import generate_host_key

        board.root.mkdir(parents=True, exist_ok=True)
        soc_id = read_soc_id(board.root)
        key = board.file("ssh_host_ed25519_key")
        if not key.exists():
            generate_host_key(key, board.file("ssh_host_ed25519_key.pub"), board.hostname)
        if not board.file("tee.img").exists():
            self._make_tee_disk(board)
        with tempfile.TemporaryDirectory(prefix=".board-", dir=board.root) as staging:
            stage = Path(staging)
            (stage / "hostname").write_text(board.hostname + "\n")
            (stage / "authorized_keys").write_text(station_key)
            # init.sh shows it at /sys/firmware/devicetree/base/serial-number (= /proc/device-tree/serial-number).
            (stage / "soc_id").write_text(soc_id + "\n")
            shutil.copy(key, stage / "ssh_host_ed25519_key")
            shutil.copy(board.file("ssh_host_ed25519_key.pub"), stage / "ssh_host_ed25519_key.pub")
            _mkfs(board.file("board.img"), "welma-board", BOARD_DISK_MB, populate=stage)
        for stale in ("qemu.pid", "qmp.sock", "console"):
            board.file(stale).unlink(missing_ok=True)

    def _make_tee_disk(self, board: BoardLayout) -> None:
        target = board.file("tee.img")
        if target.exists():
            # Rewritten in place: a running (paused) QEMU keeps the same file open.
            _mkfs(target, "welma-tee", TEE_DISK_MB, populate=None)
        else:
            temporary = board.file(".tee.img.tmp")
            _mkfs(temporary, "welma-tee", TEE_DISK_MB, populate=None)
            os.replace(temporary, target)

    def _write_faults(self, board: BoardLayout, fault: OpteeFault | None) -> None:
        text = FAULTS_MAGIC + (f"{fault.value}\n".encode() if fault is not None else b"")
        data = text.ljust(FAULTS_DISK_BYTES, b"\0")
        path = board.file("faults.img")
        # In place, so a running board (reading the raw disk with O_DIRECT) sees the change at once.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _armed(self, board: BoardLayout) -> str | None:
        try:
            data = board.file("faults.img").read_bytes()
        except FileNotFoundError:
            return None
        if not data.startswith(FAULTS_MAGIC):
            return None
        lines = data[len(FAULTS_MAGIC) :].split(b"\0")[0].decode("ascii", "replace").split()
        return lines[0] if lines else None

    # long: one QEMU command line with its devices and the wait for its QMP socket; split it and the flags scatter
    def _start(self, board: BoardLayout, image: BoardImage, settings: OpteeSettings) -> ProcessRef:
        sock = board.file("qmp.sock")
        if len(str(sock)) > 100:
            raise StationError(
                f"the station home path is too long for QEMU's control socket {sock}; choose a shorter --home"
            )
        pid_file = board.file("qemu.pid")
        pid_file.unlink(missing_ok=True)
        tls = settings.tls_proof_port
        netdev = (
            f"user,id=n0,restrict=on,hostfwd=tcp:{board.address}:{settings.port}-:22,"
            f"guestfwd=tcp:{GUEST_STATION_ADDRESS}:{tls}-cmd:/usr/bin/socat STDIO TCP:{HOST_STATION_ADDRESS}:{tls}"
        )
        argv = [
            "nice",
            "-n",
            "19",
            "qemu-system-aarch64",
            "-name",
            board.name,
            "-machine",
            "virt,secure=on,gic-version=3,acpi=off",
            "-cpu",
            "cortex-a57",
            "-smp",
            "2",
            "-m",
            str(MEMORY_MB),
            "-bios",
            str(image.flash),
            "-kernel",
            str(image.kernel),
            "-initrd",
            str(image.initrd),
            "-append",
            "console=ttyAMA0 quiet",
            "-netdev",
            netdev,
            "-device",
            "virtio-net-device,netdev=n0",
            "-drive",
            f"file={board.file('tee.img')},format=raw,if=none,id=tee",
            "-device",
            "virtio-blk-device,drive=tee",
            "-drive",
            f"file={board.file('board.img')},format=raw,if=none,id=board,readonly=on",
            "-device",
            "virtio-blk-device,drive=board",
            "-drive",
            f"file={board.file('faults.img')},format=raw,if=none,id=faults,readonly=on",
            "-device",
            "virtio-blk-device,drive=faults",
            "-chardev",
            f"pty,id=console,logfile={board.file('console.log')},logappend=on",
            "-serial",
            "chardev:console",
            "-serial",
            f"file:{board.file('secure.log')}",
            "-display",
            "none",
            "-monitor",
            "none",
            "-qmp",
            f"unix:{sock},server=on,wait=off",
            "-daemonize",
            "-pidfile",
            str(pid_file),
        ]
        with open(board.file("qemu.log"), "w", encoding="utf-8") as log:
            try:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=QEMU_ENV,
                    cwd="/",
                    timeout=START_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                done = None
        ref = _read_pid(pid_file)
        if done is None or done.returncode != 0 or ref is None:
            if ref is not None:
                ref.signal(signal.SIGKILL)
            raise StationError(
                f"QEMU did not start {board.name}; see {board.file('qemu.log')}:\n{_tail(board.file('qemu.log'))}"
            )
        self._link_console(board)
        return ref

    def _link_console(self, board: BoardLayout) -> None:
        answers = qmp(board.file("qmp.sock"), "query-chardev")
        for chardev in answers[-1] if isinstance(answers[-1], list) else []:
            if chardev.get("label") == "console" and str(chardev.get("filename", "")).startswith("pty:"):
                pty = chardev["filename"][len("pty:") :]
                link = board.file("console")
                link.unlink(missing_ok=True)
                link.symlink_to(pty)
                return
        raise StationError(f"QEMU of {board.name} reported no console pty; see {board.file('qemu.log')}")

    def _wait_until_up(self, boards: list[BoardLayout], settings: OpteeSettings, *, after: str) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        waiting = list(boards)
        while waiting:
            waiting = [board for board in waiting if not _ssh_answers(board.address, settings.port)]
            for board in waiting:
                ref = settings.qemu.get(board.name)
                if ref is None or not ref.alive():
                    raise StationError(
                        f"the QEMU of {board.name} stopped; see {board.file('qemu.log')} and its console "
                        f"{board.file('console.log')}:\n{_tail(board.file('console.log'))}"
                    )
            if not waiting:
                return
            if time.monotonic() > deadline:
                board = waiting[0]
                raise StationError(
                    f"OP-TEE board {board.name} ({board.address}:{settings.port}) did not accept SSH connections "
                    f"within {BOOT_TIMEOUT_S:g} s after {after}; see its console {board.file('console.log')}:\n"
                    f"{_tail(board.file('console.log'))}"
                )
            time.sleep(POLL_INTERVAL_S)

    def _describe(self, board: BoardLayout, settings: OpteeSettings, state: str) -> Any:
        from station.sim.farm import SimDevice, host_key_fingerprint

        console = board.file("console")
        return SimDevice(
            name=board.name,
            hostname=board.hostname,
            address=board.address,
            port=settings.port,
            ssh_url=f"ssh://root@{board.address}:{settings.port}",
            console_path=console if state != "down" and console.is_symlink() else None,
            host_key_fingerprint=host_key_fingerprint(board.file("ssh_host_ed25519_key.pub").read_text()),
            state_dir=board.root,
            state=state,
            fault=self._armed(board),
            soc_id=read_soc_id(board.root),
            kind="optee",
        )

    def _save(self, settings: OpteeSettings) -> None:
        save_settings(self.settings_file, settings)

    def _load(self) -> OpteeSettings | None:
        return load_settings(
            self.settings_file,
            OpteeSettings.from_json,
            when_damaged="stop any QEMU it lists by hand and delete that file",
        )


def _parse_fault(value: str) -> OpteeFault:
    try:
        return OpteeFault(value)
    except ValueError:
        raise StationError(
            f"unknown fault {value!r} for an OP-TEE board: choose one of {', '.join(f.value for f in OpteeFault)}"
        ) from None


def _mkfs(path: Path, label: str, size_mb: int, *, populate: Path | None) -> None:
    argv = ["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0"]
    if populate is not None:
        argv += ["-d", str(populate)]
    if not path.exists():
        with open(path, "wb") as handle:
            handle.truncate(size_mb * 1024 * 1024)
    argv.append(str(path))
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=MKFS_TIMEOUT_S, env=QEMU_ENV, check=False
        )
    except subprocess.TimeoutExpired:
        raise StationError(f"mkfs.ext4 did not finish within {MKFS_TIMEOUT_S:g} s for {path}") from None
    if done.returncode != 0:
        raise StationError(f"mkfs.ext4 failed for {path}: {done.stderr.strip()}")


def qmp(sock: Path, *commands: str, timeout_s: float = QMP_TIMEOUT_S) -> list[Any]:
    """Send QMP commands to a QEMU and return their answers (raises StationError on any error)."""
    answers: list[Any] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(str(sock))
            reader = conn.makefile("rb")
            _qmp_read(reader)  # the greeting
            for name in ("qmp_capabilities", *commands):
                conn.sendall(json.dumps({"execute": name}).encode() + b"\n")
                reply = _qmp_read(reader)
                if "error" in reply:
                    raise StationError(f"QEMU refused {name}: {reply['error'].get('desc', reply['error'])}")
                if name != "qmp_capabilities":
                    answers.append(reply.get("return"))
    except OSError as exc:
        raise StationError(f"cannot talk to QEMU through {sock} ({exc})") from exc
    return answers


def _qmp_read(reader: Any) -> dict[str, Any]:
    while True:
        line = reader.readline(1 << 20)
        if not line:
            raise OSError("QEMU closed its control socket")
        message: dict[str, Any] = json.loads(line)
        if "event" not in message:
            return message


def _read_pid(path: Path) -> ProcessRef | None:
    try:
        return ProcessRef.of(int(path.read_text().strip()))
    except (FileNotFoundError, ValueError):
        return None


def _ssh_answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT_S) as conn:
            conn.settimeout(PROBE_TIMEOUT_S)
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
