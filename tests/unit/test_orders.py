"""Work orders: the file formats, the order book in the audit log, and a place per unit decided in SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from station.audit import AuditLog, UnitFilter
from station.cli import main
from station.config import load_config
from station.orders import OrderConflict, OrderFileError, OrderRefused, read_order_file
from station.profiles import DeviceProfile, available_profiles, load_profile

KNOWN = set(available_profiles())


def profiles(name: str) -> DeviceProfile | None:
    return load_profile(name) if name in KNOWN else None


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


CSV = """\
order,profile,quantity,serials,due
WO-1,welma-optee,5,202600000000001-202600000000005,2026-12-31
WO-2,welma-optee-ec,3,202600000000101 202600000000105;202600000000107,
"""

UNIT = {"profile": "welma-optee", "device": "ssh://root@127.0.0.2:2222", "operator": "ana", "station": "st-1"}


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path / "home" / "audit.db")
    yield audit
    audit.close()


def imported(log: AuditLog, tmp_path: Path, text: str = CSV, name: str = "orders.csv") -> None:
    log.orders.import_orders(read_order_file(write(tmp_path, name, text), profiles=profiles), by="Q. Lead")


# ---------------------------------------------------------------------------------------- file formats


def test_a_csv_file_gives_each_order_its_profile_serials_quantity_and_due_date(tmp_path: Path) -> None:
    parsed = read_order_file(write(tmp_path, "orders.csv", CSV), profiles=profiles)
    first, second = parsed.orders
    assert (first.order_id, first.profile, first.quantity, str(first.due)) == (
        "WO-1",
        "welma-optee",
        5,
        "2026-12-31",
    )
    assert first.serial_count == 5 and "202600000000003" in first and "202600000000006" not in first
    assert second.serials == ("202600000000101", "202600000000105", "202600000000107") and second.due is None
    assert parsed.lines == {"WO-1": 2, "WO-2": 3}
    assert len(parsed.sha256) == 64


def test_more_rows_of_one_order_add_serials_and_a_range_may_hold_spares(tmp_path: Path) -> None:
    text = (
        "Order,Serials,Profile,Quantity\n"
        "WO-7,202600000000001-202600000000004,welma-optee,5\n"
        "WO-7,202600000000010,,\n"
        'WO-7,"202600000000020,202600000000021",welma-optee,5\n'
    )
    (order,) = read_order_file(write(tmp_path, "more.csv", text), profiles=profiles).orders
    assert order.serial_count == 7 and order.quantity == 5 and "202600000000021" in order


def test_a_json_file_is_read_like_a_csv_file(tmp_path: Path) -> None:
    text = json.dumps(
        {
            "orders": [
                {
                    "order": "WO-1",
                    "profile": "welma-optee",
                    "quantity": 5,
                    "serials": ["202600000000001-202600000000005"],
                    "due": "2026-12-31",
                },
                {
                    "order": "WO-2",
                    "profile": "welma-optee-ec",
                    "quantity": 3,
                    "serials": ["202600000000101", "202600000000105", "202600000000107"],
                },
            ]
        },
        indent=2,
    )
    from_json = read_order_file(write(tmp_path, "orders.json", text), profiles=profiles)
    from_csv = read_order_file(write(tmp_path, "orders.csv", CSV), profiles=profiles)
    assert [o.content() for o in from_json.orders] == [o.content() for o in from_csv.orders]
    assert from_json.lines == {"WO-1": 4, "WO-2": 13}  # the line of each "order" key


@pytest.mark.parametrize(
    ("name", "text", "line", "words"),
    [
        (
            "range.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,5,202600000000009-202600000000005\n",
            2,
            "bad range 202600000000009-202600000000005: it ends before it starts",
        ),
        (
            "lengths.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,5,202600000000001-20260000000005\n",
            2,
            "bad range 202600000000001-20260000000005",
        ),
        (
            "duplicate.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,2,202600000000001\nWO-1,,,202600000000001\n",
            3,
            "serial 202600000000001 appears twice",
        ),
        (
            "in-range.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,5,202600000000001-202600000000005\n"
            "WO-2,welma-optee,1,202600000000003\n",
            3,
            "serial 202600000000003 appears twice",
        ),
        (
            "overlap.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,5,202600000000001-202600000000005\n"
            "WO-2,welma-optee,5,202600000000004-202600000000008\n",
            3,
            "overlaps range 202600000000001-2026000000000",
        ),
        (
            "quantity.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,2,202600000000001 202600000000002 "
            "202600000000003\n",
            2,
            "quantity 2 is smaller than the 3 serials listed",
        ),
        (
            "short.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,9,202600000000001-202600000000005\n",
            2,
            "only 5 serials — the order could never be completed",
        ),
        (
            "profile.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,1,202600000000001\n"
            "WO-2,no-such-board,1,202600000000002\n",
            3,
            "unknown profile 'no-such-board'",
        ),
        (
            "serial.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,1,2026-0001\n",
            2,
            "bad range 2026-0001",
        ),
        (
            "pattern.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,1,ABC\n",
            2,
            "serial 'ABC' is not a serial of profile welma-optee",
        ),
        (
            "count.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,five,202600000000001\n",
            2,
            "quantity 'five' is not a whole number",
        ),
        (
            "due.csv",
            "order,profile,quantity,serials,due\nWO-1,welma-optee,1,202600000000001,31/12/2026\n",
            2,
            "due date '31/12/2026' is not YYYY-MM-DD",
        ),
        ("header.csv", "order,product,quantity,serials\n", 1, "unknown column 'product'"),
        (
            "id.csv",
            "order,profile,quantity,serials\nWO 1,welma-optee,1,202600000000001\n",
            2,
            "order id 'WO 1' is not valid",
        ),
        (
            "changed.csv",
            "order,profile,quantity,serials\nWO-1,welma-optee,1,202600000000001\n"
            "WO-1,welma-optee,2,202600000000002\n",
            3,
            "order WO-1 already has quantity '1' (line 2), not '2'",
        ),
        ("broken.json", '{"orders": [\n  {"order": "WO-1",\n   "quantity": 1,,}\n]}\n', 3, "not valid JSON"),
        (
            "json-range.json",
            '{"orders": [\n {"order": "WO-1", "profile": "welma-optee", "quantity": 1,\n'
            '  "serials": ["202600000000001"]},\n {"order": "WO-2", "profile": "welma-optee", "quantity": 2,\n'
            '  "serials": ["202600000000005-202600000000004"]}\n]}\n',
            5,
            "it ends before it starts",
        ),
    ],
)
def test_a_malformed_order_file_is_refused_with_file_and_line_and_nothing_is_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(OrderFileError) as refused:
        read_order_file(path, profiles=profiles)
    assert f"{path}, line {line}:" in str(refused.value)
    assert words in str(refused.value)
    home = tmp_path / "home"
    assert main(["--home", str(home), "order", "import", str(path), "--by", "Q. Lead"]) == 1
    assert words in capsys.readouterr().err
    with AuditLog(home / "audit.db") as audit:
        assert audit.orders.orders() == []


def test_reimporting_the_same_orders_changes_nothing(log: AuditLog, tmp_path: Path) -> None:
    imported(log, tmp_path)
    events = log.verify().events
    again = log.orders.import_orders(
        read_order_file(write(tmp_path, "again.csv", CSV), profiles=profiles), by="B"
    )
    assert again.imported == () and again.unchanged == ("WO-1", "WO-2")
    assert log.verify().events == events
    status = log.orders.status("WO-1")
    assert status.imported_by == "Q. Lead" and status.source_file == "orders.csv"


def test_a_conflicting_reimport_is_refused_showing_the_difference_and_imports_nothing(
    log: AuditLog, tmp_path: Path
) -> None:
    imported(log, tmp_path)
    changed = CSV.replace(
        "WO-1,welma-optee,5,202600000000001-202600000000005,2026-12-31",
        "WO-1,welma-optee,5,202600000000001-202600000000004 202600000000009,2026-12-31",
    )
    changed += "WO-3,welma-optee,1,202600000000301,\n"
    with pytest.raises(OrderConflict) as refused:
        imported(log, tmp_path, changed, "changed.csv")
    text = str(refused.value)
    assert "order WO-1:" in text and "nothing was imported" in text
    assert "serials only in the file: 202600000000001-202600000000004, 202600000000009" in text
    assert "serials only in the recorded order: 202600000000001-202600000000005" in text
    assert [status.order_id for status in log.orders.orders()] == ["WO-2", "WO-1"]  # WO-3 was not imported
    assert log.verify().ok


# ----------------------------------------------------------------------------------------------- places


def test_a_serial_of_the_order_takes_a_place_and_one_outside_is_refused_without_a_unit(
    log: AuditLog, tmp_path: Path
) -> None:
    imported(log, tmp_path)
    unit = log.start_unit(serial="202600000000002", orders_required=True, **UNIT)
    assert log.orders.order_of_unit(unit.id) == "WO-1"
    with pytest.raises(OrderRefused) as refused:
        log.start_unit(serial="202600000000006", orders_required=True, **UNIT)
    assert refused.value.kind == "no-order"
    assert "202600000000006 belongs to no open work order" in str(refused.value)
    assert "nearest open orders: WO-1 (welma-optee, serials 202600000000001-202600000000005" in str(
        refused.value
    )
    assert [u.serial for u in log.units()] == ["202600000000002"]
    assert log.verify().ok


def test_without_required_orders_a_serial_in_no_order_is_enrolled_as_before(
    log: AuditLog, tmp_path: Path
) -> None:
    imported(log, tmp_path)
    unit = log.start_unit(serial="202600000000999", **UNIT)
    assert log.orders.order_of_unit(unit.id) is None
    # A serial of an order is still counted in it.
    counted = log.start_unit(serial="202600000000001", **UNIT)
    assert log.orders.order_of_unit(counted.id) == "WO-1"


def test_an_order_that_reached_its_quantity_refuses_the_next_unit_as_complete(
    log: AuditLog, tmp_path: Path
) -> None:
    imported(
        log, tmp_path, "order,profile,quantity,serials\nWO-5,welma-optee,2,202600000000001-202600000000003\n"
    )
    for serial in ("202600000000001", "202600000000002"):
        log.finish_unit(log.start_unit(serial=serial, orders_required=True, **UNIT).id, result="passed")
    with pytest.raises(OrderRefused) as refused:
        log.start_unit(serial="202600000000003", orders_required=True, **UNIT)
    assert refused.value.kind == "complete" and "WO-5 is complete (2 of 2 passed)" in str(refused.value)
    status = log.orders.status("WO-5")
    assert (status.passed, status.complete, status.yield_fraction, status.state_text) == (
        2,
        True,
        1.0,
        "complete",
    )


def test_places_held_by_unfinished_units_count_and_an_aborted_unit_frees_its_place(
    log: AuditLog, tmp_path: Path
) -> None:
    imported(
        log, tmp_path, "order,profile,quantity,serials\nWO-5,welma-optee,1,202600000000001-202600000000002\n"
    )
    first = log.start_unit(serial="202600000000001", orders_required=True, **UNIT)
    log.finish_unit(first.id, result="failed", failed_step="keygen", message="token error")
    with pytest.raises(OrderRefused) as refused:
        log.start_unit(serial="202600000000002", orders_required=True, **UNIT)
    assert refused.value.kind == "full" and "1 still being worked on" in str(refused.value)
    log.finish_unit(first.id, result="aborted", message="board scrapped")
    second = log.start_unit(serial="202600000000002", orders_required=True, **UNIT)
    assert log.orders.order_of_unit(second.id) == "WO-5"
    status = log.orders.status("WO-5")
    assert (status.running, status.aborted) == (1, 1)
    assert log.verify().ok


def test_reprovisioning_a_board_keeps_its_place_in_a_complete_order(log: AuditLog, tmp_path: Path) -> None:
    imported(log, tmp_path, "order,profile,quantity,serials\nWO-5,welma-optee,1,202600000000001\n")
    log.finish_unit(
        log.start_unit(serial="202600000000001", orders_required=True, **UNIT).id, result="passed"
    )
    # Choosing the profile does not refuse it: starting the unit decides, after the old unit gave its place back.
    from station.orders import order_profile

    assert (
        order_profile(
            log.orders,
            "202600000000001",
            order=None,
            required=True,
            profile=load_profile("welma-optee"),
            profiles_dir=None,
        ).name
        == "welma-optee"
    )
    again = log.start_unit(
        serial="202600000000001", orders_required=True, reprovision_reason="customer return", **UNIT
    )
    assert log.orders.order_of_unit(again.id) == "WO-5"
    assert log.orders.status("WO-5").held == 1 and log.verify().ok


def test_a_closed_order_refuses_the_rest_and_a_named_order_is_checked_first(
    log: AuditLog, tmp_path: Path
) -> None:
    imported(log, tmp_path)
    log.orders.close("WO-1", by="Q. Lead", reason="cancelled by planning")
    with pytest.raises(OrderRefused) as refused:
        log.start_unit(serial="202600000000003", orders_required=True, **UNIT)
    assert refused.value.kind == "closed" and "cancelled by planning" in str(refused.value)
    with pytest.raises(OrderRefused) as named:
        log.start_unit(serial="202600000000101", order="WO-1", orders_required=True, **UNIT)
    assert named.value.kind == "closed"
    with pytest.raises(OrderRefused) as other:
        log.start_unit(serial="202600000000003", order="WO-2", orders_required=True, **UNIT)
    assert other.value.kind == "not-in-order"
    with pytest.raises(OrderRefused) as unknown:
        log.start_unit(serial="202600000000003", order="WO-9", orders_required=True, **UNIT)
    assert unknown.value.kind == "unknown"
    assert log.units() == []


def test_the_orders_profile_is_the_units_profile(log: AuditLog, tmp_path: Path) -> None:
    imported(log, tmp_path)
    with pytest.raises(OrderRefused) as refused:
        log.start_unit(serial="202600000000101", orders_required=True, **UNIT)  # WO-2 builds welma-optee-ec
    assert refused.value.kind == "profile" and "builds profile welma-optee-ec, not welma-optee" in str(
        refused.value
    )
    from station.orders import order_profile

    chosen = order_profile(
        log.orders,
        "202600000000101",
        order=None,
        required=True,
        profile=load_profile("welma-optee"),
        profiles_dir=None,
    )
    assert chosen.name == "welma-optee-ec"


def test_exports_and_queries_filter_by_order(log: AuditLog, tmp_path: Path) -> None:
    imported(log, tmp_path)
    log.start_unit(serial="202600000000777", **UNIT)
    log.start_unit(serial="202600000000001", **UNIT)
    log.start_unit(serial="202600000000778", **UNIT)
    log.start_unit(
        serial="202600000000101",
        profile="welma-optee-ec",
        **{k: v for k, v in UNIT.items() if k != "profile"},
    )
    everything = [(r["serial"], r["order_id"]) for r in log.export_records()]
    assert everything == [
        ("202600000000777", None),
        ("202600000000001", "WO-1"),
        ("202600000000778", None),
        ("202600000000101", "WO-2"),
    ]
    assert [u.serial for u in log.units_page(filters=UnitFilter(order="WO-1"))] == ["202600000000001"]
    records = list(log.export_records(UnitFilter(order="WO-1")))
    assert [(r["serial"], r["order_id"]) for r in records] == [("202600000000001", "WO-1")]
    assert log.yield_summary(order="WO-1").units == 1


def test_orders_required_follows_production_mode_unless_set(tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text("[station]\nproduction = true\n")
    assert load_config(config).orders_required is True
    config.write_text("[station]\nproduction = true\n[orders]\nrequired = false\n")
    assert load_config(config).orders_required is False
    config.write_text("[orders]\nrequired = true\n")
    assert load_config(config).orders_required is True
    assert load_config(tmp_path / "missing.toml").orders_required is False
    config.write_text("[orders]\nrequire = true\n")
    with pytest.raises(Exception, match="line 2"):
        load_config(config)


RACER = """
import sys, time
from pathlib import Path
from station.audit import AuditLog
from station.orders import OrderRefused
log = AuditLog(Path(sys.argv[1]))
go = Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
try:
    unit = log.start_unit(serial=sys.argv[2], profile="welma-optee", device="ssh://x", operator="o", station="s",
                          orders_required=True)
    print("started", unit.id)
except OrderRefused as refused:
    print("refused", refused.kind)
"""


def test_stations_racing_for_the_last_place_of_an_order_get_it_exactly_once(
    log: AuditLog, tmp_path: Path
) -> None:
    imported(
        log, tmp_path, "order,profile,quantity,serials\nWO-9,welma-optee,3,202600000000001-202600000000008\n"
    )
    log.finish_unit(
        log.start_unit(serial="202600000000001", orders_required=True, **UNIT).id, result="passed"
    )
    log.start_unit(serial="202600000000002", orders_required=True, **UNIT)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(log.path), f"20260000000000{n}", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(3, 9)
    ]
    for racer in racers:  # every racer has opened the log and waits at the line
        assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
    go.touch()
    results = [racer.communicate(timeout=60) for racer in racers]
    said = [out.split()[0] if out else err for out, err in results]
    assert sorted(said) == ["refused"] * 5 + ["started"], results
    status = log.orders.status("WO-9")
    assert status.held == 3 and status.running == 2
    assert log.verify().ok


def test_the_report_groups_its_units_by_order_and_the_rest(log: AuditLog, tmp_path: Path) -> None:
    from station.report import ReportScope, order_groups, render_report

    imported(log, tmp_path)
    for serial, result in (
        ("202600000000001", "passed"),
        ("202600000000002", "failed"),
        ("202600000000900", "passed"),
    ):
        log.finish_unit(
            log.start_unit(serial=serial, **UNIT).id,
            result=result,
            failed_step="keygen" if result == "failed" else None,
        )
    groups = order_groups(log, ReportScope())
    assert [
        (g.order.order_id if g.order else None, g.units, g.passed, g.failed, g.yield_fraction) for g in groups
    ] == [("WO-1", 2, 1, 1, 0.5), (None, 1, 1, 0, 1.0)]
    assert [g.units for g in order_groups(log, ReportScope(order="WO-1"))] == [2]
    report = render_report(log, ReportScope(order="WO-1"), station="st-1")
    assert report.units_matching == 2 and report.pages == 3  # summary, by work order, units


def test_an_order_edited_behind_the_stations_back_is_caught_by_verify(log: AuditLog, tmp_path: Path) -> None:
    import sqlite3

    imported(log, tmp_path)
    log.start_unit(serial="202600000000001", orders_required=True, **UNIT)
    assert log.verify().ok
    raw = sqlite3.connect(log.path)
    with raw:
        raw.execute("UPDATE orders SET quantity = 500 WHERE order_id = 'WO-1'")
    raw.close()
    report = log.verify()
    assert (
        not report.ok
        and "work order" in (report.problem or "")
        and "quantity is 500" in (report.problem or "")
    )


def test_a_unit_whose_order_was_closed_meanwhile_is_refused_at_resume_before_any_step(
    log: AuditLog, tmp_path: Path
) -> None:
    from station.config import StationConfig
    from station.flow import Provisioner
    from station.home import StationHome

    imported(log, tmp_path)
    unit = log.start_unit(serial="202600000000001", **UNIT)
    log.finish_unit(unit.id, result="failed", failed_step="keygen", message="keygen failed")
    log.orders.close("WO-1", by="Q. Lead", reason="cancelled by planning")
    provisioner = Provisioner(
        home=StationHome(tmp_path / "home").create(), config=StationConfig(name="st-1"), ca=None, audit=log
    )  # type: ignore[arg-type]
    with pytest.raises(OrderRefused) as refused:
        # admit() decides before run_admitted() opens the link: no step (identify included) runs.
        provisioner.admit(
            serial="202600000000001",
            device=UNIT["device"],
            profile=load_profile("welma-optee"),
            operator="ana",
            resume=True,
        )
    assert refused.value.kind == "closed"
    assert (
        "work order WO-1 was closed (cancelled by planning) while board 202600000000001 was unfinished"
        in str(refused.value)
    )
    again = log.find_unit("202600000000001")
    assert again is not None and again.state == "failed" and again.attempt == 1  # not resumed
