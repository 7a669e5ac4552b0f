"""The simulated Welma device farm: boot, inspect, fault, reset and stop simulated boards.

Each board is a real ``sshd`` and SoftHSM2 (standing in for OP-TEE) inside its own mount, PID and
UTS namespaces, with the paths and behaviour of a Welma development image: the tutorial's command
lines run on it verbatim.  A detached power loop per board (power.sh) boots it, reboots it and
owns its serial console; this module prepares the files, starts and stops the power loops by PID,
and reports state.  All state lives below ``HOME/sim`` (see station.sim.layout).

    farm = Farm(StationHome.resolve())
    devices = farm.up(count=2, keygen_delay=5.0)
    farm.set_fault("sim-02", "drop-ssh")
    farm.set_fault("sim-01", "hang:^sha256sum ")   # a command fault: ACTION:PATTERN
    farm.down()
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from station.errors import StationError
from station.files import write_file_atomically
from station.home import StationHome
from station.sim import preflight

# Moved to station.sim.farm_state, re-exported here so every existing import keeps working:
from station.sim.farm_state import DeviceState as DeviceState
from station.sim.farm_state import FarmSettings as FarmSettings
from station.sim.farm_state import SimDevice as SimDevice

# Moved to station.sim.faults, re-exported here so every existing import keeps working:
from station.sim.faults import COMMAND_FAULT_FILE as COMMAND_FAULT_FILE
from station.sim.faults import PATTERN_CHECK_TIMEOUT_S as PATTERN_CHECK_TIMEOUT_S
from station.sim.faults import AnyFault as AnyFault
from station.sim.faults import CommandAction as CommandAction
from station.sim.faults import CommandFault as CommandFault
from station.sim.faults import Fault as Fault
from station.sim.faults import parse_fault as parse_fault
from station.sim.fixtures import refresh_fixtures, write_atomically, write_fixtures

# Moved to station.sim.host_keys, re-exported here so every existing import keeps working:
from station.sim.host_keys import generate_host_key as generate_host_key
from station.sim.host_keys import host_key_fingerprint as host_key_fingerprint
from station.sim.layout import (
    DEFAULT_PORT,
    MAX_DEVICES,
    MODULE_NAME,
    DeviceLayout,
    FarmLayout,
    render_device_env,
    render_softhsm_conf,
    render_sshd_config,
)
from station.sim.optee_farm import DEFAULT_TLS_PROOF_PORT, OpteeFarm
from station.sim.process import ProcessRef, wait_gone
from station.sim.settings_file import load_settings, save_settings
from station.sim.silicon import new_soc_id, read_soc_id

# The kinds of simulated board: namespaces + SoftHSM2 (fast, the default) or QEMU + real OP-TEE.
KINDS = ("softhsm", "optee")

# Deadlines (seconds).  A board boots in well under a second; the margins are for loaded machines.
BOOT_TIMEOUT_S = 30.0  # from power-on (or reset) until the board's sshd answers
POWER_ON_TIMEOUT_S = 5.0  # until a started power loop has written its PID
STOP_TIMEOUT_S = 10.0  # until a power loop has stopped its board and console after SIGTERM
KILL_TIMEOUT_S = 3.0  # until SIGKILLed leftovers are gone
PROBE_TIMEOUT_S = 0.5  # one TCP connect + SSH banner read
POLL_INTERVAL_S = 0.05

# The power loops run detached from the caller, with a plain environment (no venv, no secrets).
POWER_LOOP_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


class Farm:
    """The simulated device farm of one station home."""

    def __init__(self, home: StationHome) -> None:
        self.home = home
        self.layout = FarmLayout(home)
        self.optee = OpteeFarm(home)

    # ---- public API -------------------------------------------------------------------------

    def up(
        self,
        count: int = 2,
        *,
        keygen_delay: float = 0.0,
        boot_delay: float = 1.0,
        serial_console: bool = False,
        port: int = DEFAULT_PORT,
        faults: dict[str, str] | None = None,
        kind: str = "softhsm",
        tls_proof_port: int = DEFAULT_TLS_PROOF_PORT,
        progress: Callable[[str], None] = print,
    ) -> list[SimDevice]:
        """Boot ``count`` boards and return once every one accepts SSH connections.

        ``kind="optee"`` boots QEMU virtual machines running the real OP-TEE stack instead
        (see station.sim.optee_farm; ``keygen_delay``, ``boot_delay`` and ``serial_console`` do not
        apply: their timing is real and they always have a console).

        The boards keep running in the background (also after this process exits) until
        :meth:`down`.  ``faults`` maps device names to faults armed from the start
        (``{"sim-02": "no-boot", "sim-01": "hang:--keypairgen"}``).  Raises StationError with what
        to fix when the machine cannot run the simulator or an SSH address is taken.
        """
        if kind not in KINDS:
            raise StationError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if kind == "optee":
            if self._running_power_loops():
                raise StationError(
                    f"SoftHSM2 boards are already running in {self.home.root}; stop them first with `station sim down`"
                )
            optee: list[SimDevice] = self.optee.up(
                count, port=port, tls_proof_port=tls_proof_port, faults=faults, progress=progress
            )
            return optee
        if self.optee.running():
            raise StationError(
                f"OP-TEE boards are already running in {self.home.root}; stop them first with `station sim down`"
            )
        _check_request(count, port, keygen_delay, boot_delay)
        devices = [self.layout.device(index) for index in range(1, count + 1)]
        armed = self._parse_faults(faults or {}, devices)

        self._preflight(devices, port=port, serial_console=serial_console)

        self._prepare_devices(
            devices,
            armed,
            port=port,
            keygen_delay=keygen_delay,
            boot_delay=boot_delay,
            serial_console=serial_console,
        )

        settings = FarmSettings(count, port, keygen_delay, boot_delay, serial_console, power={})
        try:
            for device in devices:
                settings.power[device.name] = self._power_on(device)
                # Saved after each start, so `down` finds every loop even if a later start fails.
                self._save_settings(settings)
            self._wait_until_up(
                devices, settings, timeout_s=BOOT_TIMEOUT_S, after="power-on", first_boot=True
            )
        except BaseException:
            self.down()
            raise
        result = [self._describe(device, settings, DeviceState.UP) for device in devices]
        write_fixtures(self.layout.fixtures_file, result)
        return result

    def _preflight(self, devices: list[DeviceLayout], *, port: int, serial_console: bool) -> None:
        """Refuse to start (saying what to fix) unless this machine can run these boards now: root,
        packages, home path, namespaces, no farm already running, every SSH address free."""
        problems = [
            preflight.check_root(),
            preflight.check_packages(serial_console=serial_console),
            preflight.check_home_path(self.layout.root),
        ]
        if problems[0] is None:  # the namespace probe would only repeat "not root"
            problems.append(preflight.check_namespaces(self.layout.root))
        messages = [problem for problem in problems if problem]
        if messages:
            raise StationError("\n".join(messages))
        running = self._running_power_loops()
        if running:
            raise StationError(
                f"a simulated farm is already running in {self.home.root} ({', '.join(sorted(running))}); "
                "stop it first with `station sim down`"
            )
        busy = preflight.check_addresses([(device.name, device.address) for device in devices], port)
        if busy:
            raise StationError(busy)

    def _prepare_devices(
        self,
        devices: list[DeviceLayout],
        armed: dict[str, AnyFault],
        *,
        port: int,
        keygen_delay: float,
        boot_delay: float,
        serial_console: bool,
    ) -> None:
        """Write every board's files (scripts, keys, configuration) and arm its fault, before any powers on."""
        self.home.ensure_station_key()
        station_key = self.home.ssh_public_key.read_text()
        self._install_scripts()
        for device in devices:
            self._prepare_device(
                device,
                port=port,
                keygen_delay=keygen_delay,
                boot_delay=boot_delay,
                serial_console=serial_console,
                station_key=station_key,
            )
            self._arm(device, armed.get(device.name))

    def status(self) -> list[SimDevice]:
        """The boards of the farms last started in this home (both kinds), with their current state."""
        optee: list[SimDevice] = self.optee.status()
        settings = self._load_settings()
        if settings is None:
            return optee
        devices = [self.layout.device(index) for index in range(1, settings.count + 1)]
        return [
            self._describe(device, settings, self._state_of(device, settings)) for device in devices
        ] + optee

    def reset(self, name: str) -> None:
        """Make a board factory-fresh (empty token store, no /var/lib certificates) and reboot it.

        Returns once the board is back (unless a no-boot fault keeps it down).  For a board that
        is not running, the reset is applied at its next power-on.
        """
        if name.startswith("optee-"):
            self.optee.reset(name)
            return
        device = self._existing_device(name)
        device.run_dir.mkdir(parents=True, exist_ok=True)
        device.run_file("reset").touch()
        settings = self._load_settings()
        power = self._power_loop(device, settings)
        if settings is None or power is None:
            return
        # A power cut: between two boots the power loop wipes /var/lib, then boots again.
        board = ProcessRef.from_pid_file(device.run_file("unshare.pid"), parent=power)
        if board is not None:
            board.signal(signal.SIGKILL)
        deadline = time.monotonic() + settings.boot_delay + STOP_TIMEOUT_S
        while device.run_file("reset").exists():
            if time.monotonic() > deadline or not power.alive():
                raise StationError(
                    f"{name} was not reset within {settings.boot_delay + STOP_TIMEOUT_S:g} s; "
                    f"see its boot log {device.boot_log}"
                )
            time.sleep(POLL_INTERVAL_S)
        if self._armed_fault(device) is not Fault.NO_BOOT:
            self._wait_until_up([device], settings, timeout_s=BOOT_TIMEOUT_S, after="reset")

    def swap(self, name: str) -> SimDevice:
        """Put a factory-fresh board on fixture ``name``: new SoC id, new host key, empty storage.

        The board taken off the fixture is gone for good (its id and key are not kept); the fixtures
        file shows the new host key, as an administrator's inventory would after checking it.
        Returns the new board once it answers (or as down, when the farm is not running).
        """
        device = self._existing_device(name)
        new_soc_id(device.root)
        self._generate_host_key(device)
        # The power cut of a reset takes the old board off; the next boot installs the new key and id.
        self.reset(name)
        settings = self._load_settings()
        if settings is not None and self.layout.fixtures_file.exists():
            refresh_fixtures(self.layout.fixtures_file, self.status)
        if settings is None:
            return self._describe(device, FarmSettings(0, DEFAULT_PORT, 0, 0, False, {}), DeviceState.DOWN)
        return self._describe(device, settings, self._state_of(device, settings))

    def set_fault(self, name: str, fault: str | None) -> None:
        """Arm ``fault`` on board ``name`` (replacing any other), or clear its fault with None.

        no-boot takes effect at the board's next reboot, drop-ssh at its next key generation
        (once), no-module immediately; a command fault (``ACTION:PATTERN``, see
        :class:`CommandFault`) strikes every matching SSH command from now until cleared.
        OP-TEE boards (``optee-NN``) have their own faults (station.sim.optee_farm.OpteeFault).
        """
        if name.startswith("optee-"):
            self.optee.set_fault(name, fault)
            return
        device = self._existing_device(name)
        self._arm(device, parse_fault(fault) if fault is not None else None)

    def down(self) -> None:
        """Power off every board of this home and stop every process the farm started, by PID."""
        self.optee.down()
        settings = self._load_settings()
        loops: dict[str, ProcessRef] = {}
        for name, power in (settings.power if settings is not None else {}).items():
            device = self._existing_device(name)
            if power.alive():
                device.run_file("poweroff").touch()
                power.signal(signal.SIGTERM)
                loops[name] = power
        stubborn = wait_gone(list(loops.values()), STOP_TIMEOUT_S, POLL_INTERVAL_S)
        for power in stubborn:
            # Freeze the loop so it starts nothing new, then cut everything it started.
            power.signal(signal.SIGSTOP)
            for child in power.children():
                child.signal(signal.SIGKILL)  # unshare --kill-child takes its board with it
            power.signal(signal.SIGKILL)
        left = wait_gone(stubborn, KILL_TIMEOUT_S, POLL_INTERVAL_S)
        if left:
            pids = ", ".join(str(ref.pid) for ref in left)
            raise StationError(
                f"could not stop the farm's power loops (PIDs {pids}); stop them with `kill -9 {pids}`"
            )
        for name in loops:
            device = self._existing_device(name)
            for leftover in ("power.pid", "unshare.pid", "socat.pid", "holder.pid", "poweroff"):
                device.run_file(leftover).unlink(missing_ok=True)
            device.console_link.unlink(missing_ok=True)
            device.console_device_link.unlink(missing_ok=True)
        if settings is not None:
            # Keep what the farm was, without power loops, so `status` lists the boards as down.
            self._save_settings(dataclasses.replace(settings, power={}))
        self.layout.fixtures_file.unlink(missing_ok=True)

    # ---- preparing boards -------------------------------------------------------------------

    def _parse_faults(self, faults: dict[str, str], devices: list[DeviceLayout]) -> dict[str, AnyFault]:
        names = {device.name for device in devices}
        unknown = sorted(set(faults) - names)
        if unknown:
            raise StationError(
                f"a fault is given for {', '.join(unknown)}, but this farm has "
                f"{devices[0].name} … {devices[-1].name}"
            )
        return {name: parse_fault(value) for name, value in faults.items()}

    def _install_scripts(self) -> None:
        """Copy this package's scripts into the home; the layers are mounted read-only by boards."""
        package = resources.files("station.sim")
        targets = {
            "init.sh": self.layout.script("init.sh"),
            "power.sh": self.layout.script("power.sh"),
            "console.sh": self.layout.script("console.sh"),
            "pkcs11-tool.sh": self.layout.script("pkcs11-tool.sh"),
            "gate.sh": self.layout.script("gate.sh"),
            "reboot.sh": self.layout.usrsbin_layer / "reboot",
        }
        for directory in (self.layout.bin_dir, self.layout.usrsbin_layer, self.layout.usrlib_layer):
            directory.mkdir(parents=True, exist_ok=True)
            # The top layer's root gives the merged /usr/lib and /usr/sbin their owner and mode.
            directory.chmod(0o755)
        for source, target in targets.items():
            write_atomically(target, package.joinpath(source).read_text(encoding="utf-8"))
            target.chmod(0o755)
        # The board's /usr/lib/libckteec.so.0 resolves through its own control directory, which
        # is what lets the no-module fault take the module away from a running board.
        self._replace_symlink(self.layout.usrlib_layer / MODULE_NAME, Path("/run/sim/board") / MODULE_NAME)

    def _prepare_device(
        self,
        device: DeviceLayout,
        *,
        port: int,
        keygen_delay: float,
        boot_delay: float,
        serial_console: bool,
        station_key: str,
    ) -> None:
        for directory in (
            device.root,
            device.run_dir,
            device.board_dir,
            device.faults_dir,
            device.varlib_work,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        device.varlib_upper.mkdir(parents=True, exist_ok=True)
        device.varlib_upper.chmod(0o755)  # the root of the board's merged /var/lib
        if not device.host_key.exists():
            self._generate_host_key(device)
        read_soc_id(device.root)  # a board is born with its fuses
        write_atomically(device.authorized_keys, station_key)
        write_atomically(device.sshd_config, render_sshd_config(device, port))
        write_atomically(device.softhsm_conf, render_softhsm_conf())
        write_atomically(device.keygen_delay_file, f"{keygen_delay:g}\n")
        write_atomically(
            device.env_file, render_device_env(device, boot_delay=boot_delay, serial_console=serial_console)
        )
        for stale in ("power.pid", "unshare.pid", "socat.pid", "holder.pid", "poweroff", "state"):
            device.run_file(stale).unlink(missing_ok=True)

    def _generate_host_key(self, device: DeviceLayout) -> None:
        """The board's SSH host key: created once, kept across reboots and `up`s like a real board's."""
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        # Replaced whole (temporary file, then rename): `sim swap` runs while other swaps read every board's key.
        write_file_atomically(device.host_key, private, mode=0o600)
        write_atomically(device.host_key_pub, public.decode("ascii") + f" root@{device.hostname}\n")

    def _arm(self, device: DeviceLayout, fault: AnyFault | None) -> None:
        """Fault files are what the board's tools, its SSH gate and power loop read at runtime."""
        device.faults_dir.mkdir(parents=True, exist_ok=True)
        for existing in device.faults_dir.iterdir():
            existing.unlink()
        if isinstance(fault, CommandFault):
            write_atomically(device.faults_dir / COMMAND_FAULT_FILE, fault.file_text())
        elif fault is not None:
            (device.faults_dir / fault.value).touch()
        if fault is Fault.NO_MODULE:
            device.module_link.unlink(missing_ok=True)
        else:
            library = preflight.find_softhsm_library()
            if library is None:
                raise StationError(
                    preflight.check_packages(serial_console=False) or "libsofthsm2.so not found"
                )
            self._replace_symlink(device.module_link, library)

    @staticmethod
    def _replace_symlink(link: Path, target: Path) -> None:
        temporary = link.with_name(f".{link.name}.tmp")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target)
        os.replace(temporary, link)

    # ---- power loops ------------------------------------------------------------------------

    def _power_on(self, device: DeviceLayout) -> ProcessRef:
        """Start the board's power loop, detached (its own session, not our child)."""
        pid_file = device.run_file("power.pid")
        with open(device.boot_log, "w", encoding="utf-8") as log:
            # setsid -f forks and returns at once: the loop is re-parented away from us, so it
            # outlives `station sim up` and never becomes our zombie.  The board starts with every
            # signal at its default, as a real board's init does: a station started in the background
            # (`station sim up &`, nohup) ignores SIGINT, and its boards' shells would inherit that
            # and shrug off the Ctrl-C the serial console sends to stop a command.
            subprocess.run(
                [
                    "env",
                    "--default-signal",
                    "setsid",
                    "-f",
                    "/bin/bash",
                    str(self.layout.script("power.sh")),
                    str(device.env_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=POWER_LOOP_ENV,
                cwd="/",
                timeout=POWER_ON_TIMEOUT_S,
                check=True,
            )
        deadline = time.monotonic() + POWER_ON_TIMEOUT_S
        while time.monotonic() < deadline:
            power = ProcessRef.from_pid_file(pid_file)
            if power is not None:
                return power
            time.sleep(POLL_INTERVAL_S / 5)
        raise StationError(
            f"the power loop of {device.name} did not start within {POWER_ON_TIMEOUT_S:g} s; see {device.boot_log}"
        )

    def _power_loop(self, device: DeviceLayout, settings: FarmSettings | None) -> ProcessRef | None:
        if settings is None:
            return None
        power = settings.power.get(device.name)
        return power if power is not None and power.alive() else None

    def _running_power_loops(self) -> list[str]:
        settings = self._load_settings()
        if settings is None:
            return []
        return [name for name, power in settings.power.items() if power.alive()]

    def _save_settings(self, settings: FarmSettings) -> None:
        save_settings(self.layout.settings_file, settings)

    def _load_settings(self) -> FarmSettings | None:
        return load_settings(
            self.layout.settings_file,
            FarmSettings.from_json,
            when_damaged="stop any simulated device with `station sim down` and delete that file",
        )

    # ---- state ------------------------------------------------------------------------------

    def _existing_device(self, name: str) -> DeviceLayout:
        device = self.layout.device_named(name)
        if device is None or not device.root.is_dir():
            raise StationError(
                f"no simulated device named {name!r} in {self.home.root}; `station sim status` lists them"
            )
        return device

    def _armed_fault(self, device: DeviceLayout) -> AnyFault | None:
        try:
            names = sorted(path.name for path in device.faults_dir.iterdir())
        except FileNotFoundError:
            return None
        for name in names:
            if name == COMMAND_FAULT_FILE:
                try:
                    action, pattern = (device.faults_dir / name).read_text().splitlines()[:2]
                    return CommandFault(CommandAction(action), pattern)
                except (FileNotFoundError, ValueError):
                    continue
            try:
                return Fault(name)
            except ValueError:
                continue
        return None

    def _state_of(self, device: DeviceLayout, settings: FarmSettings) -> DeviceState:
        if self._power_loop(device, settings) is None:
            return DeviceState.DOWN
        loop_state = _read_state(device) or "booting"
        if loop_state in ("halted", "off"):
            return DeviceState.DOWN
        if loop_state == "booting" and _ssh_answers(device.address, settings.port):
            return DeviceState.UP
        return DeviceState.BOOTING

    def _describe(self, device: DeviceLayout, settings: FarmSettings, state: DeviceState) -> SimDevice:
        fault = self._armed_fault(device)
        return SimDevice(
            name=device.name,
            hostname=device.hostname,
            address=device.address,
            port=settings.port,
            ssh_url=f"ssh://root@{device.address}:{settings.port}",
            console_path=device.console_link if settings.serial_console else None,
            host_key_fingerprint=host_key_fingerprint(device.host_key_pub.read_text()),
            state_dir=device.root,
            state=state.value,
            fault=str(fault) if fault is not None else None,
            soc_id=read_soc_id(device.root),
        )

    def _wait_until_up(
        self,
        devices: list[DeviceLayout],
        settings: FarmSettings,
        *,
        timeout_s: float,
        after: str,
        first_boot: bool = False,
    ) -> None:
        """Wait until each board's sshd answers; ``first_boot``: nobody can have rebooted them yet."""
        deadline = time.monotonic() + timeout_s
        waiting = list(devices)
        while waiting:
            waiting = [device for device in waiting if not _ssh_answers(device.address, settings.port)]
            for device in waiting:
                if self._power_loop(device, settings) is None:
                    raise StationError(
                        f"the power loop of {device.name} stopped; see its boot log {device.boot_log}:\n"
                        f"{_tail(device.boot_log)}"
                    )
                if first_boot and _read_state(device) == "rebooting":
                    # Down before it ever answered: its init failed, and every retry would too.
                    raise StationError(
                        f"simulated device {device.name} failed to boot; see its boot log {device.boot_log}:\n"
                        f"{_tail(device.boot_log)}"
                    )
            if not waiting:
                return
            if time.monotonic() > deadline:
                device = waiting[0]
                others = f" (also {', '.join(d.name for d in waiting[1:])})" if waiting[1:] else ""
                raise StationError(
                    f"simulated device {device.name} ({device.address}:{settings.port}) did not accept SSH "
                    f"connections within {timeout_s:g} s after {after}{others}; see its boot log "
                    f"{device.boot_log}:\n{_tail(device.boot_log)}"
                )
            time.sleep(POLL_INTERVAL_S)


def _check_request(count: int, port: int, keygen_delay: float, boot_delay: float) -> None:
    """Refuse a count, port or delay that no farm can have."""
    if not 1 <= count <= MAX_DEVICES:
        raise StationError(f"--count must be between 1 and {MAX_DEVICES}, not {count}")
    if not 1 <= port <= 65535:
        raise StationError(f"--port must be a TCP port (1-65535), not {port}")
    if keygen_delay < 0 or boot_delay < 0:
        raise StationError("delays cannot be negative")


def _ssh_answers(address: str, port: int) -> bool:
    """True if an SSH server accepts a connection on address:port and sends its banner."""
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT_S) as conn:
            conn.settimeout(PROBE_TIMEOUT_S)
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _read_state(device: DeviceLayout) -> str | None:
    """What the power loop last wrote: booting, rebooting, halted (no-boot) or off."""
    try:
        return device.run_file("state").read_text().strip()
    except FileNotFoundError:
        return None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no boot log)"


__all__ = [
    "CommandAction",
    "CommandFault",
    "DeviceState",
    "Farm",
    "Fault",
    "SimDevice",
    "host_key_fingerprint",
]
