"""What the window asks of the station service instead of doing it itself (issue 14):

* the service's CA is locked → a board started at the window waits; the window's unlock dialog sends the secret
  with ``ca_unlock`` (a wrong one is said, Cancel refuses the board with the reason, the right one lets it run to
  PASS) — the secret is never in the service's record of requests;
* a person signed in at a kiosk window (``sign_in`` with their own credential) is the unit's recorded operator:
  the service takes them from the session token, not from a name the window typed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest
from PySide6.QtCore import Qt

from station.audit import AuditLog
from station.people import Actor, People
from station.roles import Role
from tests.gui.conftest import PASSPHRASE, stop_service
from tests.helpers.technician import run_unit, scan, sign_in
from ui.bridge import UnitRequest
from ui.main_window import MainWindow
from ui.session import Session

pytestmark = [pytest.mark.gui, pytest.mark.integration]

QUINN_PIN = "482916"


def service_requests(home, op: str) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{home.audit_db}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM service_requests WHERE op = ? ORDER BY id", [op]))


@pytest.fixture
def locked_window(qtbot, sim_home, station_ca, monkeypatch) -> Iterator[MainWindow]:
    """A window on a station service whose CA is locked (nobody typed its passphrase yet)."""
    monkeypatch.delenv("STATION_CA_PASSPHRASE", raising=False)
    session = Session.open(str(sim_home.root))
    assert session.view.ca == {"exists": True, "kind": "file"} and not session.view.ca_unlocked
    window = MainWindow(session)
    qtbot.addWidget(window)
    window.show()
    yield window
    if window.runner.running:
        window.runner.abort()
        window.runner.wait(30_000)
    window.close()
    session.close()
    stop_service(sim_home)


def test_a_locked_ca_is_unlocked_from_the_window_and_the_waiting_board_runs_to_pass(
    qtbot, start_farm, sim_home, locked_window
):
    start_farm(count=1)
    window = locked_window
    with qtbot.waitSignal(
        window.view_changed, timeout=20_000
    ):  # the farm's fixtures, as the service says them
        window.refresh_view()
    assert [fixture.name for fixture in window.session.fixtures.fixtures] == ["sim-01"]
    sign_in(qtbot, window, "alice")

    # Cancel: the board is refused with the service's reason, nothing was done to it.
    scan(qtbot, window, "202600000000081")
    with qtbot.waitSignal(window.unit_finished, timeout=60_000) as refused:
        qtbot.keyClick(window.scan, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: window.ca_dialog is not None and window.ca_dialog.isVisible(), timeout=30_000)
        assert window.ca_dialog.windowTitle() == "Unlock the station's CA"
        window.ca_dialog.reject()
    assert refused.args[0].kind == "refused" and "CA is locked" in refused.args[0].message
    assert "station ca unlock" in window.result.detail.text()

    # Again: a wrong passphrase is said (the board still waits), the right one lets it run to PASS.
    def unlock_when_asked() -> None:
        qtbot.waitUntil(lambda: window.ca_dialog is not None and window.ca_dialog.isVisible(), timeout=30_000)
        dialog = window.ca_dialog
        qtbot.keyClicks(dialog.field, "not the passphrase")
        qtbot.keyClick(dialog.field, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: "Not unlocked" in dialog.problem.text(), timeout=30_000)
        assert dialog.isVisible() and window.runner.running
        qtbot.keyClicks(dialog.field, PASSPHRASE)
        qtbot.keyClick(dialog.field, Qt.Key.Key_Return)

    outcome = run_unit(qtbot, window, lambda: (window.provision(), unlock_when_asked()), 180)
    assert outcome.kind == "passed", outcome.message
    assert window.session.client.call("whoami")["ca_unlocked"] is True
    # Both attempts recorded, neither with the secret.
    unlocks = service_requests(sim_home, "ca_unlock")
    assert len(unlocks) == 2 and all(PASSPHRASE not in row["detail"] for row in unlocks)
    assert all("not the passphrase" not in row["detail"] for row in unlocks)


def test_a_person_signed_in_at_the_kiosk_is_the_unit_s_operator_whatever_name_is_sent(
    qtbot, start_farm, sim_home, station_ca, passphrase_env, open_window
):
    start_farm(count=2)
    with AuditLog(sim_home.audit_db) as audit:
        People(sim_home, audit).enrol(
            "Quinn Lee", Role.QUALITY, QUINN_PIN, by=Actor(name="root", account="root", administrator=True)
        )
    window = open_window(sim_home)
    window.operator_field.setText("quinn lee")
    window.quality_lead_button.click()
    dialog = window.person_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5000)
    with qtbot.waitSignal(dialog.signed_in, timeout=20_000):
        qtbot.keyClicks(dialog.field, QUINN_PIN)
        qtbot.keyClick(dialog.field, Qt.Key.Key_Return)
    assert (window.operator, window.role) == ("Quinn Lee", "quality_lead")
    assert window.session.client.token is not None

    # A board provisioned at the window: the person is the operator, and the request names them.
    scan(qtbot, window, "202600000000082")
    outcome = run_unit(qtbot, window, lambda: qtbot.keyClick(window.scan, Qt.Key.Key_Return), 180)
    assert outcome.kind == "passed", outcome.message

    # Even a request sending another name records the person signed in (the service reads the session).
    window.select_fixture("sim-02")
    fixture = window.current_fixture()
    request = UnitRequest("202600000000083", fixture, window.session.profile_for(fixture), "mallory")
    second = run_unit(qtbot, window, lambda: window._start(request), 180)
    assert second.kind == "passed", second.message

    with AuditLog(sim_home.audit_db) as audit:
        operators = {
            serial: audit.find_unit(serial).operator for serial in ("202600000000082", "202600000000083")
        }
    assert operators == {"202600000000082": "Quinn Lee", "202600000000083": "Quinn Lee"}
    provisions = service_requests(sim_home, "provision")
    assert [json.loads(row["detail"]).get("signed_in") for row in provisions[-2:]] == [
        "Quinn Lee",
        "Quinn Lee",
    ]
    assert all(QUINN_PIN not in row["detail"] for row in service_requests(sim_home, "sign_in"))

    # Signing out ends the session at the service: the token is gone from the window.
    window.sign_out()
    assert window.session.client.token is None
