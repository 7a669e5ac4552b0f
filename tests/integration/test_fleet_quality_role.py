"""`station fleet grant-quality NAME`: a quality lead's own login, made by the command (not by hand-typed SQL),
against the real PostgreSQL the tests start. The password goes in on standard input (never argv) and reaches the
server only as a SCRAM verifier; the role reads the fleet and the fleet commands work with it, and PostgreSQL
refuses it every write — the journal, the derived tables, the claims function. --revoke takes the login away."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import psycopg
import pytest

from station.cli import main
from station.fleet.connection import FleetError, FleetUnavailable, connect
from station.fleet.forwarder import Forwarder
from station.fleet.schema import write_pgpass
from tests.helpers.fleet import make_station, provision_synthetic

pytestmark = pytest.mark.integration

PASSWORD = "a quality lead's passphrase 7"


def _station_cli(*argv: str, pgpass, stdin: str = "", home=None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["PGPASSFILE"] = str(pgpass)
    command = [sys.executable, "-m", "station", *(["--home", str(home)] if home else []), *argv]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, env=env)


def test_a_quality_lead_role_made_by_the_command_reads_the_fleet_and_cannot_write(tmp_path, fleet_db):
    station = make_station(tmp_path, fleet_db, "st-a", line="L1")
    with station.audit() as audit:
        provision_synthetic(audit, "202600000006000", station="st-a")
        while Forwarder(station.fleet, audit).send_once():
            pass

    run = _station_cli(
        "fleet",
        "grant-quality",
        "alice",
        "--dsn",
        fleet_db.admin_dsn,
        pgpass=fleet_db.admin_pgpass,
        stdin=PASSWORD + "\n",
    )
    assert run.returncode == 0, run.stderr
    assert "created alice: member of" in run.stdout and "reads the fleet, writes nothing" in run.stdout
    assert PASSWORD not in run.stdout + run.stderr
    with fleet_db.admin() as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'").fetchone()[0]
        groups = {
            row[0]
            for row in conn.execute(
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = 'alice'"
            ).fetchall()
        }
    assert stored.startswith("SCRAM-SHA-256$") and PASSWORD not in stored
    assert groups == {f"{fleet_db.name}_quality"}

    # The lead's own pgpass, as the command told them; the quality leads' commands work with --dsn.
    cluster = fleet_db.server.cluster
    lead_pgpass = tmp_path / "alice.pgpass"
    write_pgpass(
        lead_pgpass,
        host="127.0.0.1",
        port=cluster.port,
        database=fleet_db.name,
        role="alice",
        password=PASSWORD,
    )
    lead_dsn = f"postgresql://alice@127.0.0.1:{cluster.port}/{fleet_db.name}"
    units = _station_cli("fleet", "units", "--dsn", lead_dsn, pgpass=lead_pgpass, home=tmp_path / "no-home")
    assert units.returncode == 0, units.stderr
    assert "202600000006000" in units.stdout and "1 of 1 matching units" in units.stdout

    with connect(lead_dsn, passfile=lead_pgpass) as conn:
        assert conn.execute("SELECT count(*) FROM fleet_journal").fetchone()[0] > 0
        refused = {
            "insert into the journal": "INSERT INTO fleet_journal (station, seq, at, kind, payload, prev_hash, hash) "
            "VALUES ('st-a', 999, 'x', 'x', '{}', 'x', 'x')",
            "update a unit": "UPDATE fleet_units SET state = 'failed'",
            "delete a certificate": "DELETE FROM fleet_certificates",
            "truncate the journal": "TRUNCATE fleet_journal",
            "claim a serial": "SELECT * FROM fleet_check_unit('202600000006001', 1, false, NULL)",
        }
        for what, statement in refused.items():
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(statement)
            # Refused by PostgreSQL: no privilege (42501), or the read-only session (25006).
            assert caught.value.sqlstate in ("42501", "25006"), f"{what}: {caught.value}"
        # Without the read-only default, the grants alone still refuse.
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE fleet_units SET state = 'failed'")
    with fleet_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM fleet_units WHERE state = 'failed'").fetchone()[0] == 0

    # A new password by running it again; --revoke takes the login away.
    again = _station_cli(
        "fleet",
        "grant-quality",
        "alice",
        "--dsn",
        fleet_db.admin_dsn,
        pgpass=fleet_db.admin_pgpass,
        stdin=PASSWORD + "!\n",
    )
    assert again.returncode == 0 and "new password for alice" in again.stdout
    revoke = _station_cli(
        "fleet",
        "grant-quality",
        "alice",
        "--dsn",
        fleet_db.admin_dsn,
        "--revoke",
        pgpass=fleet_db.admin_pgpass,
    )
    assert revoke.returncode == 0 and "alice can no longer log in" in revoke.stdout
    with pytest.raises((FleetError, FleetUnavailable)):
        connect(lead_dsn, passfile=lead_pgpass).close()


def test_grant_quality_refuses_bad_names_short_passwords_and_roles_that_can_write(
    tmp_path, fleet_db, monkeypatch, capsys
):
    station = make_station(tmp_path, fleet_db, "st-a", line="L1")
    station_role = station.fleet.dsn.split("//")[1].split("@")[0]
    monkeypatch.setenv("PGPASSFILE", str(fleet_db.admin_pgpass))
    cases = [
        ("Alice; DROP", PASSWORD, "is not a usable role name"),
        ("bob", "short", "too short"),
        (station_role, PASSWORD, "more rights than reading"),
        (f"{fleet_db.name}_stations", PASSWORD, "one of the fleet's groups"),
        ("welma_admin", PASSWORD, "more rights than reading"),
        ("carol", "", "No password on standard input"),
    ]
    for name, typed, message in cases:
        monkeypatch.setattr(sys, "stdin", io.StringIO(typed + "\n" if typed else ""))
        code = main(
            ["--home", str(tmp_path / "no-home"), "fleet", "grant-quality", name, "--dsn", fleet_db.admin_dsn]
        )
        said = capsys.readouterr()
        assert code != 0, name
        assert message in said.err + said.out, (name, said.err)
    with fleet_db.admin() as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('bob', 'carol')").fetchone()[0] == 0
        )
        # The station's own role kept exactly its rights.
        assert (
            conn.execute(
                "SELECT pg_has_role(%s, %s, 'MEMBER')", [station_role, f"{fleet_db.name}_quality"]
            ).fetchone()[0]
            is False
        )
