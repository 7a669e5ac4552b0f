"""The simulated board's silicon: a SoC unique id that behaves like fuses.

A real Welma board reads its SoC unique id from OTP fuses (i.MX 8M: ``/sys/devices/soc0/serial_number``;
STM32MP: the device tree's ``serial-number``).  A simulated board keeps its id in one file of its state
directory (``devices/sim-01/soc_id``): created once, kept across reboots, ``station sim reset`` and
``down``/``up``; only :func:`new_soc_id` (``station sim swap``: another board on the fixture) replaces it.

Any kind of simulated board can use this: the softhsm boards expose it at boot as the device tree's
``/sys/firmware/devicetree/base/serial-number`` (what ``/proc/device-tree`` links to on a real board);
another kind passes :func:`read_soc_id`'s value to its board its own way.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from station.files import write_file_atomically

SOC_ID_FILE = "soc_id"
# Where the board shows it: the device tree node a real STM32MP/i.MX device tree carries.
BOARD_SOC_ID_PATH = "/sys/firmware/devicetree/base/serial-number"
# i.MX 8M's unique id is 64 bits, shown as 16 upper-case hex digits.
SOC_ID_BYTES = 8


def soc_id_path(state_dir: Path) -> Path:
    return state_dir / SOC_ID_FILE


def read_soc_id(state_dir: Path) -> str:
    """The board's SoC id, created on first use (a board is born with its fuses)."""
    path = soc_id_path(state_dir)
    try:
        value = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        value = ""
    return value or new_soc_id(state_dir)


def new_soc_id(state_dir: Path) -> str:
    """Give the board new silicon (a factory-fresh board on the fixture); return its id."""
    value = secrets.token_hex(SOC_ID_BYTES).upper()
    state_dir.mkdir(parents=True, exist_ok=True)
    write_file_atomically(soc_id_path(state_dir), f"{value}\n".encode("ascii"), mode=0o644)
    return value
