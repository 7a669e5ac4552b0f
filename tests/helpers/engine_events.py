"""What every driver of the engine must see of a unit: the same events, in the same order.

`station batch --events`, the window's single-board page and its batch grid all run units through
station.engine's one scheduler; these helpers reduce a unit's events to their shape (kind and step, device
output left out — a batch tile does not ask for it) so one test per driver can compare them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from station.profiles import DeviceProfile

SHAPED_KINDS = ("unit_planned", "unit_started", "step_started", "step_finished", "unit_finished")


def expected_shape(profile: DeviceProfile) -> list[tuple[str, str, str]]:
    """A unit that passes at the first try: planned, started, each step started and passed, finished."""
    shape = [("unit_planned", "", ""), ("unit_started", "", "")]
    for step in profile.step_names():
        shape += [("step_started", step, ""), ("step_finished", step, "passed")]
    return [*shape, ("unit_finished", "", "passed")]


def unit_shape(events: Iterable[Any], serial: str) -> list[tuple[str, str, str]]:
    """The shape of ``serial``'s events (FlowEvent objects or their JSON records)."""
    shape = []
    for event in events:
        get = event.get if isinstance(event, dict) else lambda name, e=event: getattr(e, name)
        if get("serial") != serial or get("kind") not in SHAPED_KINDS:
            continue
        kind = get("kind")
        step = get("step") if kind in ("step_started", "step_finished") else ""
        outcome = get("outcome") if kind in ("step_finished", "unit_finished") else ""
        shape.append((kind, step, outcome))
    return shape


def worker_pids(events: Iterable[Any], serial: str) -> set[int]:
    """The processes that ran ``serial``'s steps (never this test's own)."""
    pids = set()
    for event in events:
        get = event.get if isinstance(event, dict) else lambda name, e=event: getattr(e, name)
        if get("serial") == serial and get("kind") in ("unit_started", "step_started") and get("pid"):
            pids.add(int(get("pid")))
    assert os.getpid() not in pids
    return pids


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (from /proc): a station's fork server, its workers, its trackers."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(parent_of(int(entry.name)), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def carries(pid: int, secret: str) -> bool:
    """Whether a process's command line or environment holds ``secret`` (or it is gone: then it holds nothing)."""
    try:
        return any(
            secret.encode() in Path(f"/proc/{pid}/{part}").read_bytes() for part in ("cmdline", "environ")
        )
    except OSError:
        return False


def forkserver(pids: Iterable[int]) -> int | None:
    """Which of ``pids`` is a multiprocessing fork server (its workers, forked from it, carry the same command
    line: the server is the one whose parent is not one of them)."""
    servers = set()
    for pid in pids:
        try:
            if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                servers.add(pid)
        except OSError:
            pass
    for pid in servers:
        try:
            if parent_of(pid) not in servers:
                return pid
        except (OSError, IndexError, ValueError):
            pass
    return None
