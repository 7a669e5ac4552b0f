"""A quality lead's window on a line PC reads the whole fleet with the quality lead's own login: the station service
runs as its own account on a 0700 home (the station's fleet password is in there), the window runs as the quality
lead's OS account — its `station fleet grant-quality` role, the password in its own ~/.pgpass — and shows every
station's units from a real PostgreSQL.  An account without a fleet role (holding even the station's password in
its ~/.pgpass) gets the scope's clear refusal saying what to ask for, and the window goes on."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from station.fleet.forwarder import Forwarder
from station.fleet.quality import grant_quality, role_for_account
from station.roles import Role
from tests.helpers.fleet import make_station, provision_synthetic
from tests.helpers.postgres import FleetDb
from tests.helpers.service import account_python, os_accounts, running_service

if TYPE_CHECKING:
    from tests.helpers.fleet import TestStation  # a pytest-collectable name: not imported at run time

pytestmark = [pytest.mark.gui, pytest.mark.integration]

PASSWORD = "the quality lead's own fleet password"
WINDOW_S = 240
SERIALS = {"st-a": ("202600000004000", "202600000004001", "202600000004002"), "st-b": ("202600000004003",)}


@dataclass
class FleetLinePc:
    base: Path
    socket: Path
    station: TestStation
    accounts: dict[str, str]
    homes: dict[str, Path]


def _run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"


def _home_of(account: str, base: Path, pgpass: str) -> Path:
    """A home directory of the account's own (0700, in /etc/passwd too) holding ~/.pgpass (0600)."""
    home = base / f"home-{account}"
    home.mkdir(mode=0o700)
    (home / ".pgpass").write_text(pgpass)
    (home / ".pgpass").chmod(0o600)
    _run("chown", "-R", f"{account}:nogroup", str(home))
    _run("usermod", "-d", str(home), account)
    return home


@pytest.fixture
def fleet_line_pc(fleet_db: FleetDb) -> Iterator[FleetLinePc]:
    """Two stations' units in the fleet; station st-a's service as its own account on its 0700 home; a quality
    lead with a fleet role and ~/.pgpass, and an account of the same OS group without a fleet role."""
    base = Path(tempfile.mkdtemp(prefix="welma-fleetscope-"))
    base.chmod(
        0o711
    )  # the accounts reach the socket's directory and their homes; nothing else in here is theirs
    roles = {"service": None, "lead": Role.QUALITY, "stranger": Role.QUALITY}
    try:
        with os_accounts("wfq", roles) as accounts:
            stations = {name: make_station(base, fleet_db, name, line=f"L-{name}") for name in SERIALS}
            for name, station in stations.items():
                with station.audit() as audit:
                    for serial in SERIALS[name]:
                        provision_synthetic(audit, serial, station=name)
                    while Forwarder(station.fleet, audit).send_once():
                        pass
            a = stations["st-a"]
            assert a.fleet.passfile is not None
            station_line = a.fleet.passfile.read_text()  # the station's own fleet password (a pgpass line)
            role = role_for_account(accounts["lead"])
            with fleet_db.admin() as conn:
                grant_quality(conn, role, PASSWORD)
            port = fleet_db.server.cluster.port
            homes = {
                "lead": _home_of(
                    accounts["lead"], base, f"127.0.0.1:{port}:{fleet_db.name}:{role}:{PASSWORD}\n"
                ),
                # Even the station's password in its ~/.pgpass gets this account no fleet scope: the window logs
                # in as the account's own role.
                "stranger": _home_of(accounts["stranger"], base, station_line),
            }
            run = base / "run"
            run.mkdir()
            run.chmod(0o755)
            _run("chown", "-R", f"{accounts['service']}:nogroup", str(a.home.root), str(run))
            a.home.root.chmod(0o700)
            socket_path = run / "station.sock"
            with running_service(a.home, socket_path, user=accounts["service"], log=base / "service.log"):
                yield FleetLinePc(base, socket_path, a, accounts, homes)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def quality_window_as(pc: FleetLinePc, who: str, pictures: Path) -> dict[str, object]:
    """tests.gui.quality_window run by the account ``who`` (runuser, a clean environment with its own HOME)."""
    prefix, extra = account_python()
    checkout = Path(__file__).resolve().parents[2]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(pc.homes[who]),
        "STATION_SOCKET": str(pc.socket),
        "LANG": "C.UTF-8",
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": str(checkout),
        **extra,
    }
    done = subprocess.run(
        [
            "runuser",
            "-u",
            pc.accounts[who],
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in env.items()),
            prefix[0],
            "-m",
            "tests.gui.quality_window",
            "quinn",
            str(pictures),
        ],
        capture_output=True,
        text=True,
        timeout=WINDOW_S,
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(report, dict)
    return report


def test_a_quality_lead_s_window_reads_the_whole_fleet_with_their_own_login(
    fleet_line_pc: FleetLinePc, tmp_path: Path
) -> None:
    pc = fleet_line_pc
    home = pc.station.home.root
    info = home.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700  # the station's fleet password is out of the window's reach
    reports = {}
    for who in ("lead", "stranger"):
        # Each window saves its picture (to look at) where its account may write: out of pytest's private tmp.
        pictures = Path(tempfile.mkdtemp(prefix="welma-fleetscope-pictures-"))
        pictures.chmod(0o777)
        try:
            reports[who] = quality_window_as(pc, who, pictures)
            shutil.copy2(pictures / "fleet-scope.png", tmp_path / f"fleet-scope-{who}.png")
        finally:
            shutil.rmtree(pictures, ignore_errors=True)
    lead, stranger = reports["lead"], reports["stranger"]

    role = role_for_account(pc.accounts["lead"])
    login = lead["login"]
    assert isinstance(login, dict)
    assert login["role"] == role and login["account"] == pc.accounts["lead"] and login["passfile"] is None
    assert f"user={role}" in str(login["dsn"])
    # Every station's units, through the quality lead's own login.
    assert lead["serials"] == sorted(s for serials in SERIALS.values() for s in serials), lead
    assert lead["stations"] == ["st-a", "st-b"]
    assert "4 of 4 units across the fleet loaded" in str(lead["message"]) and not lead["red"]

    strange_role = role_for_account(pc.accounts["stranger"])
    assert isinstance(stranger["login"], dict) and stranger["login"]["role"] == strange_role
    words = str(stranger["message"])
    assert stranger["red"] and stranger["serials"] == []
    assert (
        f"The fleet refused the login {strange_role} (no password for {strange_role} in ~/.pgpass)" in words
    ), words
    assert f"Ask an administrator for `station fleet grant-quality {strange_role}`" in words
    assert "put the password in ~/.pgpass as the line 127.0.0.1:" in words
