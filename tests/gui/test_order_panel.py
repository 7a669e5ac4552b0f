"""The window's work order strip: the current order and its progress, and picking among several open orders,
against a real simulated board; the audit view filters by order."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from station.audit import AuditLog
from station.orders import read_order_file
from station.profiles import load_profile
from tests.gui.conftest import home_audit
from tests.helpers.technician import run_unit, scan, sign_in
from ui.order_panel import BY_SERIAL

pytestmark = [pytest.mark.gui, pytest.mark.integration]

ORDERS = """\
order,profile,quantity,serials,due
WO-2026-0142,welma-optee,5,202600000000001-202600000000005,2026-12-31
WO-2026-0143,welma-optee,3,202600000000101-202600000000103,
"""


def import_orders(home, tmp_path, text=ORDERS):
    path = tmp_path / "orders.csv"
    path.write_text(text)
    parsed = read_order_file(path, profiles=lambda name: load_profile(name))
    with AuditLog(home.audit_db) as log:
        log.orders.import_orders(parsed, by="Q. Lead")


def picker_items(window):
    return [window.orders.picker.itemText(i) for i in range(window.orders.picker.count())]


def test_the_technician_picks_the_order_and_sees_its_progress_move(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window, tmp_path
):
    start_farm(count=1)
    sim_home.config_file.write_text('[station]\nname = "line-1"\n\n[orders]\nrequired = true\n')
    import_orders(sim_home, tmp_path)
    window = open_window(sim_home)
    sign_in(qtbot, window, "alice")
    panel = window.orders

    # Two open orders: the technician may pick one; until then each board counts in the order holding it.
    qtbot.waitUntil(lambda: len(panel.open_orders) == 2, timeout=10_000)
    assert picker_items(window) == [
        BY_SERIAL,
        "WO-2026-0143 — welma-optee — 0/3",
        "WO-2026-0142 — welma-optee — 0/5",
    ]
    assert panel.picker.isEnabled() and panel.current_order_id() is None
    assert "2 orders are open (WO-2026-0143, WO-2026-0142)" in panel.detail.text()

    assert panel.pick("WO-2026-0142")
    assert panel.progress.text() == "WO-2026-0142: 0 of 5 passed"
    assert "due 2026-12-31" in panel.detail.text() and "no unit finished yet" in panel.detail.text()

    # A board of the picked order passes, and the strip counts it.
    qtbot.waitUntil(lambda: window.fixtures.status_word("sim-01") == "answers", timeout=15_000)
    scan(qtbot, window, "202600000000001")
    outcome = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))
    assert outcome.kind == "passed", outcome.message
    qtbot.waitUntil(lambda: panel.progress.value() == 1, timeout=20_000)  # refreshed when the unit finished
    assert panel.progress.value() == 1 and panel.progress.maximum() == 5
    assert panel.progress.text() == "WO-2026-0142: 1 of 5 passed"
    assert "1 of 5 passed, yield 100 %" in panel.detail.text()
    assert "WO-2026-0142 — welma-optee — 1/5" in picker_items(window)

    # A label of the other order is refused while this order is picked, before the board is touched.
    scan(qtbot, window, "202600000000101")
    refused = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))
    assert refused.kind == "refused"
    assert "202600000000101 is not one of order WO-2026-0142's serials" in refused.message
    assert "nearest open orders: WO-2026-0143" in refused.message
    assert home_audit(window).find_unit("202600000000101") is None

    # Any order: the strip follows the serial scanned.
    assert panel.pick(None) and panel.current_order_id() is None
    window.scan.clear()
    scan(qtbot, window, "202600000000102")
    assert panel.progress.text() == "WO-2026-0143: 0 of 3 passed"

    # The audit view filters by order.
    window.show_mode("audit")
    view = window.audit_view
    assert view is not None
    view.order_edit.setText("WO-2026-0142")
    view.apply_filters()
    qtbot.waitUntil(lambda: view.model.rowCount() == 1, timeout=10_000)
    assert view.model.unit_at(0).serial == "202600000000001"
    view.select_row(0)  # the unit's detail is read off the GUI thread
    qtbot.waitUntil(lambda: "work order WO-2026-0142" in view.unit_summary.text(), timeout=10_000)


def test_with_one_open_order_it_is_the_current_one_and_without_any_the_strip_says_so(
    qtbot, sim_home, station_ca, passphrase_env, open_window, fixtures_file, tmp_path
):
    sim_home.config_file.write_text("[orders]\nrequired = true\n")
    window = open_window(sim_home, station_ca, fixtures_file)
    panel = window.orders
    qtbot.waitUntil(lambda: "No open work order" in panel.detail.text(), timeout=10_000)
    assert "enrols no board until the quality lead imports one" in panel.detail.text()
    assert not panel.picker.isEnabled()

    import_orders(
        sim_home,
        tmp_path,
        "order,profile,quantity,serials\nWO-7,welma-optee,2,202600000000007 202600000000008\n",
    )
    with qtbot.waitSignal(panel.changed, timeout=10_000):
        panel.refresh()
    assert panel.current() is not None and panel.current().order_id == "WO-7"
    assert panel.progress.text() == "WO-7: 0 of 2 passed" and not panel.picker.isEnabled()


def test_without_required_orders_one_open_order_is_shown_but_boards_of_no_order_still_start(
    qtbot, sim_home, station_ca, passphrase_env, open_window, fixtures_file, tmp_path
):
    import_orders(
        sim_home,
        tmp_path,
        "order,profile,quantity,serials\nWO-7,welma-optee,2,202600000000007 202600000000008\n",
    )
    window = open_window(sim_home, station_ca, fixtures_file)
    panel = window.orders
    qtbot.waitUntil(lambda: len(panel.open_orders) == 1, timeout=10_000)
    assert picker_items(window) == [BY_SERIAL, "WO-7 — welma-optee — 0/2"] and panel.picker.isEnabled()
    assert panel.current_order_id() is None and panel.current().order_id == "WO-7"
    assert panel.progress.text() == "WO-7: 0 of 2 passed"


def test_the_batch_grid_builds_the_order_picked_in_the_window(
    qtbot, sim_home, station_ca, passphrase_env, open_window, fixtures_file, tmp_path
):
    import_orders(sim_home, tmp_path)
    window = open_window(sim_home, station_ca, fixtures_file)
    sign_in(qtbot, window, "alice")
    panel = window.orders
    qtbot.waitUntil(lambda: len(panel.open_orders) == 2, timeout=10_000)
    assert panel.pick("WO-2026-0143")
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    view = window.batch
    # A board of the other order, scanned into the grid: refused when its unit starts, because the grid builds
    # the picked order (without the pick it would count in WO-2026-0142) — before anything touches the board.
    qtbot.keyClicks(view.scan, "202600000000001")
    qtbot.keyClick(view.scan, Qt.Key.Key_Return)
    finished = []
    view.slot_finished.connect(lambda name, outcome: finished.append(outcome))
    with qtbot.waitSignal(view.idle, timeout=30_000):
        qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    (outcome,) = finished
    assert outcome.kind == "refused", outcome.message
    assert "202600000000001 is not one of order WO-2026-0143's serials" in outcome.message
    assert home_audit(window).find_unit("202600000000001") is None
