"""A quality lead's own login to the fleet, as the window builds it (station/fleet/quality.py): the station service
names only the server and database (no user, password, passfile or client key), the role is the OS account's,
the password where libpq looks, and a refused login says what to ask for and where the password goes.  No server
here: tests/integration/test_fleet_window_login.py logs in to a real one."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from station.config import FleetConfig
from station.fleet.quality import (
    QualityLogin,
    check_role_name,
    quality_login,
    role_for_account,
    server_dsn,
)
from station.service import window_ops
from station.service.window_client import FleetServer, _fleet_server


@pytest.mark.parametrize(
    ("account", "role"),
    [
        ("alice", "alice"),
        ("qa_bob", "qa_bob"),
        ("Jean.Dupont", "jean_dupont"),
        ("marie-claire", "marie_claire"),
        ("7of9", "qa_7of9"),
        ("x" * 80, "x" * 63),
    ],
)
def test_the_role_of_an_os_account_is_one_grant_quality_accepts(account: str, role: str) -> None:
    assert role_for_account(account) == role
    assert check_role_name(role) == role  # what `station fleet grant-quality ROLE` takes


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://st_line1:secret@db.plant:5433/fleet?sslmode=verify-full&sslrootcert=/etc/ssl/fleet-ca.pem"
        "&sslcert=/home/st/fleet/client.crt&sslkey=/home/st/fleet/client.key&passfile=/home/st/fleet/pgpass",
        "host=db.plant port=5433 dbname=fleet user=st_line1 password=secret sslmode=verify-full "
        "sslrootcert=/etc/ssl/fleet-ca.pem sslcert=/home/st/fleet/client.crt sslkey=/home/st/fleet/client.key "
        "passfile=/home/st/fleet/pgpass",
    ],
)
def test_the_server_dsn_keeps_the_server_and_drops_every_login(dsn: str) -> None:
    server = server_dsn(dsn)
    assert conninfo_to_dict(server) == {
        "host": "db.plant",
        "port": "5433",
        "dbname": "fleet",
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ssl/fleet-ca.pem",
    }
    for secret in ("st_line1", "secret", "pgpass", "client.key", "client.crt"):
        assert secret not in server


def test_the_window_op_names_the_fleet_server_and_never_the_station_s_login(tmp_path: Path) -> None:
    passfile = tmp_path / "home" / "fleet" / "pgpass"
    fleet = FleetConfig(
        dsn="postgresql://st_line1@127.0.0.1:5433/fleet",
        station_name="line-1",
        line="L1",
        passfile=passfile,
    )
    entry = window_ops._fleet(fleet)
    assert entry == {"dsn": "dbname=fleet host=127.0.0.1 port=5433", "station_name": "line-1", "line": "L1"}
    assert window_ops._fleet(None) is None
    assert _fleet_server(entry) == FleetServer("dbname=fleet host=127.0.0.1 port=5433", "line-1", "L1")
    assert _fleet_server(None) is None  # no [fleet] (or a service older than the entry): no fleet scope


def test_the_login_is_the_account_s_role_with_libpq_s_password_sources(tmp_path: Path) -> None:
    server = "host=db.plant port=5433 dbname=fleet"
    login = quality_login(server, account="Jean.Dupont", environ={})
    assert conninfo_to_dict(login.dsn) == {
        "host": "db.plant",
        "port": "5433",
        "dbname": "fleet",
        "user": "jean_dupont",
    }
    assert login.passfile is None and login.password_in == "~/.pgpass"  # libpq finds ~/.pgpass itself
    # libpq's own overrides: $PGUSER names another role, $PGPASSFILE another password file.
    other = quality_login(
        server, account="jean", environ={"PGUSER": "qa_jean", "PGPASSFILE": "/srv/q.pgpass"}
    )
    assert other.role == "qa_jean" and other.password_in == "/srv/q.pgpass" and other.passfile is None
    demo = quality_login(server, account="jean", passfile=tmp_path / "quality.pgpass", environ={})
    assert demo.passfile == tmp_path / "quality.pgpass" and demo.password_in == str(
        tmp_path / "quality.pgpass"
    )


def test_a_refused_login_says_what_to_ask_for_and_where_the_password_goes() -> None:
    login = QualityLogin(server="host=db.plant port=5433 dbname=fleet", role="alice", account="alice")
    words = login.refusal(
        'connection failed: connection to server at "db.plant" (10.0.0.5), port 5433 failed: FATAL:  password '
        'authentication failed for user "alice"'
    )
    assert words.startswith(
        'The fleet refused the login alice (password authentication failed for user "alice").'
    )
    assert "ask an administrator for `station fleet grant-quality alice`" in words.lower()
    assert "put the password in ~/.pgpass as the line db.plant:5433:fleet:alice:PASSWORD" in words
    assert "chmod 600 ~/.pgpass" in words and "press Apply" in words


def test_the_window_s_login_is_its_own_and_the_demo_s_password_file_only_where_it_can_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ui.session.fleet_for_view: the service's fleet entry, the role of the account running the window, never
    the station's passfile; a demo's quality.pgpass where this account can read the home, unless $PGPASSFILE."""
    from dataclasses import replace

    from station.fleet.demo import demo_quality_pgpass
    from station.fleet.quality import current_account
    from station.home import StationHome
    from station.pki import CertificateAuthority
    from station.service.server import StationService
    from station.service.window_client import WindowView
    from ui.session import Session

    home = StationHome(tmp_path / "home").create()
    CertificateAuthority.init(home.ca_dir, passphrase=b"unit test passphrase")
    home.config_file.write_text('[station]\nname = "line-3"\n')
    service = StationService(home, tmp_path / "station.sock")
    try:
        view = WindowView.from_record(window_ops.handlers(service)["window"](None, {}))  # type: ignore[arg-type]
    finally:
        service.close()
    session = Session(client=None, view=view)  # type: ignore[arg-type] - no call reaches the service here
    assert session.fleet_for_view() is None  # no [fleet]: no Whole fleet scope
    server = FleetServer("dbname=fleet host=127.0.0.1 port=5433", "line-3", "L1")
    session.view = replace(view, fleet_server=server)
    monkeypatch.delenv("PGUSER", raising=False)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    login = session.fleet_for_view()
    assert login is not None and login.role == role_for_account(current_account()) and login.passfile is None
    assert conninfo_to_dict(login.dsn)["user"] == login.role
    demo = demo_quality_pgpass(home)
    demo.parent.mkdir(parents=True, exist_ok=True)
    demo.write_text("*:5433:fleet:someone:secret\n")
    demo.chmod(0o600)
    login = session.fleet_for_view()
    assert login is not None and login.passfile == demo
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "mine.pgpass"))
    login = session.fleet_for_view()
    assert login is not None and login.passfile is None and login.password_in == str(tmp_path / "mine.pgpass")
