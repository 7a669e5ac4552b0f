"""Where the simulated device farm keeps its state below the station home, and the files it writes.

One place names every path of the farm and renders the configuration each board reads (its sshd
config, softhsm2.conf and the ``device.env`` the shell scripts source), so the Python side and
the scripts in this package never disagree about a path::

    HOME/sim/
      farm.json            what the last `up` asked for, and its power loops' PIDs
      fixtures.toml        the running devices, machine-readable (removed by `down`)
      bin/                 the scripts of this package, copied at every ``up``
      layers/usr-lib/      read-only overlay layer: libckteec.so.0 -> /run/sim/board/libckteec.so.0
      layers/usr-sbin/     read-only overlay layer: reboot
      devices/sim-01/      one board (SimDevice.state_dir)
        ssh_host_ed25519_key[.pub]   persistent host key
        soc_id             the SoC unique id ("fuses"; replaced only by `station sim swap`)
        var-lib/upper, var-lib/work  persistent /var/lib (token store, certificates)
        board/             bind-mounted at /run/sim/board: faults/, keygen-delay, libckteec.so.0
        run/               power loop: pids, state, power-off and reset flags
        console            the serial console's pty (with --serial-console)
        boot.log           what the power loop, init and sshd printed
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from station.home import StationHome
from station.sim.silicon import soc_id_path

# The board the tutorial uses; simulated boards are named after it.
BOARD_MODEL = "sm2s-imx8plus-mbep5"
# sshd listens on 127.0.0.2, 127.0.0.3, ...: the kernel answers for all of 127/8 on loopback.
FIRST_HOST_OCTET = 2
MAX_DEVICES = 99
DEFAULT_PORT = 2222
MODULE_NAME = "libckteec.so.0"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# Where init.sh installs gate.sh on the board, and the command fault it applies (see gate.sh).
GATE_PATH = "/run/sim/gate"
COMMAND_FAULT_PATH = "/run/sim/board/faults/command"
# sshd's ForceCommand (run by root's shell, bash -c): with a command fault armed, every session goes
# through the gate; without one the command runs in that same shell, as sshd would have run it —
# no extra process, so the simulated board's per-command cost stays what it was.
FORCE_COMMAND = (
    f"if [ -e {COMMAND_FAULT_PATH} ]; then exec {GATE_PATH}; "
    'elif [ -n "${SSH_ORIGINAL_COMMAND+set}" ]; then eval "$SSH_ORIGINAL_COMMAND"; '
    "else exec -l /bin/bash; fi"
)


@dataclass(frozen=True)
class FarmLayout:
    """Paths of the farm as a whole, below ``HOME/sim``."""

    home: StationHome

    @property
    def root(self) -> Path:
        return self.home.sim_dir

    @property
    def settings_file(self) -> Path:
        return self.root / "farm.json"

    @property
    def fixtures_file(self) -> Path:
        return self.root / "fixtures.toml"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def usrlib_layer(self) -> Path:
        return self.root / "layers" / "usr-lib"

    @property
    def usrsbin_layer(self) -> Path:
        return self.root / "layers" / "usr-sbin"

    @property
    def devices_dir(self) -> Path:
        return self.root / "devices"

    def script(self, name: str) -> Path:
        return self.bin_dir / name

    def device(self, index: int) -> DeviceLayout:
        """The board numbered ``index`` (1-based), as ``sim-01`` is the first."""
        if not 1 <= index <= MAX_DEVICES:
            raise ValueError(f"device index {index} outside 1..{MAX_DEVICES}")
        return DeviceLayout(self, index)

    def device_named(self, name: str) -> DeviceLayout | None:
        """The board called ``name`` (``sim-01``), or None when no such name is possible."""
        prefix, _, number = name.partition("-")
        if prefix != "sim" or not number.isdigit() or len(number) != 2:
            return None
        index = int(number)
        return self.device(index) if 1 <= index <= MAX_DEVICES else None


@dataclass(frozen=True)
class DeviceLayout:
    """Paths and identity of one simulated board."""

    farm: FarmLayout
    index: int

    @property
    def name(self) -> str:
        return f"sim-{self.index:02d}"

    @property
    def hostname(self) -> str:
        return f"{BOARD_MODEL}-{self.index:02d}"

    @property
    def address(self) -> str:
        return f"127.0.0.{FIRST_HOST_OCTET - 1 + self.index}"

    @property
    def root(self) -> Path:
        return self.farm.devices_dir / self.name

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def host_key_pub(self) -> Path:
        return self.root / "ssh_host_ed25519_key.pub"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    @property
    def sshd_config(self) -> Path:
        return self.root / "sshd_config"

    @property
    def softhsm_conf(self) -> Path:
        return self.root / "softhsm2.conf"

    @property
    def env_file(self) -> Path:
        return self.root / "device.env"

    @property
    def varlib_upper(self) -> Path:
        return self.root / "var-lib" / "upper"

    @property
    def varlib_work(self) -> Path:
        return self.root / "var-lib" / "work"

    @property
    def board_dir(self) -> Path:
        """Bind-mounted at /run/sim/board inside the board: what its tools read at runtime."""
        return self.root / "board"

    @property
    def faults_dir(self) -> Path:
        return self.board_dir / "faults"

    @property
    def keygen_delay_file(self) -> Path:
        return self.board_dir / "keygen-delay"

    @property
    def module_link(self) -> Path:
        """The PKCS#11 module as the board sees it through /usr/lib/libckteec.so.0."""
        return self.board_dir / MODULE_NAME

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def run_file(self, name: str) -> Path:
        return self.run_dir / name

    @property
    def console_link(self) -> Path:
        return self.root / "console"

    @property
    def console_device_link(self) -> Path:
        return self.run_dir / "console-device"

    @property
    def boot_log(self) -> Path:
        return self.root / "boot.log"


def render_sshd_config(device: DeviceLayout, port: int) -> str:
    """The board's sshd_config; the paths are where init.sh installs the files on the board's /run."""
    return f"""\
# sshd of simulated board {device.name} ({device.hostname}); written by `station sim up`.
ListenAddress {device.address}:{port}
HostKey /run/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /run/ssh/authorized_keys
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
X11Forwarding no
Subsystem sftp {SFTP_SERVER}
# Every session (commands and the sftp subsystem) passes the gate, where command faults strike;
# without one it runs $SSH_ORIGINAL_COMMAND unchanged.
ForceCommand {FORCE_COMMAND}
"""


def render_softhsm_conf() -> str:
    """SoftHSM2 stands in for OP-TEE: its token store is the board's /var/lib/tee."""
    return """\
# SoftHSM2 of a simulated Welma board: the token store is OP-TEE's /var/lib/tee.
directories.tokendir = /var/lib/tee
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = ALL
library.reset_on_fork = false
"""


def render_device_env(device: DeviceLayout, *, boot_delay: float, serial_console: bool) -> str:
    """The shell variables power.sh and init.sh source: every path they use, quoted."""
    farm = device.farm
    values: dict[str, str] = {
        "SIM_NAME": device.name,
        "SIM_HOSTNAME": device.hostname,
        "SIM_BOOT_DELAY": f"{boot_delay:g}",
        "SIM_RUN_DIR": str(device.run_dir),
        "SIM_BOARD_DIR": str(device.board_dir),
        "SIM_VARLIB_UPPER": str(device.varlib_upper),
        "SIM_VARLIB_WORK": str(device.varlib_work),
        "SIM_USRLIB_LAYER": str(farm.usrlib_layer),
        "SIM_USRSBIN_LAYER": str(farm.usrsbin_layer),
        "SIM_SOFTHSM_CONF": str(device.softhsm_conf),
        "SIM_SSHD_CONFIG": str(device.sshd_config),
        "SIM_HOST_KEY": str(device.host_key),
        "SIM_SOC_ID_FILE": str(soc_id_path(device.root)),
        "SIM_AUTHORIZED_KEYS": str(device.authorized_keys),
        "SIM_INIT": str(farm.script("init.sh")),
        "SIM_CONSOLE_SCRIPT": str(farm.script("console.sh")),
        "SIM_PKCS11_WRAPPER": str(farm.script("pkcs11-tool.sh")),
        "SIM_GATE_SCRIPT": str(farm.script("gate.sh")),
        "SIM_CONSOLE_LINK": str(device.console_link) if serial_console else "",
        "SIM_CONSOLE_DEVICE_LINK": str(device.console_device_link) if serial_console else "",
    }
    lines = [f"# Board {device.name}: sourced by power.sh and init.sh; written by `station sim up`."]
    lines += [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"
