"""What the simulated farm reports and keeps: a device's state and description, and the settings `up` was
asked for (HOME/sim/farm.json).  Moved out of :mod:`station.sim.farm`, which re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from station.sim.process import ProcessRef


class DeviceState(StrEnum):
    UP = "up"  # sshd accepts connections
    BOOTING = "booting"  # powered, booting or waiting out the boot delay after a reboot
    DOWN = "down"  # no power loop, or a board that does not boot (no-boot fault)


@dataclass(frozen=True)
class SimDevice:
    """One simulated board as the rest of the station sees it."""

    name: str  # "sim-01"
    hostname: str  # "sm2s-imx8plus-mbep5-01"
    address: str  # "127.0.0.2"
    port: int
    ssh_url: str  # "ssh://root@127.0.0.2:2222"
    console_path: Path | None  # the serial console's pty (a symlink), with --serial-console
    host_key_fingerprint: str  # "SHA256:…", as `ssh-keygen -lf` prints it
    state_dir: Path
    state: str  # a DeviceState value
    fault: str | None = None  # the armed fault as written on the command line, if any
    soc_id: str = ""  # the board's SoC unique id (station/sim/silicon.py)
    kind: str = "softhsm"  # "softhsm" (namespaces + SoftHSM2) or "optee" (a QEMU VM running OP-TEE)


@dataclass(frozen=True)
class FarmSettings:
    """What `up` was asked for, plus the power loops it started (HOME/sim/farm.json)."""

    count: int
    port: int
    keygen_delay: float
    boot_delay: float
    serial_console: bool
    power: dict[str, ProcessRef]

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "port": self.port,
            "keygen_delay": self.keygen_delay,
            "boot_delay": self.boot_delay,
            "serial_console": self.serial_console,
            "power": {name: ref.to_json() for name, ref in self.power.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FarmSettings:
        return cls(
            count=int(data["count"]),
            port=int(data["port"]),
            keygen_delay=float(data["keygen_delay"]),
            boot_delay=float(data["boot_delay"]),
            serial_console=bool(data["serial_console"]),
            power={name: ProcessRef.from_json(ref) for name, ref in data["power"].items()},
        )
