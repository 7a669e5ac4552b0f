"""The fleet in the window: the status-bar indicator follows the forwarder (online, offline with the backlog's
age), and the quality lead's "whole fleet" scope: the local scope's yield and key-generation chart with the
fleet's figures by line and station, units paged in as the table scrolls (never a query on the GUI thread), the
conflicts, and one board traced across stations. Real PostgreSQL, real widgets offscreen."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import threading
from datetime import UTC, datetime, timedelta

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtWidgets import QLabel  # noqa: E402

from station.fleet.forwarder import Forwarder, start_forwarder, stop_forwarder  # noqa: E402
from tests.helpers.fleet import make_station, provision_synthetic  # noqa: E402
from ui.audit_view import YieldChart  # noqa: E402
from ui.fleet_view import FleetIndicator, FleetView, ScopedAuditView  # noqa: E402

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


def _send_all(station) -> None:  # type: ignore[no-untyped-def]
    with station.audit() as audit:
        while Forwarder(station.fleet, audit).send_once():
            pass


def _unit_with_keygen(audit, serial: str, *, station: str, keygen_s: float | None, result: str) -> None:  # type: ignore[no-untyped-def]
    """A unit whose key generation took ``keygen_s`` (passed) — or failed when ``result`` is "failed"."""
    started = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    unit = audit.start_unit(
        serial=serial,
        profile="welma-optee",
        device="ssh://root@127.0.0.2:2222",
        operator="ann",
        station=station,
    )
    if result == "passed":
        assert keygen_s is not None
        audit.record_step(
            unit.id,
            step="keygen",
            attempt=1,
            outcome="passed",
            started_at=started,
            ended_at=started + timedelta(seconds=keygen_s),
        )
        audit.finish_unit(unit.id, result="passed")
    else:
        audit.record_step(
            unit.id,
            step="keygen",
            attempt=1,
            outcome="failed",
            started_at=started,
            ended_at=started + timedelta(seconds=5),
            message="keygen failed",
        )
        audit.finish_unit(unit.id, result="failed", failed_step="keygen", message="keygen failed")


def _fleet_of_two_lines(tmp_path, fleet_db):  # type: ignore[no-untyped-def]
    """st-a on line L1: three passed (key generation 20, 30, 40 s) and one failed in keygen; st-b on line L2: one
    passed (50 s), and board …2000 passed on both stations (a conflict)."""
    a = make_station(tmp_path, fleet_db, "st-a", line="L1")
    b = make_station(tmp_path, fleet_db, "st-b", line="L2")
    with a.audit() as audit:
        for number, seconds in ((2000, 20.0), (2001, 30.0), (2002, 40.0)):
            _unit_with_keygen(
                audit, f"20260000000{number}", station="st-a", keygen_s=seconds, result="passed"
            )
        _unit_with_keygen(audit, "202600000002003", station="st-a", keygen_s=None, result="failed")
    with b.audit() as audit:
        _unit_with_keygen(audit, "202600000002000", station="st-b", keygen_s=50.0, result="passed")
    _send_all(a)
    _send_all(b)
    return a, b


def test_the_whole_fleet_scope_has_the_yield_and_keygen_charts_by_line_and_station(
    qtbot, tmp_path, fleet_db, monkeypatch
):
    a, _b = _fleet_of_two_lines(tmp_path, fleet_db)
    scoped = ScopedAuditView(QLabel("this station"), a.fleet)  # the local audit view has its own tests
    qtbot.addWidget(scoped)
    scoped.scope.setCurrentIndex(1)
    view = scoped.fleet_view
    assert view is not None
    try:
        # The count and the first page come back in either order; while rows are on their way it says so.
        qtbot.waitUntil(
            lambda: "units across the fleet" in view.message.text() and not view.model.loading,
            timeout=TIMEOUT_MS,
        )
        assert "5 of 5 units across the fleet loaded" in view.message.text()
        assert "loading" not in view.message.text() and "scroll down" not in view.message.text()
        # The same chart class as the local scope's "Yield" tab, with the fleet's figures.
        assert isinstance(view.yield_chart, YieldChart)
        summary = view.yield_chart.summary
        assert summary is not None
        assert (summary.units, summary.passed, summary.failed) == (5, 4, 1)
        assert summary.pass_rate == pytest.approx(0.8)
        assert summary.failures_by_step == (("keygen", 1),)
        assert summary.keygen.count == 4
        assert summary.keygen.quantile(0.5) == pytest.approx(30.0)
        assert summary.keygen.max_s == pytest.approx(50.0)
        assert sum(each.count for each in summary.keygen.histogram) == 4
        rates = {(g.line, g.station): (g.units, g.pass_rate) for g in view.yield_chart.groups}
        assert rates == {("L1", "st-a"): (4, pytest.approx(0.75)), ("L2", "st-b"): (1, pytest.approx(1.0))}
        # The groups list: lines, then their stations, with counts and pass rates.
        top = {
            view.groups.topLevelItem(i).text(0): view.groups.topLevelItem(i)
            for i in range(view.groups.topLevelItemCount())
        }
        assert set(top) == {"All stations", "line L1", "line L2"}
        assert top["All stations"].text(1) == "5"
        assert (top["line L1"].child(0).text(0), top["line L1"].child(0).text(2)) == ("st-a", "75.0 %")
        conflicts = [
            view.conflicts.topLevelItem(i).text(1) for i in range(view.conflicts.topLevelItemCount())
        ]
        assert any("202600000002000 passed on more than one station" in text for text in conflicts)

        # Clicking a line filters the units and the chart to it.
        view._group_clicked(top["line L2"], 0)
        qtbot.waitUntil(lambda: "1 of 1 units" in view.message.text(), timeout=TIMEOUT_MS)
        summary = view.yield_chart.summary
        assert (
            summary is not None and summary.units == 1 and summary.keygen.quantile(0.5) == pytest.approx(50.0)
        )
        assert [g.station for g in view.yield_chart.groups] == ["st-b"]
        assert view.model.rowCount() == 1 and view.model.unit_at(0)["station"] == "st-b"
        view.tabs.setCurrentWidget(view.yield_chart)
        assert not view.yield_chart.grab().isNull()

        # The exports of the local scope, of the fleet's units the filters show (line L2 now).
        assert view.export("csv", tmp_path / "l2.csv")
        qtbot.waitUntil(lambda: "Exported 1 fleet units to" in view.message.text(), timeout=TIMEOUT_MS)
        rows = list(csv.DictReader(io.StringIO((tmp_path / "l2.csv").read_text(encoding="utf-8-sig"))))
        assert [(r["station"], r["line"], r["serial"]) for r in rows] == [("st-b", "L2", "202600000002000")]
        assert view.export("pdf", tmp_path / "l2.pdf")
        qtbot.waitUntil(
            lambda: "l2.pdf" in view.message.text() and "pages" in view.message.text(), timeout=TIMEOUT_MS
        )
        text = subprocess.run(
            ["pdftotext", str(tmp_path / "l2.pdf"), "-"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert (
            "Fleet provisioning report" in text and "st-b" in text and "st-a" not in text.split("Units")[-1]
        )
        # The button asks where (the dialog answered here) and exports there.
        monkeypatch.setattr(
            "ui.fleet_view.QFileDialog.getSaveFileName",
            lambda *_args, **_kwargs: (str(tmp_path / "button.jsonl"), ""),
        )
        view.export_buttons["jsonl"].click()
        qtbot.waitUntil(
            lambda: "button.jsonl" in view.message.text() and "Exported" in view.message.text(),
            timeout=TIMEOUT_MS,
        )
        assert len((tmp_path / "button.jsonl").read_text().splitlines()) == 1
    finally:
        scoped.shutdown()


def test_the_fleet_units_page_in_as_the_table_scrolls_and_no_query_runs_on_the_gui_thread(
    qtbot, tmp_path, fleet_db, monkeypatch
):
    station = make_station(tmp_path, fleet_db, "st-a", line="L1")
    with station.audit() as audit:
        for number in range(45):
            provision_synthetic(audit, f"2026000000030{number:02d}", station="st-a")
    _send_all(station)
    from station.fleet import connection

    threads: list[bool] = []
    real_connect = connection.connect

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread() is threading.main_thread())
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(connection, "connect", watched)
    view = FleetView(station.fleet, page_rows=20)
    qtbot.addWidget(view)
    view.resize(
        1200, 400
    )  # a page holds more rows than fit: Qt asks for the next one only when scrolled down
    view.show()
    expected = [f"2026000000030{n:02d}" for n in range(44, -1, -1)]  # newest first
    try:
        qtbot.waitUntil(
            lambda: "20 of 45 units across the fleet loaded" in view.message.text(), timeout=TIMEOUT_MS
        )
        assert view.model.rowCount() == 20 and view.model.pages_fetched == 1
        assert "scroll down for more" in view.message.text()
        assert [view.model.unit_at(row)["serial"] for row in range(20)] == expected[:20]

        view.table.scrollToBottom()
        qtbot.waitUntil(lambda: view.model.rowCount() == 40, timeout=TIMEOUT_MS)
        assert view.model.pages_fetched == 2
        qtbot.waitUntil(lambda: "40 of 45 units" in view.message.text(), timeout=TIMEOUT_MS)
        view.table.scrollToBottom()
        qtbot.waitUntil(lambda: view.model.rowCount() == 45, timeout=TIMEOUT_MS)
        # Keyset pages: every unit once, in order, none skipped.
        assert [view.model.unit_at(row)["serial"] for row in range(45)] == expected
        assert view.model.exhausted and not view.model.canFetchMore()
        qtbot.waitUntil(lambda: "45 of 45 units" in view.message.text(), timeout=TIMEOUT_MS)
        assert "scroll down" not in view.message.text()
        assert threads and not any(threads), "a fleet query ran on the GUI thread"
    finally:
        view.shutdown()


def test_a_board_is_traced_across_stations_from_the_units_table(qtbot, tmp_path, fleet_db):
    a, _b = _fleet_of_two_lines(tmp_path, fleet_db)
    view = FleetView(a.fleet)
    qtbot.addWidget(view)
    try:
        qtbot.waitUntil(lambda: view.model.rowCount() == 5, timeout=TIMEOUT_MS)
        row = next(r for r in range(5) if view.model.unit_at(r)["serial"] == "202600000002000")
        view._trace_row(view.model.index(row, 0))
        qtbot.waitUntil(lambda: "attempt(s) on" in view.message.text(), timeout=TIMEOUT_MS)
        assert "board 202600000002000: 2 attempt(s) on 2 station(s)" in view.message.text()
        assert view.tabs.currentWidget() is view.units
        stations = {view.units.topLevelItem(i).text(0) for i in range(view.units.topLevelItemCount())}
        assert stations == {"st-a (line L1)", "st-b (line L2)"}
        for index in range(2):  # each attempt: its step attempts, then its events
            attempt = view.units.topLevelItem(index)
            assert (attempt.child(0).text(0), attempt.child(0).text(1)) == ("keygen (try 1)", "passed")
            events = attempt.child(attempt.childCount() - 1)
            assert events.text(0).endswith("events in the journal") and events.childCount() >= 3
    finally:
        view.shutdown()
