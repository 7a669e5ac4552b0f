"""Store-and-forward into a real PostgreSQL: in order, idempotent, nothing lost while the server is stopped or
paused, a crash between the central commit and the local mark re-sends harmlessly, and the station role can only
insert."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from station.fleet.connection import connect
from station.fleet.forwarder import Forwarder, start_forwarder, stop_forwarder
from station.fleet.guard import FleetGuard
from station.fleet.schema import MIGRATIONS
from tests.helpers.fleet import make_station, provision_synthetic

pytestmark = pytest.mark.integration


def central_events(db, station: str) -> list[tuple[int, str]]:
    with db.admin() as conn:
        return [
            (int(s), h)
            for s, h in conn.execute(
                "SELECT seq, hash FROM fleet_journal WHERE station = %s ORDER BY seq", [station]
            ).fetchall()
        ]


def local_events(audit) -> list[tuple[int, str]]:
    return sorted(audit.event_hashes(1, 10**9).items())


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_every_event_arrives_in_order_once_and_the_derived_units_match(tmp_path, fleet_db):
    station = make_station(tmp_path, fleet_db, "st-a")
    with station.audit() as audit:
        for n in range(5):
            provision_synthetic(audit, f"20260000000010{n}", station="st-a")
        forwarder = Forwarder(station.fleet, audit)
        while forwarder.send_once():
            pass
        assert central_events(fleet_db, "st-a") == local_events(audit)
        assert forwarder.status().backlog == 0 and forwarder.status().state == "online"
        # Sending the same events again (as after a crash before the local mark) changes nothing.
        audit_mark = audit.fleet_backlog()[0]
        forwarder._set(forwarded_seq=0)
        with connect(station.fleet.dsn, passfile=station.fleet.passfile) as conn:
            rows = [
                (s, e["seq"], e["at"], e["kind"], e["unit_id"], e["payload"], e["prev_hash"], e["hash"])
                for s, e in (("st-a", e) for e in audit.events_after(0, limit=1000))
            ]
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO fleet_journal (station, seq, at, kind, unit_id, payload, prev_hash, hash) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (station, seq) DO NOTHING",
                    rows,
                )
        assert central_events(fleet_db, "st-a") == local_events(audit)
        assert audit.fleet_backlog()[0] == audit_mark
    with fleet_db.admin() as conn:
        states = conn.execute(
            "SELECT serial, state FROM fleet_units WHERE station = 'st-a' ORDER BY serial"
        ).fetchall()
        certificates = conn.execute(
            "SELECT count(*) FROM fleet_certificates WHERE station = 'st-a'"
        ).fetchone()[0]
    assert states == [(f"20260000000010{n}", "passed") for n in range(5)]
    assert certificates == 5


def test_the_station_role_can_insert_but_never_update_or_delete_and_never_write_for_another_station(
    tmp_path, fleet_db
):
    a = make_station(tmp_path, fleet_db, "st-a")
    make_station(tmp_path, fleet_db, "st-b")
    with a.audit() as audit:
        provision_synthetic(audit, "202600000000201", station="st-a")
        Forwarder(a.fleet, audit).send_once()
    with connect(a.fleet.dsn, passfile=a.fleet.passfile) as conn:
        for statement in (
            "UPDATE fleet_journal SET payload = '{}' WHERE station = 'st-a'",
            "DELETE FROM fleet_journal WHERE station = 'st-a'",
            "UPDATE fleet_units SET state = 'aborted'",
            "DELETE FROM fleet_units",
            "DELETE FROM fleet_certificates",
            "DELETE FROM fleet_claims",
            "UPDATE fleet_stations SET ca_fingerprint = 'x'",
            "TRUNCATE fleet_journal",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="writes the journal of station st-a only"
        ):
            conn.execute(
                "INSERT INTO fleet_journal (station, seq, at, kind, payload, prev_hash, hash) "
                "VALUES ('st-b', 1, 'x', 'unit.started', '{}', 'x', 'x')"
            )
    assert len(central_events(fleet_db, "st-a")) > 0


def test_a_quality_lead_role_reads_the_fleet_and_writes_nothing(tmp_path, fleet_db):
    from psycopg import sql

    from station.fleet.schema import role_names, scram_verifier, write_pgpass

    a = make_station(tmp_path, fleet_db, "st-a")
    with a.audit() as audit:
        provision_synthetic(audit, "202600000000251", station="st-a")
        Forwarder(a.fleet, audit).send_once()
    lead = f"{fleet_db.name}_alice"
    with fleet_db.admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(lead),
                sql.Literal(scram_verifier("alice-pw")),
                sql.Identifier(role_names(fleet_db.name).readers),
            )
        )
    passfile = tmp_path / "alice.pgpass"
    write_pgpass(
        passfile,
        host="127.0.0.1",
        port=fleet_db.server.cluster.port,
        database=fleet_db.name,
        role=lead,
        password="alice-pw",
    )
    dsn = f"postgresql://{lead}@127.0.0.1:{fleet_db.server.cluster.port}/{fleet_db.name}"
    with connect(dsn, passfile=passfile) as conn:
        assert conn.execute("SELECT count(*) FROM fleet_units").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO fleet_journal (station, seq, at, kind, payload, prev_hash, hash) "
                "VALUES ('st-a', 999, 'x', 'x', '{}', 'x', 'x')"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM fleet_check_unit('x', 1, false, NULL)")


def test_a_crash_between_the_central_commit_and_the_local_mark_resends_without_duplicates(tmp_path, fleet_db):
    station = make_station(tmp_path, fleet_db, "st-a")
    with station.audit() as audit:
        for n in range(3):
            provision_synthetic(audit, f"20260000000030{n}", station="st-a")
        total = audit.fleet_backlog()[1]
    run = subprocess.run(
        [sys.executable, "-m", "station", "--home", str(station.home.root), "fleet", "sync"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, STATION_TEST_KILL_AT="fleet_committed"),
    )
    assert run.returncode == -9, run.stdout + run.stderr
    with station.audit() as audit:
        assert audit.fleet_backlog()[0] == 0, "the local mark must not have moved"
    assert len(central_events(fleet_db, "st-a")) == total, "the fleet committed before the kill"
    run = subprocess.run(
        [sys.executable, "-m", "station", "--home", str(station.home.root), "fleet", "sync"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "backlog 0" in run.stdout
    with station.audit() as audit:
        assert central_events(fleet_db, "st-a") == local_events(audit)
    with fleet_db.admin() as conn:
        duplicates = conn.execute(
            "SELECT count(*) FROM (SELECT station, seq FROM fleet_journal GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()[0]
    assert duplicates == 0


@pytest.mark.parametrize("outage", ["stopped", "paused"])
def test_nothing_is_lost_while_the_server_is_stopped_or_paused_and_the_backlog_drains(
    tmp_path, fleet_db, pg_server, outage
):
    station = make_station(tmp_path, fleet_db, "st-a")
    audit = station.audit()
    forwarder = start_forwarder(station.fleet, audit)
    assert forwarder is not None
    guard = FleetGuard(station.fleet)
    try:
        provision_synthetic(audit, "202600000000400", station="st-a")
        assert forwarder.flush(15), forwarder.status()
        try:
            if outage == "stopped":
                pg_server.stop()
            else:
                assert pg_server.pause() >= 1
            started = time.monotonic()
            for n in range(1, 6):
                provision_synthetic(audit, f"20260000000040{n}", station="st-a")
            # The line goes on: local writes never wait for the fleet; the guard answers within its deadline.
            verdict = guard.check_unit(serial="202600000000499", unit_id=99, reprovision=False, host_key=None)
            assert not verdict.checked and "fleet: not checked" in verdict.text
            assert time.monotonic() - started < 8, "a stopped or paused fleet must not hold up the line"
            wait_until(lambda: forwarder.status().state == "offline", 20, "the forwarder notices the outage")
            status = forwarder.status()
            assert status.backlog > 0 and status.oldest_unsent_at is not None
        finally:
            if outage == "stopped":
                pg_server.start()
            else:
                pg_server.resume()
        wait_until(
            lambda: forwarder.status().backlog == 0 and forwarder.status().state == "online",
            30,
            "the backlog drains when the fleet is back",
        )
        assert central_events(fleet_db, "st-a") == local_events(audit)
    finally:
        stop_forwarder(forwarder)
        audit.close()


def test_fleet_status_shows_the_backlog_and_the_connection(tmp_path, fleet_db):
    station = make_station(tmp_path, fleet_db, "st-a")
    with station.audit() as audit:
        provision_synthetic(audit, "202600000000500", station="st-a")
    run = subprocess.run(
        [sys.executable, "-m", "station", "--home", str(station.home.root), "fleet", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "backlog: " in run.stdout and "events not yet in the fleet" in run.stdout
    assert "connection: online" in run.stdout
    # Pointing the station at a port where nothing listens: offline, said in words, exit 3.
    config = station.home.config_file
    config.write_text(config.read_text().replace(f":{fleet_db.server.cluster.port}/", ":1/"))
    run = subprocess.run(
        [sys.executable, "-m", "station", "--home", str(station.home.root), "fleet", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 3
    assert "connection: OFFLINE" in run.stdout and "cannot be reached" in run.stdout


def test_fleet_init_writes_a_fleet_section_without_any_password(tmp_path, fleet_db):
    station = make_station(tmp_path, fleet_db, "st-a", line="L7")
    text = station.home.config_file.read_text()
    assert "[fleet]" in text and 'line = "L7"' in text and 'station_name = "st-a"' in text
    password = Path(station.fleet.passfile).read_text().strip().rsplit(":", 1)[1]
    assert password not in text
    assert oct(Path(station.fleet.passfile).stat().st_mode & 0o777) == "0o600"
    with fleet_db.admin() as conn:
        row = conn.execute(
            "SELECT line, ca_fingerprint, role_name FROM fleet_stations WHERE name = 'st-a'"
        ).fetchone()
        version = conn.execute("SELECT max(version) FROM fleet_schema_migrations").fetchone()[0]
    assert row[0] == "L7" and len(row[1]) == 64 and version == MIGRATIONS[-1].version
