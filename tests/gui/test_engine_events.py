"""The window's single-board page and its batch grid run their units through the station's one engine
(station.engine), each unit in its own worker process, and see the same events `station batch --events`
reports (tests/integration/test_engine.py) — and closing the window leaves no engine thread behind."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
from PySide6.QtCore import Qt

from station.profiles import load_profile
from tests.helpers.engine_events import expected_shape, unit_shape, worker_pids
from tests.helpers.technician import run_unit, scan, sign_in

pytestmark = [pytest.mark.gui, pytest.mark.integration]

CTRL = Qt.KeyboardModifier.ControlModifier


def engine_gone() -> bool:
    return not multiprocessing.active_children() and not [
        thread for thread in threading.enumerate() if thread.name == "station-engine"
    ]


def test_the_single_board_page_runs_its_unit_through_the_engine(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=1)
    window = open_window(sim_home)
    events: list = []
    window.engine.delivered.connect(events.append)
    sign_in(qtbot, window, "alice")
    scan(qtbot, window, "202600000000061")
    outcome = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))
    assert outcome.kind == "passed", outcome.message
    assert unit_shape(events, "202600000000061") == expected_shape(load_profile("welma-optee"))
    assert len(worker_pids(events, "202600000000061")) == 1
    # The log pane asked for the device output; it came as events too.
    assert any(event.kind == "output" for event in events)
    window.close()
    qtbot.waitUntil(engine_gone, timeout=10_000)


def test_the_batch_grid_runs_its_units_through_the_same_engine(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    devices = start_farm(count=2)
    window = open_window(sim_home)
    events: list = []
    window.engine.delivered.connect(events.append)
    sign_in(qtbot, window, "fiona")
    qtbot.keyClick(window, Qt.Key.Key_2, CTRL)
    serials = ["202600000000062", "202600000000063"]
    for serial in serials:
        qtbot.keyClicks(window.batch.scan, serial)
        qtbot.keyClick(window.batch.scan, Qt.Key.Key_Return)
    with qtbot.waitSignal(window.batch.idle, timeout=240_000):
        qtbot.keyClick(window, Qt.Key.Key_Return, CTRL)  # Start all
    assert window.batch.board.counts().passed == len(devices)
    profile = load_profile("welma-optee")
    for serial in serials:
        assert unit_shape(events, serial) == expected_shape(profile)
    assert worker_pids(events, serials[0]).isdisjoint(worker_pids(events, serials[1]))
    # A tile has no log: the grid's units do not even send their device output.
    assert not any(event.kind == "output" for event in events)
    window.close()
    qtbot.waitUntil(engine_gone, timeout=10_000)
