"""The window is a client of the station service (issue 14, item 6): its units run in the service's worker
processes, not under the window; a window killed mid-batch leaves its units running to PASS, and a window
opened later shows them live on their fixtures' tiles."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from station.audit import AuditLog
from station.service.client import home_socket
from tests.gui.conftest import PASSPHRASE
from tests.helpers.engine_events import worker_pids
from tests.helpers.service import service_pid
from tests.helpers.technician import run_unit, scan, sign_in

pytestmark = [pytest.mark.gui, pytest.mark.integration]

CTRL = Qt.KeyboardModifier.ControlModifier
WAIT_S = 180


def ancestors(pid: int) -> list[int]:
    """``pid``'s parent, its parent's parent, … up to init (from /proc)."""
    chain = []
    while pid > 1:
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        chain.append(pid)
    return chain


def test_a_unit_provisioned_from_the_window_runs_in_the_station_service_it_started(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=1)
    assert service_pid(home_socket(sim_home)) is None  # no service runs yet: the window starts one
    window = open_window(sim_home)
    events: list = []
    chains: dict[int, list[int]] = {}

    def seen(event) -> None:
        events.append(event)
        if event.kind == "step_started" and event.pid and event.pid not in chains:
            chains[event.pid] = ancestors(event.pid)  # while the worker runs

    window.engine.delivered.connect(seen)
    sign_in(qtbot, window, "alice")
    scan(qtbot, window, "202600000000071")
    outcome = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))
    assert outcome.kind == "passed", outcome.message
    service = service_pid(home_socket(sim_home))
    assert service is not None and service != os.getpid()
    workers = worker_pids(events, "202600000000071")
    assert workers and set(chains) == workers
    for worker in workers:
        assert service in chains[worker], (worker, chains[worker], service)
        # (the window started the service, so the window's process is above it — never between it and the worker)
        chain = chains[worker]
        assert os.getpid() not in chain[: chain.index(service)], chain
    # The window said where its units run, and that it started the service.
    text = window.service_status.toolTip()  # the whole sentence; the status bar shows it shortened to fit
    assert "started one for" in text and str(sim_home.root) in text, text
    assert window.service_status.text() and len(window.service_status.text()) <= len(text)


def test_a_batch_whose_window_is_killed_finishes_in_the_service_and_a_new_window_shows_it(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    devices = start_farm(count=2, keygen_delay=6)
    serials = ["202600000000072", "202600000000073"]
    env = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE, QT_QPA_PLATFORM="offscreen")
    env.pop("STATION_IN_PROCESS", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.gui.window_process", str(sim_home.root), "gina", *serials],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], WAIT_S)
        assert ready, "the window should report its boards at key generation"
        line = child.stdout.readline()
        assert line.startswith("running 2"), (
            line,
            child.communicate(timeout=10) if child.poll() is not None else "",
        )
        assert "started one for" in line, line  # the window's status bar said it started the service
        child.send_signal(signal.SIGKILL)  # the window goes away mid-batch
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    with AuditLog(sim_home.audit_db) as log:
        assert {log.find_unit(serial).state for serial in serials} == {"running"}

    # A new window re-attaches: the running units show on their fixtures' tiles, live, until they pass — and one
    # of them on the single-board page too (it was idle), with its steps and Abort.
    window = open_window(sim_home)
    sign_in(qtbot, window, "hugo")
    qtbot.waitUntil(
        lambda: window.result.state == "running" and any(s in window.result.detail.text() for s in serials),
        timeout=20_000,
    )
    shown = next(s for s in serials if s in window.result.detail.text())
    assert f"re-attached: board {shown}" in window.log.toPlainText()
    # The steps over before this window opened say so (the window saw them from key generation on).
    assert (
        window.progress.steps[0].state == "earlier"
        and window.steps._items["identify"].text(1) == "done earlier"
    )
    assert window.progress is not None and window.abort_button.isEnabled()
    assert window.current_fixture().name in {device.name for device in devices}
    qtbot.keyClick(window, Qt.Key.Key_2, CTRL)
    board = window.batch.board
    qtbot.waitUntil(
        lambda: {board.slots[device.name].serial for device in devices} == set(serials), timeout=20_000
    )
    assert all(board.slots[device.name].state in ("running", "passed") for device in devices)
    qtbot.waitUntil(lambda: board.counts().passed == 2, timeout=WAIT_S * 1000)
    assert not window.batch.running
    # The single-board page followed its unit to the end too.
    qtbot.waitUntil(lambda: window.result.state == "passed", timeout=20_000)
    assert shown in window.result.detail.text() and window.result.verdict.text() == "PASS"
    with AuditLog(sim_home.audit_db) as log:
        assert [log.find_unit(serial).state for serial in serials] == ["passed", "passed"]
        assert log.verify().ok
    end = time.monotonic() + 5
    while time.monotonic() < end and window.engine.running_elsewhere:
        qtbot.wait(100)
    assert not window.engine.running_elsewhere
