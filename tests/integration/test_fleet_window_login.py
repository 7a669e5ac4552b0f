"""The window's "Whole fleet" scope logs in as the quality lead, never as the station: a real station service
tells the window the fleet's server and database only (its `window` request: no user, no password, no passfile),
and the login built from that — the quality lead's own `grant-quality` role, the password from their own pgpass —
reads the whole fleet from a real PostgreSQL; a missing role, a wrong password or a revoked role is refused with
words saying what to do.  (tests/gui/test_fleet_scope_on_line_pc.py runs the window itself as OS accounts.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from station.fleet.forwarder import Forwarder
from station.fleet.quality import (
    QualityLoginRefused,
    grant_quality,
    quality_login,
    revoke_quality,
    role_for_account,
)
from station.fleet.queries import FleetFilter, count_units
from station.service.client import ServiceClient
from tests.helpers.fleet import make_station, provision_synthetic
from tests.helpers.postgres import FleetDb
from tests.helpers.service import running_service

if TYPE_CHECKING:
    from tests.helpers.fleet import TestStation  # a pytest-collectable name: not imported at run time

pytestmark = pytest.mark.integration

PASSWORD = "quality lead's own password"


def _send_all(station: TestStation) -> None:
    with station.audit() as audit:
        while Forwarder(station.fleet, audit).send_once():
            pass


def _pgpass(path: Path, db: FleetDb, role: str, password: str) -> Path:
    path.write_text(f"*:{db.server.cluster.port}:{db.name}:{role}:{password}\n")
    path.chmod(0o600)
    return path


def test_the_service_names_the_fleet_server_and_the_quality_lead_reads_it_with_their_own_login(
    tmp_path: Path, fleet_db: FleetDb
) -> None:
    a = make_station(tmp_path, fleet_db, "st-a", line="L1")
    b = make_station(tmp_path, fleet_db, "st-b", line="L2")
    for station, serials in ((a, ("202600000003000", "202600000003001")), (b, ("202600000003002",))):
        with station.audit() as audit:
            for serial in serials:
                provision_synthetic(audit, serial, station=station.fleet.station_name)
        _send_all(station)
    assert a.fleet.passfile is not None
    station_role = a.fleet.dsn.split("//", 1)[1].split("@", 1)[0]
    station_password = a.fleet.passfile.read_text().strip().rsplit(":", 1)[1]

    socket_path = tmp_path / "station.sock"
    with running_service(a.home, socket_path, log=tmp_path / "service.log"):
        with ServiceClient.connect(socket_path) as client:
            record = client.call("window", {})
    entry = record["fleet"]
    assert entry["station_name"] == "st-a" and entry["line"] == "L1"
    # The server and database only: nothing of the station's login anywhere in what the window is told.
    sent = json.dumps(record)
    for secret in (station_role, station_password, str(a.fleet.passfile), "pgpass", "password=", "passfile"):
        assert secret not in sent, secret
    assert (
        f"port={fleet_db.server.cluster.port}" in entry["dsn"] and f"dbname={fleet_db.name}" in entry["dsn"]
    )

    # The quality lead's own role (grant-quality's, for their account) and their own pgpass.
    account = "Quinn.Lead"
    role = role_for_account(account)
    with fleet_db.admin() as conn:
        grant_quality(conn, role, PASSWORD)
    own = _pgpass(tmp_path / "quinn.pgpass", fleet_db, role, PASSWORD)
    login = quality_login(entry["dsn"], account=account, passfile=own, environ={})
    with login.connect() as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
        assert count_units(conn, FleetFilter()) == 3  # both stations' units
        assert count_units(conn, FleetFilter(line="L2")) == 1

    # Holding only the station's password gets nobody in through the window: the login is the account's role.
    stolen = _pgpass(tmp_path / "station-line.pgpass", fleet_db, station_role, station_password)
    with pytest.raises(QualityLoginRefused) as refused:
        quality_login(entry["dsn"], account="stranger", passfile=stolen, environ={}).connect()
    words = str(refused.value)
    assert "The fleet refused the login stranger (" in words
    assert "Ask an administrator for `station fleet grant-quality stranger`" in words
    assert f"as the line 127.0.0.1:{fleet_db.server.cluster.port}:{fleet_db.name}:stranger:PASSWORD" in words

    # A wrong password, then a revoked role: refused, each saying so.
    wrong = _pgpass(tmp_path / "wrong.pgpass", fleet_db, role, "not the password at all")
    with pytest.raises(QualityLoginRefused, match="password authentication failed"):
        quality_login(entry["dsn"], account=account, passfile=wrong, environ={}).connect()
    with fleet_db.admin() as conn:
        revoke_quality(conn, role)
    with pytest.raises(QualityLoginRefused, match="not permitted to log in"):
        login.connect()
