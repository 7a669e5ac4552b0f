"""The fleet as the outside anchor (a rewritten local chain, a restored old backup, an edited central row), and
what quality leads get from it: conflicts after an offline station syncs, exports, traceability, the report."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys

import pytest

from station.fleet.forwarder import Forwarder
from tests.helpers.fleet import make_station, provision_synthetic

pytestmark = pytest.mark.integration


def station_cli(station, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "station", "--home", str(station.home.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def forward_all(station) -> None:
    with station.audit() as audit:
        forwarder = Forwarder(station.fleet, audit)
        while forwarder.send_once():
            pass
        assert audit.fleet_backlog()[2] == 0


def rewrite_operator(db_path, unit_id: int, new_operator: str) -> int:
    """What a determined editor does: change a unit's operator in its row and its events, recompute the chain."""
    raw = sqlite3.connect(db_path)
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute(f'DROP TRIGGER "{name}"')
    raw.execute("UPDATE units SET operator = ? WHERE id = ?", [new_operator, unit_id])
    first_changed = None
    previous = "0" * 64
    for seq, at, kind, payload, _prev, _hash in raw.execute(
        "SELECT seq, at, kind, payload, prev_hash, hash FROM events ORDER BY seq"
    ).fetchall():
        record = json.loads(payload)
        if record["table"] == "units" and record["pk"] == unit_id:
            record["row"]["operator"] = new_operator
            payload = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            first_changed = first_changed or seq
        digest = hashlib.sha256("\n".join((previous, str(seq), at, kind, payload)).encode()).hexdigest()
        raw.execute(
            "UPDATE events SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            [payload, previous, digest, seq],
        )
        previous = digest
    raw.commit()
    raw.close()
    assert first_changed is not None
    return first_changed


def test_a_local_rewrite_with_the_chain_recomputed_is_caught_against_the_fleet(tmp_path, fleet_db):
    station = make_station(tmp_path, fleet_db, "st-a")
    with station.audit() as audit:
        units = [provision_synthetic(audit, f"20260000000060{n}", station="st-a") for n in range(3)]
    forward_all(station)
    assert station_cli(station, "audit", "verify").returncode == 0
    first = rewrite_operator(station.home.audit_db, units[1], "mallory")
    with station.audit() as audit:
        assert audit.verify().ok, "the rewrite is consistent locally: only the fleet can tell"
    run = station_cli(station, "audit", "verify")
    assert run.returncode == 1
    assert "audit log OK" in run.stdout
    assert f"DIFFERS FROM THE FLEET: event {first} differs from the fleet's copy" in run.stdout


def test_a_restored_old_backup_is_caught_against_the_fleet(tmp_path, fleet_db):
    station = make_station(tmp_path, fleet_db, "st-a")
    with station.audit() as audit:
        provision_synthetic(audit, "202600000000700", station="st-a")
        old_head = audit.fleet_backlog()[1]
        audit.backup(tmp_path / "old.db")
        provision_synthetic(audit, "202600000000701", station="st-a")
    forward_all(station)
    for suffix in ("", "-wal", "-shm"):
        (station.home.root / f"audit.db{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "old.db", station.home.audit_db)
    run = station_cli(station, "audit", "verify")
    assert run.returncode == 1, run.stdout
    assert "audit log OK" in run.stdout
    assert (
        f"the fleet holds event {old_head + 1} of this station but the local log ends at event {old_head} — an old "
        "backup was restored"
    ) in run.stdout
    status = station_cli(station, "fleet", "status")
    assert status.returncode == 1 and "LOCAL LOG DIFFERS from the fleet" in status.stdout
    # The forwarder refuses to write over the fleet's newer events, and says why.
    with station.audit() as audit:
        from station.fleet.forwarder import Divergence

        with pytest.raises(
            Divergence, match=f"the fleet holds events up to .*, the local log ends at {old_head}"
        ):
            Forwarder(station.fleet, audit).send_once()


def test_fleet_verify_checks_every_chain_and_names_an_edited_central_event(tmp_path, fleet_db):
    a = make_station(tmp_path, fleet_db, "st-a")
    b = make_station(tmp_path, fleet_db, "st-b", line="L2")
    for station, serial in ((a, "202600000000800"), (b, "202600000000801")):
        with station.audit() as audit:
            provision_synthetic(audit, serial, station=station.fleet.station_name)
        forward_all(station)
    run = station_cli(a, "fleet", "verify")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "st-a (line L1): OK" in run.stdout and "st-b (line L2): OK" in run.stdout
    assert "2 of 2 station chains intact" in run.stdout
    with fleet_db.admin() as conn:  # the server's owner edits a row: only the chain can tell
        conn.execute(
            "UPDATE fleet_journal SET payload = replace(payload, 'ann', 'eve') WHERE station = 'st-b' AND seq = 1"
        )
        conn.execute("DELETE FROM fleet_journal WHERE station = 'st-a' AND seq = 3")
    run = station_cli(a, "fleet", "verify")
    assert run.returncode == 1
    assert "st-a (line L1): BROKEN — events 3–3 are missing" in run.stdout
    assert "st-b (line L2): BROKEN — event 1: hash does not match its content" in run.stdout


def test_an_offline_station_s_clash_is_listed_after_it_syncs_and_quality_leads_see_the_whole_fleet(
    tmp_path, fleet_db
):
    a = make_station(tmp_path, fleet_db, "st-a", line="L1")
    b = make_station(tmp_path, fleet_db, "st-b", line="L2")
    with a.audit() as audit:
        provision_synthetic(audit, "202600000000900", station="st-a")
        provision_synthetic(audit, "202600000000901", station="st-a", result="failed")
    forward_all(a)
    # Station B could not reach the fleet: its guard let the board through, marked unchecked.
    with b.audit() as audit:
        provision_synthetic(
            audit,
            "202600000000900",
            station="st-b",
            guard_text="fleet: not checked (unreachable); allowed by offline = allow-and-flag",
        )
    assert "0 conflicts" in station_cli(a, "fleet", "conflicts").stdout
    forward_all(b)
    run = station_cli(a, "fleet", "conflicts")
    assert run.returncode == 0
    assert "[serial] board 202600000000900 passed on more than one station: st-a (line L1" in run.stdout
    assert "st-b (line L2" in run.stdout
    assert "[unchecked] unit 1 on station st-b: provisioned while the fleet was unreachable" in run.stdout

    trace = station_cli(a, "fleet", "trace", "--serial", "202600000000900")
    assert "2 attempts on 2 station(s)" in trace.stdout and "unit.passed" in trace.stdout

    out = tmp_path / "fleet.csv"
    run = station_cli(a, "audit", "export", "--fleet", "--format", "csv", "--out", str(out))
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(out.read_text(encoding="utf-8-sig").splitlines()))
    assert sorted((r["station"], r["line"], r["serial"], r["state"]) for r in rows) == [
        ("st-a", "L1", "202600000000900", "passed"),
        ("st-a", "L1", "202600000000901", "failed"),
        ("st-b", "L2", "202600000000900", "passed"),
    ]
    out = tmp_path / "l2.jsonl"
    station_cli(a, "audit", "export", "--fleet", "--format", "jsonl", "--line", "L2", "--out", str(out))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["station"], r["serial"]) for r in records] == [("st-b", "202600000000900")]

    pdf = tmp_path / "fleet.pdf"
    run = station_cli(a, "fleet", "report", "--from", "2000-01-01", "--to", "2100-01-01", "--out", str(pdf))
    assert run.returncode == 0, run.stderr
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Fleet provisioning report" in text and "st-a" in text and "st-b" in text
    assert "board 202600000000900 passed on more than one station" in text
    assert "L1" in text and "L2" in text
