"""A station service started for the current user (by the window or a command, station.service.client) ends by
itself once idle — and is reaped by the process that started it: it does not stay a zombie under a window that
keeps running."""

from __future__ import annotations

import time
from pathlib import Path

from station.home import StationHome
from station.service import frames
from station.service.client import connect

WAIT_S = 60.0


def state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), None once it is gone (reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    line = next(line for line in status.splitlines() if line.startswith("State:"))
    return line.split()[1]


def test_a_service_started_by_a_long_running_process_is_reaped_when_it_ends(tmp_path: Path) -> None:
    home = StationHome(tmp_path / "home").create()
    client = connect(str(home.root), start=True)
    assert client is not None
    with client:
        assert client.call("whoami")["home"] == str(home.root)
        pid, _uid, _gid = frames.peer_credentials(client.sock)
    # This test's process goes on (as a window would); the service, idle now, ends — and is gone, not a zombie.
    end = time.monotonic() + WAIT_S
    seen: list[str | None] = []
    while (now := state(pid)) is not None:
        seen.append(now)
        assert time.monotonic() < end, (
            f"the service {pid} is still there after {WAIT_S:g} s (states {set(seen)})"
        )
        time.sleep(0.1)
