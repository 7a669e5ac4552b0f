"""`station sim down` leaves nothing behind: no process, listener, mount or file outside the home."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from station.sim.process import ProcessRef

pytestmark = pytest.mark.integration

# Paths a board uses inside its namespaces; none may appear on the host.
BOARD_ONLY_PATHS = ("/usr/lib/libckteec.so.0", "/var/lib/tee", "/run/sim", "/run/ssh")


def descendants(root: ProcessRef) -> list[ProcessRef]:
    found, todo = [], [root]
    while todo:
        process = todo.pop()
        found.append(process)
        todo.extend(process.children())
    return found


def mounts_mentioning(text: str) -> list[str]:
    """Mount table lines, of every process on the host, that mention ``text``."""
    hits = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                hits += [line for line in (entry / "mountinfo").read_text().splitlines() if text in line]
            except OSError:  # gone meanwhile, or a zombie (no mount table)
                continue
    return hits


def listening(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((address, port)) == 0


def command_name(pid: int) -> str | None:
    """The process's name, or None if it ended in the meantime (a board's boot helpers are short-lived)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return None


def test_down_stops_everything_the_farm_started(start_farm, ssh, sim_farm, sim_home):
    preexisting = {path for path in BOARD_ONLY_PATHS if os.path.lexists(path)}
    devices = start_farm(3, serial_console=True)
    ssh(devices[0], "sleep 60 </dev/null >/dev/null 2>&1 &")  # outlives its session
    power_pids = [int((d.state_dir / "run" / "power.pid").read_text()) for d in devices]
    processes = [p for pid in power_pids for p in descendants(ProcessRef.of(pid))]
    commands = {comm for p in processes if (comm := command_name(p.pid))}
    assert {"bash", "unshare", "sshd", "socat", "sleep"} <= commands
    assert mounts_mentioning(str(sim_home.root))  # the boards' overlays, in their namespaces

    sim_farm.down()

    assert [p for p in processes if p.alive()] == []
    assert not any(listening(d.address, d.port) for d in devices)
    assert mounts_mentioning(str(sim_home.root)) == []
    assert not (sim_home.sim_dir / "fixtures.toml").exists()
    assert not any(d.console_path.exists() or d.console_path.is_symlink() for d in devices)
    assert {path for path in BOARD_ONLY_PATHS if os.path.lexists(path)} == preexisting
    assert [d.state for d in sim_farm.status()] == ["down", "down", "down"]

    sim_farm.down()  # twice is harmless


def test_boards_keep_their_state_across_down_and_up(start_farm, ssh):
    (device,) = start_farm(1)
    ssh(device, "echo issued > /var/lib/key0.cert")
    (again,) = start_farm(1, port=device.port)  # restarts the farm in the same home
    assert again.host_key_fingerprint == device.host_key_fingerprint
    assert ssh(again, "cat /var/lib/key0.cert", strict=True).stdout == "issued\n"
