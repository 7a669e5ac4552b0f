"""The fleet's yield and its pages, against a real PostgreSQL: step attempts reach ``fleet_steps`` (migration 3,
also backfilled from journals forwarded before it), the fleet's YieldSummary counts them as the local log does,
and keyset pages list every unit exactly once in order — newest first, and by serial for a serial search."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from station.fleet import schema
from station.fleet.forwarder import Forwarder
from station.fleet.queries import FleetFilter, page_key, units_page, yield_summary
from tests.helpers.fleet import make_station, provision_synthetic

pytestmark = pytest.mark.integration


def _keygen_unit(audit, serial: str, seconds: float, *, station: str) -> None:  # type: ignore[no-untyped-def]
    started = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    unit = audit.start_unit(
        serial=serial,
        profile="welma-optee",
        device="ssh://root@127.0.0.2:2222",
        operator="ann",
        station=station,
    )
    audit.record_step(
        unit.id,
        step="keygen",
        attempt=1,
        outcome="failed",
        started_at=started,
        ended_at=started + timedelta(seconds=3),
        message="token busy",
    )
    audit.record_step(
        unit.id,
        step="keygen",
        attempt=2,
        outcome="passed",
        started_at=started,
        ended_at=started + timedelta(seconds=seconds),
    )
    audit.finish_unit(unit.id, result="passed")


def test_steps_forwarded_before_migration_3_are_backfilled_and_counted_in_the_fleet_yield(
    tmp_path, fleet_db, monkeypatch
):
    # The fleet as a station of the previous release left it: schema version 1 only, steps in the journal.
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
    station = make_station(tmp_path, fleet_db, "st-a", line="L1")
    with station.audit() as audit:
        _keygen_unit(audit, "202600000004000", 30.0, station="st-a")
        while Forwarder(station.fleet, audit).send_once():
            pass
    monkeypatch.undo()
    with fleet_db.admin() as conn:
        assert schema.migrate(conn) == [m.version for m in schema.MIGRATIONS[1:]]
        assert conn.execute("SELECT count(*) FROM fleet_steps").fetchone()[0] == 2
    # And steps forwarded after it arrive through the trigger.
    with station.audit() as audit:
        _keygen_unit(audit, "202600000004001", 50.0, station="st-a")
        while Forwarder(station.fleet, audit).send_once():
            pass
    with fleet_db.admin() as conn:
        summary = yield_summary(conn, FleetFilter(line="L1"))
        empty = yield_summary(conn, FleetFilter(line="L9"))
    assert (summary.units, summary.passed, summary.passed_first_attempt) == (2, 2, 2)
    assert summary.failures_by_step == (("keygen", 2),)
    assert (summary.keygen.count, summary.keygen.min_s, summary.keygen.max_s) == (2, 30.0, 50.0)
    assert empty.units == 0 and empty.keygen.count == 0 and empty.pass_rate is None


@pytest.mark.parametrize(
    "filters", [FleetFilter(), FleetFilter(serial_prefix="2026000000050")], ids=["newest-first", "by-serial"]
)
def test_keyset_pages_list_every_unit_once_in_order(tmp_path, fleet_db, filters):
    a = make_station(tmp_path, fleet_db, "st-a", line="L1")
    b = make_station(tmp_path, fleet_db, "st-b", line="L2")
    for station in (a, b):
        with station.audit() as audit:
            # The same serials on both stations, some twice: ties on serial and on time within a page.
            for number in (*range(9), 3, 5):
                first_try = number in (3, 5) and audit.find_unit(f"20260000000500{number}") is None
                unit = provision_synthetic(
                    audit,
                    f"20260000000500{number}",
                    station=station.fleet.station_name,
                    result="failed" if first_try else "passed",
                )
                if first_try:
                    audit.finish_unit(unit, result="aborted")  # given up, then started over
            while Forwarder(station.fleet, audit).send_once():
                pass
    from station.fleet.connection import connect

    with connect(a.fleet.dsn, passfile=a.fleet.passfile) as conn:
        everything = units_page(conn, filters, limit=1000)
        paged: list[dict[str, object]] = []
        after = None
        while True:
            page = units_page(conn, filters, limit=4, after=after)
            paged += page
            if len(page) < 4:
                break
            after = page_key(filters, page[-1])
    assert len(everything) == 22
    assert [(u["station"], u["unit_id"]) for u in paged] == [(u["station"], u["unit_id"]) for u in everything]
