"""The fleet in the window: the status-bar indicator follows the forwarder (online, offline with the backlog's
age), and the quality lead's "whole fleet" scope groups every station's units by line and station, lists the
conflicts and traces one board across stations. Real PostgreSQL, real widgets offscreen."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtWidgets import QLabel  # noqa: E402

from station.fleet.forwarder import Forwarder, start_forwarder, stop_forwarder  # noqa: E402
from tests.helpers.fleet import make_station, provision_synthetic  # noqa: E402
from ui.fleet_view import FleetIndicator, ScopedAuditView  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 20_000


def test_the_indicator_shows_online_then_offline_with_the_backlog(qtbot, tmp_path, fleet_db):
    station = make_station(tmp_path, fleet_db, "st-a")
    audit = station.audit()
    forwarder = start_forwarder(station.fleet, audit)
    assert forwarder is not None
    indicator = FleetIndicator(forwarder)
    qtbot.addWidget(indicator)
    try:
        provision_synthetic(audit, "202600000001000", station="st-a")
        qtbot.waitUntil(lambda: indicator.text() == "Fleet online · 0 to send", timeout=TIMEOUT_MS)
        try:
            fleet_db.server.pause()
            provision_synthetic(audit, "202600000001001", station="st-a")
            qtbot.waitUntil(lambda: indicator.text().startswith("Fleet OFFLINE · "), timeout=TIMEOUT_MS)
            assert "to send, oldest" in indicator.text()
        finally:
            fleet_db.server.resume()
        qtbot.waitUntil(lambda: indicator.text() == "Fleet online · 0 to send", timeout=TIMEOUT_MS)
    finally:
        indicator._timer.stop()
        stop_forwarder(forwarder)
        audit.close()


def test_the_whole_fleet_scope_groups_by_line_and_station_and_traces_a_board(qtbot, tmp_path, fleet_db):
    a = make_station(tmp_path, fleet_db, "st-a", line="L1")
    b = make_station(tmp_path, fleet_db, "st-b", line="L2")
    for station, serials in ((a, ["202600000002000", "202600000002001"]), (b, ["202600000002000"])):
        with station.audit() as audit:
            for serial in serials:
                provision_synthetic(audit, serial, station=station.fleet.station_name)
            while Forwarder(station.fleet, audit).send_once():
                pass
    local = QLabel("this station")  # the local audit view has its own tests
    scoped = ScopedAuditView(local, a.fleet)
    qtbot.addWidget(scoped)
    scoped.scope.setCurrentIndex(1)
    view = scoped.fleet_view
    assert view is not None
    qtbot.waitUntil(lambda: "units across the fleet" in view.message.text(), timeout=TIMEOUT_MS)
    assert "3 of 3 units" in view.message.text()
    lines = {view.units.topLevelItem(i).text(0): view.units.topLevelItem(i) for i in range(view.units.topLevelItemCount())}
    assert set(lines) == {"line L1", "line L2"}
    assert lines["line L1"].child(0).text(0) == "st-a" and lines["line L1"].child(0).childCount() == 2
    assert lines["line L2"].child(0).text(0) == "st-b"
    conflicts = [view.conflicts.topLevelItem(i).text(1) for i in range(view.conflicts.topLevelItemCount())]
    assert any("202600000002000 passed on more than one station" in text for text in conflicts)

    view.line_filter.setText("L2")
    view.refresh()
    qtbot.waitUntil(lambda: "1 of 1 units" in view.message.text(), timeout=TIMEOUT_MS)

    view.line_filter.setText("")
    view.serial_filter.setText("202600000002000")
    view.trace()
    qtbot.waitUntil(lambda: "attempt(s) on" in view.message.text(), timeout=TIMEOUT_MS)
    assert "2 attempt(s) on 2 station(s)" in view.message.text()
    scoped.shutdown()
