"""MES hand-off: every finished unit's JSON record reaches a real HTTP endpoint on loopback once, in order — after
the endpoint was down, while it hung, and across a station restart — and/or lands whole in a drop folder."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from station.audit import AuditLog, Unit
from station.home import StationHome
from station.line.handoff import LineHandOff
from tests.helpers.line_servers import MesServer
from tests.line.conftest import line_config

WAIT_S = 20.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def serials(server: MesServer) -> list[object]:
    return [record["serial"] for record in server.accepted]


def test_records_wait_while_the_mes_is_down_then_arrive_once_each_in_order(
    home: StationHome, audit: AuditLog, finish: Callable[..., Unit], mes_server: MesServer
) -> None:
    mes_server.set_mode("down")
    handoff = LineHandOff(config=line_config(mes_url=mes_server.url), home=home, audit=audit)
    try:
        units = [finish(f"2026000000001{n:02d}", passed=n != 2) for n in range(5)]
        for unit in units:
            handoff.unit_finished(unit)
        wait_until(lambda: mes_server.attempts >= 3, "the station to retry the MES")
        assert mes_server.accepted == [] and handoff.mes.pending() == 5
        mes_server.set_mode("up")
        wait_until(lambda: len(mes_server.accepted) == 5, "every record to reach the MES")
        wait_until(lambda: handoff.mes.pending() == 0, "the outbox to empty")
    finally:
        handoff.close()
    assert serials(mes_server) == [unit.serial for unit in units]
    assert len({record["record_id"] for record in mes_server.accepted}) == 5
    failed = mes_server.accepted[2]
    assert (failed["result"], failed["failed_step"], failed["certificate_fingerprint"]) == (
        "failed",
        "keygen",
        None,
    )
    passed = mes_server.accepted[0]
    assert (
        passed["result"] == "passed" and passed["certificate_fingerprint"] == units[0].certificate_fingerprint
    )
    assert passed["certificate_serial"] == units[0].certificate_serial
    assert {"soc_id", "started_at", "ended_at", "station", "operator"} <= set(passed)
    assert (passed["station"], passed["operator"]) == ("line-1", "ann")


def test_an_mes_that_hangs_is_given_up_per_attempt_and_nothing_is_lost_or_doubled(
    home: StationHome, audit: AuditLog, finish: Callable[..., Unit], mes_server: MesServer
) -> None:
    mes_server.set_mode("hang")
    handoff = LineHandOff(config=line_config(mes_url=mes_server.url, timeout_s=0.5), home=home, audit=audit)
    try:
        units = [finish(f"2026000000002{n:02d}") for n in range(3)]
        for unit in units:
            handoff.unit_finished(unit)
        wait_until(lambda: mes_server.attempts >= 2, "a second attempt after the first one hung")
        mes_server.set_mode("up")
        wait_until(lambda: len(mes_server.accepted) == 3 and handoff.mes.pending() == 0, "the records")
    finally:
        handoff.close()
    assert serials(mes_server) == [unit.serial for unit in units]


def test_records_kept_when_the_station_stops_are_sent_after_it_restarts(
    home: StationHome, audit: AuditLog, finish: Callable[..., Unit], mes_server: MesServer
) -> None:
    mes_server.set_mode("down")
    config = line_config(mes_url=mes_server.url)
    before = LineHandOff(config=config, home=home, audit=audit)
    first = [finish(f"2026000000003{n:02d}") for n in range(3)]
    for unit in first:
        before.unit_finished(unit)
    before.close()  # the station is closed (or killed: every record was fsynced before unit_finished returned)
    assert len(list((home.root / "mes" / "outbox-http").glob("*.json"))) == 3

    mes_server.set_mode("up")
    after = LineHandOff(config=config, home=home, audit=audit)
    try:
        later = [finish(f"2026000000004{n:02d}") for n in range(2)]
        for unit in later:
            after.unit_finished(unit)
        wait_until(lambda: len(mes_server.accepted) == 5 and after.mes.pending() == 0, "all five records")
    finally:
        after.close()
    assert serials(mes_server) == [unit.serial for unit in first + later]


def test_records_land_whole_in_a_drop_folder_even_after_it_was_unavailable(
    home: StationHome, audit: AuditLog, finish: Callable[..., Unit], tmp_path: Path
) -> None:
    drop = tmp_path / "mes-share"
    drop.write_text("not a folder yet")  # the share is not mounted: the path cannot take files
    handoff = LineHandOff(config=line_config(drop_folder=str(drop)), home=home, audit=audit)
    try:
        units = [finish(f"2026000000005{n:02d}") for n in range(3)]
        for unit in units:
            handoff.unit_finished(unit)
        wait_until(lambda: handoff.mes.outboxes[0].last_problem is not None, "the drop folder to be refused")
        assert "cannot write to the drop folder" in (handoff.mes.outboxes[0].last_problem or "")
        drop.unlink()
        drop.mkdir(exist_ok=True)  # the outbox may have made the folder itself on its next try
        wait_until(lambda: handoff.mes.pending() == 0, "the drop folder to take the records")
    finally:
        handoff.close()
    files = sorted(drop.iterdir())
    assert [f.name.startswith(".") for f in files] == [False] * 3  # no temporary file left behind
    records = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    assert [r["serial"] for r in records] == [u.serial for u in units]
