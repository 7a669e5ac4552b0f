"""Processes of the farm, identified by PID and start time so a recycled PID is never signalled.

``station sim down`` stops exactly what the farm started, by PID, never by name.  A PID alone can
be reused by an unrelated process once ours has exited, so every reference also carries the
process's start time (field 22 of ``/proc/PID/stat``) and is checked before each signal.
A zombie counts as gone: it holds nothing, and on hosts whose PID 1 does not reap orphans it
never disappears from /proc.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after ``pid (comm)``: [state, ppid, ...], or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses: the fields start after the last ")".
    return raw[raw.rindex(")") + 2 :].split()


@dataclass(frozen=True)
class ProcessRef:
    """One process we started: its PID and start time (clock ticks since boot)."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """Reference the process now running as ``pid``; None if none runs (or only a zombie)."""
        fields = _stat_fields(pid)
        if fields is None or fields[0] == "Z":
            return None
        return cls(pid, int(fields[19]))

    @classmethod
    def from_pid_file(cls, path: Path, *, parent: ProcessRef | None = None) -> ProcessRef | None:
        """The process whose PID a script wrote to ``path``, if it runs (and is ``parent``'s child)."""
        try:
            pid = int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        ref = cls.of(pid)
        if ref is None or (parent is not None and ref.parent_pid() != parent.pid):
            return None
        return ref

    def alive(self) -> bool:
        fields = _stat_fields(self.pid)
        return fields is not None and fields[0] != "Z" and int(fields[19]) == self.start_time

    def parent_pid(self) -> int | None:
        fields = _stat_fields(self.pid)
        return int(fields[1]) if fields is not None else None

    def children(self) -> list[ProcessRef]:
        """Direct children, while this process is alive."""
        if not self.alive():
            return []
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except FileNotFoundError:
            return []
        refs = (ProcessRef.of(int(pid)) for pid in text.split())
        return [ref for ref in refs if ref is not None]

    def signal(self, signum: signal.Signals) -> bool:
        """Send ``signum`` if this is still the same process; True if it was sent."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> ProcessRef:
        return cls(int(data["pid"]), int(data["start_time"]))


def wait_gone(refs: list[ProcessRef], timeout_s: float, poll_s: float = 0.02) -> list[ProcessRef]:
    """Wait until every process has exited or ``timeout_s`` passed; return those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = [ref for ref in refs if ref.alive()]
    while alive and time.monotonic() < deadline:
        time.sleep(poll_s)
        alive = [ref for ref in alive if ref.alive()]
    return alive
