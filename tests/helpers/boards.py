"""Looking at a simulated board from outside, with the plain OpenSSH client (not the station's code), and the
work-order files the order tests import.

``board_run(home, device, *remote)`` runs a command on the board as root with the home's key and a known_hosts
file of the test; ``board`` returns its output.  ``CANARY`` is a file a test leaves on a board to show later that
the station did not wipe it.  ``open_ssh_link(home, device)`` is the other way in, for tests of the station's own
SSH link: that link, opened as a unit's worker opens it.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from station.home import StationHome
from station.sim.farm import SimDevice
from station.transport import Deadline, DeviceAddress
from station.transport.ssh import SshLink

# A file the station never writes: still there means the board's secure storage was not wiped.
CANARY = "/var/lib/tee/untouched-by-the-station"
BOARD_TIMEOUT_S = 60.0


def board_run(
    home: StationHome, device: SimDevice, *remote: str, timeout: float = BOARD_TIMEOUT_S, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``remote`` run on the board by the plain OpenSSH client; with ``check``, a non-zero exit raises."""
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(home.ssh_key),
            "-p",
            str(device.port),
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={home.root / 'test_known_hosts'}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "ConnectTimeout=10",
            f"root@{device.address}",
            *remote,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def board(home: StationHome, device: SimDevice, *remote: str, check: bool = True) -> str:
    """What ``remote`` printed on the board (see :func:`board_run`)."""
    return board_run(home, device, *remote, check=check).stdout


def write_order_file(
    path: Path,
    *,
    order: str,
    quantity: int,
    serials: str,
    profile: str = "welma-optee",
    due: str = "2026-12-31",
) -> Path:
    """A work-order CSV as the ERP writes it: one order of ``quantity`` for ``serials`` (``first-last`` or a list)."""
    path.write_text(f"order,profile,quantity,serials,due\n{order},{profile},{quantity},{serials},{due}\n")
    return path


def open_ssh_link(home: StationHome, device: SimDevice) -> SshLink:
    """The station's SSH link to ``device``, open (first host key pinned), as a unit's worker opens it."""
    link = SshLink(
        DeviceAddress.parse(device.ssh_url),
        identity_file=str(home.ensure_station_key()),
        pinned_host_key=None,
        cancel=threading.Event(),
    )
    link.open(Deadline(30))
    return link
