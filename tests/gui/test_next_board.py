"""On a simulated fixture the window demos any number of boards: after PASS or FAIL, "Next board" puts a
factory-fresh board on the fixture.  A board scanned under a second label is refused, and the advice shown
(set it aside, scan the next board) is something the technician can do from the window."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from station.audit import AuditLog
from station.identity_log import IdentityLog
from station.sim.farm import Farm
from tests.helpers.technician import run_unit, scan, sign_in
from ui.audit_view import identity_text

pytestmark = [pytest.mark.gui, pytest.mark.integration]

BOARDS = 6


def serial(n: int) -> str:
    return f"2026000000019{n:02d}"


def press_next_board(qtbot, window) -> None:
    panel = window.identity
    qtbot.waitUntil(lambda: panel.next_button.isVisible() and panel.next_button.isEnabled(), timeout=5_000)
    with qtbot.waitSignal(panel.board_swapped, timeout=60_000):
        qtbot.mouseClick(panel.next_button, Qt.MouseButton.LeftButton)
    assert window.scan.hasFocus()


def test_six_boards_in_a_row_on_one_simulated_fixture_via_next_board(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=1)
    window = open_window(sim_home)
    sign_in(qtbot, window, "dana")
    window.select_fixture("sim-01")
    seen_soc_ids = set()
    for n in range(1, BOARDS + 1):
        scan(qtbot, window, serial(n))
        outcome = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))
        assert outcome.kind == "passed", f"board {n}: {outcome.message}"
        # The window says what the station verified and what is only the board's word.
        text = window.identity.text.text()
        assert "Verified by the station:" in text and "Reported by the board:" in text
        assert "holds the certified key (mutual TLS)" in text.split("Reported")[0]  # what the station proved
        assert "key flags (never extractable, local)" in text.split("Reported")[1]  # the board's word
        assert "SoC id " in text
        seen_soc_ids.add(next(d for d in Farm(sim_home).status()).soc_id)
        press_next_board(qtbot, window)
    assert len(seen_soc_ids) == BOARDS  # six different boards
    with AuditLog(sim_home.audit_db) as audit:
        units = audit.units(limit=20)
        assert sorted(u.serial for u in units) == [serial(n) for n in range(1, BOARDS + 1)]
        assert {u.state for u in units} == {"passed"}
        assert {IdentityLog(audit).soc_id_of(u.id).soc_id for u in units} == seen_soc_ids
        # The unit detail of the audit log says the same, in the long form.
        detail = identity_text(IdentityLog(audit).soc_id_of(units[0].id), audit.steps(units[0].id))
    assert "(reported by the board, read from /sys/firmware/devicetree/base/serial-number)" in detail
    assert (
        "verified by the station: the board answering is the one whose host key the fixture's inventory holds"
    ) in detail
    assert "reported by the board: the key is sensitive, never extractable" in detail


def test_a_guard_refusal_gives_advice_the_technician_can_follow_from_the_window(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=1)
    window = open_window(sim_home)
    sign_in(qtbot, window, "dana")
    window.select_fixture("sim-01")
    scan(qtbot, window, serial(1))
    assert run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return)).kind == "passed"

    # The same board is scanned under another label (the technician did not take it off).
    scan(qtbot, window, serial(2))
    refused = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))
    # Aborted (the engine reads the unit's end from the audit log): not this serial's board, nothing to retry.
    assert refused.kind == "aborted" and refused.failed_step == "guard" and not refused.resumable
    shown = window.result.detail.text() + " " + window.result.next_step.text()
    assert f"enrolled as serial {serial(1)}" in shown and "set the board aside" in shown
    assert "scan the next board" in shown
    assert not window.retry_button.isEnabled()  # nothing advises Retry, and Retry is not offered

    # Following the advice: the board goes aside (Next board), the next board is scanned, and it passes.
    press_next_board(qtbot, window)
    scan(qtbot, window, serial(2))
    again = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return))
    assert again.kind == "passed", again.message


def test_the_home_is_made_private_by_the_service_the_window_starts_and_the_window_says_it_started_one(
    sim_home, station_ca, passphrase_env, open_window, fixtures_file
):
    AuditLog(sim_home.audit_db).close()
    sim_home.audit_db.chmod(0o644)
    sim_home.root.chmod(0o755)
    window = open_window(sim_home, station_ca, fixtures_file)
    text = window.identity.text.text()
    # The service owns the home and makes it private as it opens it (said in its log); the window only says
    # that it started the service.
    assert "started one for this account" in text
    assert sim_home.audit_db.stat().st_mode & 0o077 == 0 and sim_home.root.stat().st_mode & 0o077 == 0
    assert not window.identity.next_button.isVisible()  # no simulated fixture here
