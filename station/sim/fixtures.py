"""The fixtures file (``HOME/sim/fixtures.toml``): the running simulated devices, machine-readable.

The rest of the station (batch fixture slots, the GUI, demos) reads it to find the boards::

    [[fixture]]
    name = "sim-01"
    device = "ssh://root@127.0.0.2:2222"
    console = "/abs/path/to/pty-link"      # only with --serial-console
    hostname = "sm2s-imx8plus-mbep5-01"
    host_key = "SHA256:..."
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from station.files import write_file_atomically


class FixtureDevice(Protocol):
    """What a fixture entry is made of (SimDevice provides it)."""

    @property
    def name(self) -> str: ...
    @property
    def ssh_url(self) -> str: ...
    @property
    def console_path(self) -> Path | None: ...
    @property
    def hostname(self) -> str: ...
    @property
    def host_key_fingerprint(self) -> str: ...


def _toml_string(value: str) -> str:
    # A JSON string with ASCII escapes is a valid TOML basic string (same escapes, \uXXXX included).
    return json.dumps(value, ensure_ascii=True)


def render_fixtures(devices: Iterable[FixtureDevice]) -> str:
    lines = ["# Simulated Welma devices started by `station sim up`; rewritten by every `up`."]
    for device in devices:
        lines += [
            "",
            "[[fixture]]",
            f"name = {_toml_string(device.name)}",
            f"device = {_toml_string(device.ssh_url)}",
        ]
        if device.console_path is not None:
            lines.append(f"console = {_toml_string(str(device.console_path))}")
        lines.append(f"hostname = {_toml_string(device.hostname)}")
        lines.append(f"host_key = {_toml_string(device.host_key_fingerprint)}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write a file so a reader sees the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name of its own per write: boards swapped in parallel rewrite the same file.
    write_file_atomically(path, text.encode("utf-8"), mode=0o644)


def write_fixtures(path: Path, devices: Iterable[FixtureDevice]) -> None:
    write_atomically(path, render_fixtures(devices))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def refresh_fixtures(path: Path, devices: Callable[[], Iterable[FixtureDevice]]) -> None:
    """Rewrite the fixtures file from ``devices()`` read under a lock, so parallel swaps never write a stale key."""
    with _locked(path):
        write_fixtures(path, devices())
