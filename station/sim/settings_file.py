"""The JSON file in which a simulated farm keeps what ``up`` was asked for and the processes it started
(HOME/sim/farm.json for namespace boards, the OP-TEE farm's own farm.json for QEMU boards)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from station.errors import StationError
from station.sim.fixtures import write_atomically

Settings = TypeVar("Settings")


class JsonSettings(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def save_settings(path: Path, settings: JsonSettings) -> None:
    """Write ``settings`` atomically (a reader sees the old file or the new one)."""
    write_atomically(path, json.dumps(settings.to_json(), indent=2) + "\n")


def load_settings(
    path: Path, from_json: Callable[[dict[str, Any]], Settings], *, when_damaged: str
) -> Settings | None:
    """The settings in ``path``; None when there is no file; a damaged one raises, saying ``when_damaged``."""
    try:
        return from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise StationError(f"{path} is damaged ({exc}); {when_damaged}") from exc
