"""The work order strip with the fleet: an order imported on another station, and the places taken there, show
in this station's window (read from the fleet off the GUI thread). Real PostgreSQL, real widgets offscreen."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from station.fleet.forwarder import Forwarder  # noqa: E402
from station.fleet.orders import FleetOrderBook  # noqa: E402
from station.orders import read_order_file  # noqa: E402
from station.profiles import load_profile  # noqa: E402
from tests.helpers.fleet import make_station  # noqa: E402
from ui.bridge import TaskPool  # noqa: E402
from ui.order_panel import OrderPanel  # noqa: E402

pytestmark = pytest.mark.gui


def test_the_strip_shows_the_fleets_order_and_the_boards_other_stations_built(qtbot, tmp_path, fleet_db):
    a = make_station(tmp_path, fleet_db, "st-a", line="L1")
    b = make_station(tmp_path, fleet_db, "st-b", line="L2")
    orders = tmp_path / "wo.csv"
    orders.write_text(
        "order,profile,quantity,serials,due\nWO-FLEET-7,welma-optee,3,"
        "202600000099001-202600000099005,2026-12-31\n"
    )
    with a.audit() as log:
        book = FleetOrderBook(log, a.fleet)
        book.import_orders(read_order_file(orders, profiles=load_profile), by="Q. Lead")
        for serial in ("202600000099001", "202600000099002"):
            unit = log.start_unit(
                serial=serial,
                profile="welma-optee",
                device="ssh://root@127.0.0.2:2222",
                operator="ann",
                station="st-a",
                take_place=book.take_place,
            )
            log.finish_unit(
                unit.id,
                result="passed" if serial.endswith("1") else "failed",
                failed_step=None if serial.endswith("1") else "keygen",
            )
        while Forwarder(a.fleet, log).send_once():
            pass

    with b.audit() as log:  # station B never imported the order
        pool = TaskPool()
        fleet_book = FleetOrderBook(log, b.fleet)
        panel = OrderPanel(log, pool, required=True, read_orders=lambda: fleet_book.orders(state="open"))
        qtbot.addWidget(panel)
        try:
            qtbot.waitUntil(lambda: len(panel.open_orders) == 1, timeout=20_000)
            assert panel.progress.text() == "WO-FLEET-7: 1 of 3 passed"
            assert "1 in progress" in panel.detail.text() and "yield 50 %" in panel.detail.text()
            panel.resize(520, 110)
            panel.grab().save(str(tmp_path / "fleet-order-strip.png"))
            # B's own audit log holds its copy of the fleet's order (units and exports work from it).
            assert log.orders.status("WO-FLEET-7").quantity == 3
        finally:
            panel.stop()
            pool.shutdown(5_000)
