"""Work orders kept by the fleet (issue 21 item 4), against the real PostgreSQL the tests start.

* Two station processes (separate homes, separate simulated farms) share one fleet and one order of quantity N;
  more than N boards are offered across both at once: exactly N pass in total, the rest are refused as the order
  being complete/full before their board is touched. The order was imported on station A only; station B sees,
  enforces and closes it.
* The station's role reads the central order tables but cannot write them except through the place-taking,
  import and close functions: INSERT, UPDATE and DELETE are refused by PostgreSQL.
* Offline: ``refuse`` refuses with what to do; ``allow-and-flag`` takes the place locally, and the fleet lists the
  over-filled order under ``station fleet conflicts`` when the backlog drains.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from station.audit import AuditLog
from station.fleet.connection import connect
from station.fleet.orders import FleetOrderBook
from station.orders import OrderRefused, read_order_file
from station.profiles import available_profiles, load_profile
from tests.helpers.boards import CANARY, board, write_order_file
from tests.helpers.fleet import ENV, central, make_station, start_farm, station_cli, sync

pytestmark = pytest.mark.integration

ORDER = "WO-FLEET-1"
FIRST = 202600000088001


def write_order(path: Path, *, order: str = ORDER, quantity: int, first: int = FIRST, count: int) -> Path:
    return write_order_file(path, order=order, quantity=quantity, serials=f"{first}-{first + count - 1}")


def cli(station, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        station_cli(station, *args), capture_output=True, text=True, timeout=timeout, env=ENV
    )


def parsed(station, path: Path):
    home = station.home
    names = set(available_profiles(home.profiles_dir))
    return read_order_file(
        path, profiles=lambda name: load_profile(name, home.profiles_dir) if name in names else None
    )


def test_two_stations_sharing_a_fleet_never_exceed_an_orders_quantity_together(tmp_path, fleet_db):
    a = make_station(tmp_path, fleet_db, "st-a", line="L1")
    b = make_station(tmp_path, fleet_db, "st-b", line="L2")
    quantity, per_station = 3, 3
    imported = cli(
        a,
        "order",
        "import",
        str(write_order(tmp_path / "wo.csv", quantity=quantity, count=2 * per_station + 1)),
        "--by",
        "Q. Lead",
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert central(fleet_db, "SELECT order_id, quantity, imported_station FROM fleet_orders") == [
        (ORDER, 3, "st-a")
    ]
    # Station B never imported it: it reads it from the fleet.
    listed = cli(b, "order", "list")
    assert listed.returncode == 0 and ORDER in listed.stdout and "0/3" in listed.stdout, (
        listed.stdout + listed.stderr
    )

    with ExitStack() as stack:
        devices = {s.fleet.station_name: start_farm(stack, s, per_station) for s in (a, b)}
        boards = {}  # serial -> (station, device, boot id)
        serial = FIRST
        manifests = {}
        for s in (a, b):
            rows = ["serial,device,fixture,order"]
            for device in devices[s.fleet.station_name]:
                board(s.home, device, "touch", CANARY)
                boards[str(serial)] = (
                    s,
                    device,
                    board(s.home, device, "cat", "/proc/sys/kernel/random/boot_id"),
                )
                rows.append(f"{serial},{device.ssh_url},{device.name},{ORDER}")
                serial += 1
            manifests[s.fleet.station_name] = s.home.root / "boards.csv"
            manifests[s.fleet.station_name].write_text("\n".join(rows) + "\n")
        runs = [
            subprocess.Popen(
                station_cli(
                    s,
                    "batch",
                    "--manifest",
                    str(manifests[s.fleet.station_name]),
                    "--jobs",
                    str(per_station),
                    "--operator",
                    "ann",
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=ENV,
            )
            for s in (a, b)
        ]
        outputs = [run.communicate(timeout=600)[0] for run in runs]
        both = "\n----\n".join(outputs)

        passed: list[str] = []
        refused: list[str] = []
        for s in (a, b):
            with AuditLog(s.home.audit_db) as log:
                for number in range(FIRST, FIRST + 2 * per_station):
                    unit = log.find_unit(str(number))
                    if unit is not None:
                        assert unit.state == "passed", both
                        assert log.orders.order_of_unit(unit.id) == ORDER
                        passed.append(str(number))
        refused = sorted(set(boards) - set(passed))
        assert len(passed) == quantity and len(refused) == 2 * per_station - quantity, both
        for number in refused:
            line = next(line for line in both.splitlines() if number in line and "REFUSED" in line.upper())
            assert re.search(rf"work order {ORDER} (is complete|has no free place)", line), line
            # Refused at admission: no step ran, the board kept its files and did not reboot.
            s, device, boot_id = boards[number]
            assert board(s.home, device, "ls", CANARY).strip() == CANARY
            assert board(s.home, device, "cat", "/proc/sys/kernel/random/boot_id") == boot_id

        # Once the passes reached the fleet, a further board is refused on B as the order being complete.
        for s in (a, b):
            sync(s)
        s, device, boot_id = boards[refused[-1]]
        late = cli(
            s,
            "provision",
            "--serial",
            str(FIRST + 2 * per_station),
            "--device",
            device.ssh_url,
            "--operator",
            "ann",
            "--order",
            ORDER,
        )
        assert late.returncode == 1, late.stdout + late.stderr
        assert (
            f"work order {ORDER} is complete ({quantity} of {quantity} passed across the fleet)"
            in late.stderr
        )
        assert "Identify board" not in late.stdout
        assert board(s.home, device, "cat", "/proc/sys/kernel/random/boot_id") == boot_id

    assert central(
        fleet_db, "SELECT count(*) FROM fleet_order_places WHERE order_id = %s AND released_at IS NULL", ORDER
    ) == [(quantity,)]
    ((count,),) = central(fleet_db, "SELECT count(*) FROM fleet_units WHERE state = 'passed'")
    assert count == quantity
    shown = cli(b, "order", "show", ORDER)
    assert shown.returncode == 0 and f"{quantity} of {quantity} passed" in shown.stdout, (
        shown.stdout + shown.stderr
    )

    # Closed on B, closed everywhere; both local audit logs (their copies of the order included) still verify.
    closed = cli(b, "order", "close", ORDER, "--reason", "planning cancelled the rest", "--by", "Q. Lead")
    assert closed.returncode == 0, closed.stdout + closed.stderr
    listed = cli(a, "order", "list")
    assert re.search(rf"{ORDER}\s+welma-optee\s+closed", listed.stdout), listed.stdout
    for s in (a, b):
        verify = cli(s, "audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        with AuditLog(s.home.audit_db) as log:
            assert log.orders.status(ORDER).state == "closed"


def test_the_station_role_cannot_change_the_central_orders_and_a_place_is_decided_by_the_fleet(
    tmp_path, fleet_db
):
    a = make_station(tmp_path, fleet_db, "st-a")
    b = make_station(tmp_path, fleet_db, "st-b")
    order_file = write_order(tmp_path / "wo.csv", quantity=4, count=40)
    with AuditLog(a.home.audit_db) as log:
        FleetOrderBook(log, a.fleet).import_orders(parsed(a, order_file), by="Q. Lead")
    with AuditLog(b.home.audit_db) as log:
        assert FleetOrderBook(log, b.fleet).status(ORDER).quantity == 4  # B's copy, read from the fleet

    # Forty serials offered at once by two stations (in threads, each station its own connection): four places.
    def start(args):
        station, number = args
        with AuditLog(station.home.audit_db) as log:
            book = FleetOrderBook(log, station.fleet)
            try:
                log.start_unit(
                    serial=str(number),
                    profile="welma-optee",
                    device="ssh://root@127.0.0.2:2222",
                    operator="ann",
                    station=station.fleet.station_name,
                    order=ORDER,
                    take_place=book.take_place,
                )
            except OrderRefused as exc:
                return exc.kind
            return "taken"

    offered = [((a, b)[n % 2], FIRST + n) for n in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        kinds = list(pool.map(start, offered))
    assert kinds.count("taken") == 4 and set(kinds) == {"taken", "full"}, kinds
    local = 0
    for s in (a, b):
        with AuditLog(s.home.audit_db) as log:
            local += log.count_units()
    assert local == 4  # a refused unit is not recorded on its station either
    assert central(fleet_db, "SELECT count(*) FROM fleet_order_places") == [(4,)]

    with connect(a.fleet.dsn, passfile=a.fleet.passfile) as conn:
        for statement in (
            "UPDATE fleet_order_places SET released_at = now()",
            "DELETE FROM fleet_order_places",
            f"INSERT INTO fleet_order_places (order_id, serial, station, unit_id) VALUES ('{ORDER}', 'x', 'st-a', 99)",
            "UPDATE fleet_orders SET quantity = 1000",
            "DELETE FROM fleet_orders",
            "INSERT INTO fleet_order_closures (order_id, closed_by, station, reason) "
            f"VALUES ('{ORDER}', 'me', 'st-a', 'x')",
            "DELETE FROM fleet_order_closures",
            "UPDATE fleet_journal SET kind = 'x'",
            "DELETE FROM fleet_journal",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # What it may do: read the orders (and ask through the functions).
        assert conn.execute("SELECT quantity FROM fleet_orders WHERE order_id = %s", [ORDER]).fetchone() == (
            4,
        )
    assert central(fleet_db, "SELECT count(*) FROM fleet_order_places WHERE released_at IS NULL") == [(4,)]


def test_offline_refuse_refuses_and_allow_and_flag_is_listed_as_an_over_filled_order(tmp_path, fleet_db):
    a = make_station(tmp_path, fleet_db, "st-a")
    b = make_station(tmp_path, fleet_db, "st-b", offline="allow-and-flag")
    c = make_station(tmp_path, fleet_db, "st-c", offline="refuse")
    order_file = write_order(tmp_path / "wo.csv", quantity=1, count=3)
    with AuditLog(a.home.audit_db) as log:
        FleetOrderBook(log, a.fleet).import_orders(parsed(a, order_file), by="Q. Lead")
    for s in (b, c):  # both stations saw the order while online (their local copies)
        with AuditLog(s.home.audit_db) as log:
            assert [status.order_id for status in FleetOrderBook(log, s.fleet).orders()] == [ORDER]
    with AuditLog(a.home.audit_db) as log:
        unit = log.start_unit(
            serial=str(FIRST),
            profile="welma-optee",
            device="ssh://root@127.0.0.2:2222",
            operator="ann",
            station="st-a",
            take_place=FleetOrderBook(log, a.fleet).take_place,
        )
        log.finish_unit(unit.id, result="passed")

    unreachable = f":{fleet_db.server.cluster.port}/"
    closing = cli(a, "order", "close", ORDER, "--reason", "enough built", "--by", "Q. Lead")
    assert closing.returncode == 0, closing.stdout + closing.stderr
    # offline = refuse: the unit is refused with what to do, nothing recorded.
    with AuditLog(c.home.audit_db) as log:
        book = FleetOrderBook(log, replace(c.fleet, dsn=c.fleet.dsn.replace(unreachable, ":1/")))
        with pytest.raises(OrderRefused) as refused:
            book.order_for(str(FIRST + 1))
        assert refused.value.kind == "offline" and 'offline policy is "refuse"' in str(refused.value)
        with pytest.raises(OrderRefused, match="restore the network"):
            log.start_unit(
                serial=str(FIRST + 1),
                profile="welma-optee",
                device="ssh://root@127.0.0.2:2222",
                operator="ann",
                station="st-c",
                take_place=book.take_place,
            )
        assert log.count_units() == 0

    # offline = allow-and-flag: the place is taken locally (its copy of the order does not know it was closed);
    # the fleet flags the over-filled, closed order on arrival.
    with AuditLog(b.home.audit_db) as log:
        book = FleetOrderBook(log, replace(b.fleet, dsn=b.fleet.dsn.replace(unreachable, ":1/")))
        assert book.order_for(str(FIRST + 1)) is not None
        unit = log.start_unit(
            serial=str(FIRST + 1),
            profile="welma-optee",
            device="ssh://root@127.0.0.2:2222",
            operator="ann",
            station="st-b",
            take_place=book.take_place,
        )
        log.finish_unit(unit.id, result="passed")
        assert log.orders.order_of_unit(unit.id) == ORDER
    for s in (a, b):
        sync(s)
    conflicts = cli(a, "fleet", "conflicts")
    flagged = [line for line in conflicts.stdout.splitlines() if line.startswith("[order] ")]
    assert len(flagged) == 2 and "2 conflicts," in conflicts.stdout, conflicts.stdout
    assert all("on station st-b" in line for line in flagged)
    assert any(
        f"work order {ORDER} over-filled: 2 places held for a quantity of 1" in line for line in flagged
    )
    assert any(
        f"work order {ORDER} was closed (" in line
        and "by Q. Lead on station st-a: enough built) before this unit took a place" in line
        for line in flagged
    )
    # Online again, the closed order refuses a further board everywhere.
    with (
        AuditLog(c.home.audit_db) as log,
        pytest.raises(OrderRefused, match=f"work order {ORDER} was closed"),
    ):
        log.start_unit(
            serial=str(FIRST + 2),
            profile="welma-optee",
            device="ssh://root@127.0.0.2:2222",
            operator="ann",
            station="st-c",
            take_place=FleetOrderBook(log, c.fleet).take_place,
        )


def test_a_place_granted_to_a_start_that_rolled_back_stops_counting_once_its_unit_id_is_reused(
    tmp_path, fleet_db
):
    from station.fleet.forwarder import Forwarder

    a = make_station(tmp_path, fleet_db, "st-a")
    order_file = write_order(tmp_path / "wo.csv", quantity=1, count=3)
    unit = {
        "profile": "welma-optee",
        "device": "ssh://root@127.0.0.2:2222",
        "operator": "ann",
        "station": "st-a",
    }
    with AuditLog(a.home.audit_db) as log:
        book = FleetOrderBook(log, a.fleet)
        book.import_orders(parsed(a, order_file), by="Q. Lead")

        def granted_then_lost(**place):
            book.take_place(**place)
            raise RuntimeError("the local commit failed after the fleet granted the place")

        with pytest.raises(RuntimeError):
            log.start_unit(serial=str(FIRST), take_place=granted_then_lost, **unit)
        assert log.count_units() == 0
        assert central(fleet_db, "SELECT serial FROM fleet_order_places") == [(str(FIRST),)]
        # Until the fleet knows better, that place counts: the order's only place is taken.
        with pytest.raises(OrderRefused, match="has no free place"):
            log.start_unit(serial=str(FIRST + 1), take_place=book.take_place, **unit)
        # The station's next unit (a board of no order) gets the unit id; once it reached the fleet, the lost
        # start's place no longer counts and the order's board is granted.
        other = log.start_unit(serial="202600000099999", take_place=book.take_place, **unit)
        log.finish_unit(other.id, result="passed")
        while Forwarder(a.fleet, log).send_once():
            pass
        started = log.start_unit(serial=str(FIRST + 1), take_place=book.take_place, **unit)
        assert started.id == other.id + 1 and log.orders.order_of_unit(started.id) == ORDER
    assert central(fleet_db, "SELECT unit_id FROM fleet_order_places WHERE serial = %s", str(FIRST)) == [
        (other.id,)
    ]
