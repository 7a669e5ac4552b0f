"""Recorded board transcripts: what a real simulated Welma board answered to the station's link calls.

A transcript is a JSON file under ``tests/transcripts/``: the board's host key and the station's address as
the board saw it, then every link call of one unit in order — ``open``, ``run`` (the command line as the
board's shell received it, its stdout, stderr and exit status), ``get`` (the file's bytes, base64), ``put``
(path and sha256 of what was written) and ``reboot``.  :mod:`tests.helpers.record_transcripts` makes them
from a real simulated board; :class:`tests.helpers.fake_link.FakeLink` replays them in unit tests.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRANSCRIPTS_DIR = Path(__file__).resolve().parent.parent / "transcripts"
# The TLS proof's server address changes with every run (a free port): commands are matched without it.
_ENDPOINT = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}:\d+\b")


def command_key(rendered: str) -> str:
    """How a recorded command is matched on replay: the command line, any ``host:port`` made generic."""
    return _ENDPOINT.sub("HOST:PORT", rendered)


@dataclass(frozen=True)
class Exchange:
    """One link call and what the board answered."""

    op: str  # open | run | get | put | reboot
    command: str = ""
    stdout: str = ""
    stderr: str = ""
    exit_status: int = 0
    path: str = ""
    data: bytes = b""
    sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"op": self.op}
        if self.op == "run":
            entry.update(
                command=self.command, stdout=self.stdout, stderr=self.stderr, exit_status=self.exit_status
            )
        elif self.op == "get":
            entry.update(path=self.path, data_b64=base64.b64encode(self.data).decode("ascii"))
        elif self.op == "put":
            entry.update(path=self.path, sha256=self.sha256)
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Exchange:
        return cls(
            op=entry["op"],
            command=entry.get("command", ""),
            stdout=entry.get("stdout", ""),
            stderr=entry.get("stderr", ""),
            exit_status=int(entry.get("exit_status", 0)),
            path=entry.get("path", ""),
            data=base64.b64decode(entry.get("data_b64", "")),
            sha256=entry.get("sha256", ""),
        )


@dataclass
class Transcript:
    """Every link call of one unit on one recorded board."""

    name: str
    serial: str = ""
    profile: str = ""
    host_key: tuple[str, str] | None = None
    local_address: str | None = None
    note: str = ""
    exchanges: list[Exchange] = field(default_factory=list)

    def runs(self, needle: str) -> list[Exchange]:
        """The recorded ``run`` calls whose command line contains ``needle``."""
        return [e for e in self.exchanges if e.op == "run" and needle in e.command]

    def save(self, directory: Path = TRANSCRIPTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        document = {
            "name": self.name,
            "serial": self.serial,
            "profile": self.profile,
            "host_key": list(self.host_key) if self.host_key else None,
            "local_address": self.local_address,
            "note": self.note,
            "exchanges": [e.to_json() for e in self.exchanges],
        }
        path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, name: str, directory: Path = TRANSCRIPTS_DIR) -> Transcript:
        document = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
        key = document.get("host_key")
        return cls(
            name=document["name"],
            serial=document.get("serial", ""),
            profile=document.get("profile", ""),
            host_key=(key[0], key[1]) if key else None,
            local_address=document.get("local_address"),
            note=document.get("note", ""),
            exchanges=[Exchange.from_json(e) for e in document["exchanges"]],
        )
