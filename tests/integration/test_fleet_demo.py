"""`station fleet demo`: a private PostgreSQL for one station home, started and stopped by the station."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from station.config import load_config
from station.fleet.demo import demo_quality_pgpass
from station.fleet.quality import current_account, quality_login, role_for_account, server_dsn
from station.home import StationHome
from station.pki import CertificateAuthority

pytestmark = pytest.mark.integration


def station(home: StationHome, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "station", "--home", str(home.root), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_demo_fleet_starts_registers_the_station_and_stops(tmp_path):
    home = StationHome(tmp_path / "home").create()
    CertificateAuthority.init(home.ca_dir, passphrase=b"demo passphrase")
    state = home.root / "fleet-demo" / "cluster.json"
    try:
        run = station(home, "fleet", "demo")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "demo fleet running: PostgreSQL on 127.0.0.1:" in run.stdout
        fleet = load_config(home.config_file).fleet
        assert fleet is not None and fleet.line == "demo"
        # The account running the demo got a quality lead's own login for its window's Whole fleet scope.
        role = role_for_account(current_account())
        assert f"the window's Whole fleet scope reads as quality lead {role}" in run.stdout
        pgpass = demo_quality_pgpass(home)
        assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
        login = quality_login(server_dsn(fleet.dsn), passfile=pgpass, environ={})
        with login.connect() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            assert conn.execute("SELECT count(*) FROM fleet_stations").fetchone() == (1,)
        status = station(home, "fleet", "status")
        assert status.returncode == 0 and "connection: online" in status.stdout, status.stdout + status.stderr
        again = station(home, "fleet", "demo")  # idempotent: already running, registration renewed
        assert again.returncode == 0, again.stderr
        with login.connect() as conn:  # a new password, in the same file
            assert conn.execute("SELECT current_user").fetchone() == (role,)
        stop = station(home, "fleet", "demo", "--stop")
        assert stop.returncode == 0 and "demo fleet stopped" in stop.stdout
        status = station(home, "fleet", "status")
        assert status.returncode == 3 and "connection: OFFLINE" in status.stdout
    finally:
        if state.exists():
            station(home, "fleet", "demo", "--stop")
            shutil.rmtree(Path(json.loads(state.read_text())["directory"]), ignore_errors=True)
