"""The fixtures file other parts of the station read: valid TOML, one [[fixture]] per board."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from station.sim.fixtures import render_fixtures, write_fixtures


@dataclass(frozen=True)
class Board:
    name: str
    ssh_url: str
    console_path: Path | None
    hostname: str
    host_key_fingerprint: str


def test_fixtures_round_trip_through_tomllib(tmp_path):
    boards = [
        Board("sim-01", "ssh://root@127.0.0.2:2222", None, "sm2s-imx8plus-mbep5-01", "SHA256:abc+/"),
        Board("sim-02", "ssh://root@127.0.0.3:2222", Path('/odd "path"\\here'), "h2", "SHA256:def"),
    ]
    path = tmp_path / "sim" / "fixtures.toml"
    write_fixtures(path, boards)
    parsed = tomllib.loads(path.read_text())["fixture"]
    assert parsed == [
        {
            "name": "sim-01",
            "device": "ssh://root@127.0.0.2:2222",
            "hostname": "sm2s-imx8plus-mbep5-01",
            "host_key": "SHA256:abc+/",
        },
        {
            "name": "sim-02",
            "device": "ssh://root@127.0.0.3:2222",
            "console": '/odd "path"\\here',
            "hostname": "h2",
            "host_key": "SHA256:def",
        },
    ]
    assert not list(path.parent.glob(".*.tmp"))


def test_no_devices_is_an_empty_but_valid_file():
    assert tomllib.loads(render_fixtures([])) == {}
