"""The label prints beside the window's "Reprint label", read through the station service (``label_prints``,
station/service/audit_reads.py) and rebuilt by the window's client (station/service/window_client.py): scoped
like the audit tab (a technician's for this station's recent units, a quality lead's or a kiosk session of one
for any unit), the answer bounded, a refusal recorded and said with the role it needs."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from station.audit import AuditLog
from station.audit.service import Caller
from station.home import StationHome
from station.people_model import SignedIn
from station.roles import Role
from station.service.audit_reads import RECENT_UNITS
from station.service.audit_wire import (
    LABEL_MESSAGE_CAP,
    LABEL_PRINTS_CAP,
    BadRequest,
    MalformedAnswer,
    label_history_from_wire,
)
from station.service.client import ServiceRefused
from station.service.ops import OPS
from station.service.server import StationService
from station.service.window_client import StationClient
from tests.helpers.audit import start

STATION = "line-3"
PRINTED = 55  # the newest of line-3's units: printed 25 times
OLD = 5  # line-3's, older than its RECENT_UNITS most recent
OTHER = 56  # line-9's


@pytest.fixture
def service(tmp_path: Path) -> Iterator[StationService]:
    """A station service (not listening: requests dispatched directly) whose log holds 55 units of line-3 — the
    newest printed 25 times, the last refused by the printer with a long message — and one of line-9."""
    home = StationHome(tmp_path / "home").create()
    home.config_file.write_text(f'[station]\nname = "{STATION}"\n')
    running = StationService(home, tmp_path / "station.sock")
    audit: AuditLog = running.station.audit
    for n in range(1, 57):
        start(audit, f"20260000000{n:04d}", station=STATION if n <= PRINTED else "line-9")
    audit.record_label_print(
        PRINTED + 1, by="ann", printer="tcp://zebra:9100", reprint=False, printed=True, message=""
    )
    for n in range(25):
        last = n == 24
        audit.record_label_print(
            PRINTED,
            by=f"op-{n}",
            printer="tcp://zebra:9100",
            reprint=n > 0,
            printed=not last,
            message="out of labels " + "x" * 2000 if last else "sent to tcp://zebra:9100",
        )
    yield running
    running.close()


def conn_of(*roles: Role, account: str = "tom") -> Any:
    return SimpleNamespace(caller=Caller(pid=1, uid=4321, gid=4321, account=account), roles=frozenset(roles))


def ask(service: StationService, conn: Any, unit: object, **extra: Any) -> Any:
    """The request as the service dispatches it (the role table, then the handler)."""
    return service.dispatch(conn, {"id": 1, "op": "label_prints", "args": {"unit": unit, **extra}})


def requests(service: StationService) -> list[tuple[str, str, bool, str | None, dict[str, Any]]]:
    with sqlite3.connect(f"file:{service.home.audit_db}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT op, account, allowed, role_needed, detail FROM service_requests WHERE op = 'label_prints' "
            "ORDER BY id"
        ).fetchall()
    return [
        (op, account, bool(allowed), role, json.loads(detail)) for op, account, allowed, role, detail in rows
    ]


def test_the_op_is_a_technician_s_read_not_recorded_when_allowed() -> None:
    op = OPS["label_prints"]
    assert op.role is Role.TECHNICIAN and not op.recorded


def test_a_technician_reads_the_newest_prints_of_a_recent_unit_bounded(service: StationService) -> None:
    answer = ask(service, conn_of(Role.TECHNICIAN), PRINTED)
    assert answer["ok"], answer
    history = label_history_from_wire(json.loads(json.dumps(answer["result"])))
    assert history.unit_id == PRINTED and history.serial == f"20260000000{PRINTED:04d}"
    # The newest LABEL_PRINTS_CAP of 25, oldest first, and a word that earlier ones were left out.
    assert len(history.prints) == LABEL_PRINTS_CAP == 20 and history.earlier
    assert [p.by for p in history.prints] == [f"op-{n}" for n in range(5, 25)]
    newest = history.prints[-1]
    assert newest.reprint and not newest.printed and newest.printer == "tcp://zebra:9100"
    assert newest.message.startswith("out of labels") and len(newest.message) == LABEL_MESSAGE_CAP
    assert newest.message.endswith("…[cut]")
    # A recent unit never printed: an empty history, nothing left out.
    never = label_history_from_wire(ask(service, conn_of(Role.TECHNICIAN), PRINTED - 1)["result"])
    assert never.unit_id == PRINTED - 1 and never.prints == () and not never.earlier


def test_a_technician_is_refused_other_units_and_each_refusal_is_recorded(service: StationService) -> None:
    tech = conn_of(Role.TECHNICIAN)
    assert RECENT_UNITS == 50
    for unit in (OLD, OTHER, 999):  # older than the recent window; another station's; no such unit (the same)
        answer = ask(service, tech, unit)
        assert answer["ok"], answer
        refused = answer["result"]["refused"]
        assert refused.startswith(f"refused: tom may not view the label prints of unit {unit} — "), refused
        assert f"the {RECENT_UNITS} most recent units of {STATION} only" in refused
        assert Role.QUALITY.value in refused and "signs in at this window" in refused
        assert answer["result"]["role"] == Role.QUALITY.value
    assert requests(service) == [
        ("label_prints", "tom", False, Role.QUALITY.value, {"unit": unit}) for unit in (OLD, OTHER, 999)
    ]


def test_a_quality_lead_or_a_kiosk_session_of_one_reads_any_unit(service: StationService) -> None:
    lead = label_history_from_wire(ask(service, conn_of(Role.QUALITY, account="quinn"), OTHER)["result"])
    assert lead.unit_id == OTHER and [p.by for p in lead.prints] == ["ann"] and not lead.earlier
    assert ask(service, conn_of(Role.ADMIN), OLD)["result"] == {
        "unit": OLD,
        "serial": f"20260000000{OLD:04d}",
        "prints": [],
        "earlier": False,
    }
    # A technician's kiosk with a quality lead signed in (the service adds the person's role to the request).
    handler = service._handlers["label_prints"]
    signed = SignedIn("Quinn Lee", Role.QUALITY, time.time(), time.time() + 600, "tom")
    kiosk = handler(conn_of(Role.TECHNICIAN), {"unit": OTHER, "_signed_in": signed})
    assert kiosk["unit"] == OTHER and not kiosk.get("refused")
    # A quality lead asking for a unit that does not exist is told so (not "refused").
    answer = ask(service, conn_of(Role.QUALITY), 999)
    assert not answer["ok"] and "there is no unit 999 in the audit log" in answer["error"]
    # None of these reads is recorded (allowed reads are not).
    assert requests(service) == []


def test_an_account_without_a_role_is_refused_by_the_role_table_and_recorded(service: StationService) -> None:
    answer = ask(service, conn_of(account="guest"), PRINTED)
    assert not answer["ok"] and answer["code"] == "refused"
    assert "guest may not view a unit's label prints — that needs the technician role" in answer["error"]
    assert requests(service) == [("label_prints", "guest", False, Role.TECHNICIAN.value, {"unit": PRINTED})]


@pytest.mark.parametrize("unit", ["55", 0, -1, True, None, 1.5])
def test_a_unit_that_is_not_a_unit_number_is_a_bad_request(service: StationService, unit: object) -> None:
    with pytest.raises(BadRequest, match="unit must be a unit number"):
        service._handlers["label_prints"](conn_of(Role.QUALITY), {"unit": unit})


def test_the_window_s_client_rebuilds_the_answer_and_refuses_a_malformed_or_wrong_one(
    monkeypatch: pytest.MonkeyPatch, service: StationService
) -> None:
    client = StationClient(Path("/nowhere.sock"), None)
    answers: list[Any] = []

    def call(op: str, args: dict[str, Any] | None = None, *, deadline_s: float | None = None) -> Any:
        assert op == "label_prints" and deadline_s is not None
        return answers.pop(0)

    monkeypatch.setattr(client, "call", call)
    good = ask(service, conn_of(Role.TECHNICIAN), PRINTED)["result"]
    answers.append(json.loads(json.dumps(good)))
    assert client.label_prints(PRINTED).prints[-1].by == "op-24"
    answers.append(ask(service, conn_of(Role.TECHNICIAN), OLD)["result"])
    with pytest.raises(ServiceRefused, match="may not view the label prints of unit 5"):
        client.label_prints(OLD)
    answers.append(good)  # an answer for another unit than asked
    with pytest.raises(MalformedAnswer, match="not 7"):
        client.label_prints(7)
    for broken in (
        {**good, "prints": good["prints"] + [good["prints"][0]]},  # more than LABEL_PRINTS_CAP
        {**good, "earlier": "yes"},
        {**good, "prints": [{**good["prints"][0], "printed": 1}]},
        {**good, "prints": [{**good["prints"][0], "at": "yesterday"}]},
        ["not", "an", "object"],
    ):
        answers.append(broken)
        with pytest.raises(MalformedAnswer, match="same version"):
            client.label_prints(PRINTED)
