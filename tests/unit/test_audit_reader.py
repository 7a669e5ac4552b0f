"""The audit tab's reads on the wire: filters checked before SQL, records encoded bounded and rebuilt checked,
and the client-side reader's deadlines, refusals and connection handling against a scripted peer on a real
socket pair (the real service is driven in tests/integration/test_audit_service.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from station.audit import AuditLog, UnitFilter
from station.errors import StationError
from station.identity_log import IdentityLog
from station.service import frames
from station.service.audit_reader import KIOSK_HINT, LocalAuditReader, ServiceAuditReader
from station.service.audit_reads import RECENT_UNITS, read_unit_detail, recent_page
from station.service.audit_wire import (
    EXCERPT_CAP,
    MESSAGE_CAP,
    PAGE_CAP,
    STEPS_CAP,
    BadRequest,
    MalformedAnswer,
    detail_from_wire,
    detail_to_wire,
    filter_from_args,
    filter_to_args,
    page_bounds,
    unit_from_wire,
    unit_to_wire,
    units_from_wire,
    yield_from_wire,
    yield_to_wire,
)
from station.service.client import ServiceClient, ServiceRefused, ServiceUnavailable
from station.states import StepOutcome, UnitState
from tests.helpers.audit import Clock, make_certificate, start

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def over_the_wire(data: Any) -> Any:
    """What the peer reads: JSON text, as frames carry it."""
    return json.loads(json.dumps(data))


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    """60 units at line-1 (every 3rd failed at keygen with a long excerpt) and 5 at line-2, one with a
    certificate, a work order's place and an SoC id."""
    clock = Clock(T0)
    with AuditLog(tmp_path / "audit.db", clock=clock) as log:
        for n in range(1, 66):
            unit = start(log, f"20260000000{n:04d}", station="line-1" if n <= 60 else "line-2", batch="B-1")
            began = clock()
            clock.advance(seconds=10)
            failed = n % 3 == 0
            log.record_step(
                unit.id,
                step="keygen",
                attempt=1,
                outcome="failed" if failed else "passed",
                started_at=began,
                ended_at=clock(),
                excerpt="x" * (EXCERPT_CAP + 500) if failed else "key0 generated",
                message="token busy" if failed else "",
            )
            if failed:
                log.finish_unit(
                    unit.id, result="failed", failed_step="keygen", message="m" * (MESSAGE_CAP * 2)
                )
            else:
                log.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{n}"))
                log.finish_unit(unit.id, result="passed")
            clock.advance(minutes=1)
        IdentityLog(log).record_soc_id(1, soc_id="0xfeedbeef", source="nvmem")
        yield log


# ------------------------------------------------------------------------------------------------ filters


def test_a_filter_is_built_from_a_request_and_back_unchanged() -> None:
    wanted = UnitFilter(
        serial_prefix="2026",
        result="failed",
        operator="ann",
        batch="B-1",
        fixture="slot-1",
        failed_step="keygen",
        station="line-1",
        since=T0,
        until=T0 + timedelta(days=1),
        order="WO-1",
    )
    assert filter_from_args(over_the_wire(filter_to_args(wanted))) == wanted
    assert filter_from_args({}) == UnitFilter()
    assert filter_from_args({"batch": "", "result": None}) == UnitFilter()
    # The command line's keys are the same (station audit export sends these).
    assert filter_from_args({"batch": "B-1", "format": "csv", "steps": True}) == UnitFilter(batch="B-1")
    # ... including --serial as UnitFilter.to_mapping words it (station audit export / station units send it so).
    assert filter_from_args({"serial": "2026"}) == UnitFilter(serial_prefix="2026")
    assert (
        filter_from_args(over_the_wire(UnitFilter(serial_prefix="2026").to_mapping())).serial_prefix == "2026"
    )
    # A time without its offset is local time, as on the command line.
    local = filter_from_args({"since": "2026-03-02T08:00:00"}).since
    assert local is not None and local.tzinfo is not None


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"result": "exploded"}, "is not a unit state — use one of running, passed"),
        ({"serial_prefix": "1" * 200}, "at most 128; shorten it"),
        ({"operator": "ann\x1b[31m"}, "control characters"),
        ({"batch": 7}, "must be text"),
        ({"since": "yesterday"}, "is not an ISO 8601 date-time"),
        (
            {"since": "2026-03-03T00:00:00+00:00", "until": "2026-03-02T00:00:00+00:00"},
            "From date is not before",
        ),
    ],
)
def test_a_bad_filter_is_refused_saying_which_field_and_what_to_send(
    args: dict[str, Any], words: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        filter_from_args(args)
    assert words in str(refused.value)


def test_a_page_is_capped_and_its_bounds_checked() -> None:
    assert page_bounds({"offset": 40, "limit": 10_000}) == (40, PAGE_CAP)
    assert page_bounds({"limit": 500}, cap=RECENT_UNITS) == (0, RECENT_UNITS)
    for bad in ({"offset": -1}, {"limit": 0}, {"limit": True}, {"offset": "3"}, {"offset": 10**12}):
        with pytest.raises(BadRequest):
            page_bounds(bad)


# -------------------------------------------------------------------------------------------- records


def test_records_travel_whole_and_long_texts_are_cut(audit: AuditLog) -> None:
    passed = read_unit_detail(audit, 1)
    assert detail_from_wire(over_the_wire(detail_to_wire(passed))) == passed
    assert passed.identity is not None and passed.identity.soc_id == "0xfeedbeef"
    assert passed.certificate is not None and passed.certificate.pem.startswith("-----BEGIN CERTIFICATE-----")

    failed = detail_from_wire(over_the_wire(detail_to_wire(read_unit_detail(audit, 3))))
    assert failed.unit.state is UnitState.FAILED and failed.steps[0].outcome is StepOutcome.FAILED
    assert len(failed.steps[0].excerpt) == EXCERPT_CAP and failed.steps[0].excerpt.endswith("[cut]")
    assert failed.unit.message is not None and len(failed.unit.message) == MESSAGE_CAP
    assert failed.certificate is None and failed.identity is None

    summary = audit.yield_summary(batch="B-1")
    assert yield_from_wire(over_the_wire(yield_to_wire(summary))) == summary


def test_an_answer_that_is_not_what_the_window_expects_is_refused_naming_the_field(audit: AuditLog) -> None:
    good = over_the_wire(unit_to_wire(audit.unit(1)))
    for key, value, words in (
        ("state", "exploded", "malformed state"),
        ("id", "1", "malformed id"),
        ("started_at", "noon", "malformed started_at"),
        ("started_at", "2026-03-02T08:00:00", "malformed started_at"),  # no offset
        ("serial", None, "malformed serial"),
    ):
        with pytest.raises(MalformedAnswer, match=words):
            unit_from_wire({**good, key: value})
    with pytest.raises(MalformedAnswer, match="not an object"):
        unit_from_wire(["a", "list"])
    with pytest.raises(MalformedAnswer, match=f"at most {PAGE_CAP} rows"):
        units_from_wire({"units": [good] * (PAGE_CAP + 1)})
    # Texts are cut on arrival too: a hostile peer's megabyte never reaches a widget.
    assert len(unit_from_wire({**good, "operator": "o" * 10**6}).operator) == 256
    detail = over_the_wire(detail_to_wire(read_unit_detail(audit, 1)))
    with pytest.raises(MalformedAnswer, match=f"at most {STEPS_CAP} rows"):
        detail_from_wire({**detail, "steps": detail["steps"] * (STEPS_CAP + 1)})


# ------------------------------------------------------------------------------- a technician's scope


def test_a_technician_s_scope_is_the_station_s_most_recent_units(audit: AuditLog) -> None:
    page, count = recent_page(audit, "line-1", UnitFilter(), offset=0, limit=RECENT_UNITS)
    assert count == RECENT_UNITS and [u.id for u in page] == list(range(60, 10, -1))
    failed, count = recent_page(audit, "line-1", UnitFilter(result="failed"), offset=0, limit=5)
    assert count == 17 and [u.id for u in failed] == [60, 57, 54, 51, 48]  # 12…60 step 3, newest first
    assert (
        recent_page(audit, "line-1", UnitFilter(serial_prefix="202600000000001"), offset=0, limit=9)[1] == 0
    )
    assert recent_page(audit, "nowhere", UnitFilter(), offset=0, limit=9) == ([], 0)

    reader = LocalAuditReader(audit, station="line-1")
    assert reader.count_units(UnitFilter(), recent=True) == RECENT_UNITS
    assert reader.unit_detail(11, recent=True).unit.id == 11
    for outside in (10, 61):  # older than the window; another station's
        with pytest.raises(ServiceRefused, match="most recent units of line-1"):
            reader.unit_detail(outside, recent=True)
    assert reader.unit_detail(10).unit.id == 10  # a quality lead's scope


# ------------------------------------------------------------------------------ the reader over a socket


class Peer:
    """The far end of a socket pair, answering each request with what ``script`` says (None: never answers)."""

    def __init__(self, script: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    def connect(self) -> ServiceClient:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.settimeout(5)
        self.connections += 1
        self._socks += [ours, theirs]
        thread = threading.Thread(target=self._serve, args=(theirs,), daemon=True)
        thread.start()
        self._threads.append(thread)
        return ServiceClient(ours, Path("/peer"))

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                request = frames.receive(sock, wait_s=10)
            except (frames.PeerGone, frames.FrameError, TimeoutError, OSError):
                return
            self.requests.append(request)
            answer = self.script(request)
            if answer is not None:
                frames.send(sock, {"id": request["id"], **answer})

    def close(self) -> None:
        for sock in self._socks:
            sock.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def peer() -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(script: Callable[[dict[str, Any]], dict[str, Any] | None]) -> Peer:
        made.append(Peer(script))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_the_reader_rebuilds_pages_and_sends_the_kiosk_session(audit: AuditLog, peer: Any) -> None:
    page = [unit_to_wire(unit) for unit in audit.units_page(limit=3)]
    far = peer(lambda request: {"ok": True, "result": {"units": page, "limit": 3}})
    reader = ServiceAuditReader(far.connect, session=lambda: "token-1")
    units = reader.units_page(offset=0, limit=3, order_by="serial", filters=UnitFilter(result="passed"))
    assert [u.id for u in units] == [65, 64, 63]
    units = reader.units_page(offset=3, limit=10_000, filters=UnitFilter(), recent=True)
    first, second = far.requests
    assert first["op"] == "audit_units" and first["args"] == {
        "result": "passed",
        "offset": 0,
        "limit": 3,
        "order_by": "serial",
        "descending": True,
        "session": "token-1",
    }
    assert second["op"] == "recent_units" and second["args"]["limit"] == PAGE_CAP
    assert reader.served_station() is None  # this peer's answers did not say which station
    assert far.connections == 1  # the connection is kept for the next read
    reader.close()


def test_refusals_name_the_role_and_say_a_quality_lead_signs_in_at_the_window(peer: Any) -> None:
    answers = iter(
        [
            {
                "ok": False,
                "code": "refused",
                "error": "refused: tom may not view the audit log — that needs the "
                "quality lead role (OS group welma-quality); ask an administrator",
            },
            {
                "ok": True,
                "result": {
                    "refused": "refused: tom may not view unit 3 — a technician's … sign in",
                    "role": "x",
                },
            },
        ]
    )
    far = peer(lambda request: next(answers))
    reader = ServiceAuditReader(far.connect)
    with pytest.raises(ServiceRefused) as table:
        reader.count_units(UnitFilter())
    assert "welma-quality" in str(table.value) and str(table.value).endswith(KIOSK_HINT)
    with pytest.raises(ServiceRefused, match="may not view unit 3"):
        reader.unit_detail(3, recent=True)
    assert far.connections == 1  # a refusal is an answer: the connection stays
    reader.close()


def test_a_service_that_does_not_answer_is_said_within_the_deadline_and_its_connection_dropped(
    peer: Any,
) -> None:
    far = peer(lambda request: None)
    reader = ServiceAuditReader(far.connect, read_deadline_s=0.5)
    began = time.monotonic()
    with pytest.raises(StationError, match="did not answer audit_count within 0.5 s"):
        reader.count_units(UnitFilter())
    assert time.monotonic() - began < 5
    with pytest.raises(StationError, match="did not answer"):
        reader.count_units(UnitFilter())
    assert far.connections == 2  # the late answer of the first would have been taken for the second's
    reader.close()


def test_a_service_that_is_gone_is_said_with_what_to_do(peer: Any) -> None:
    def refused() -> ServiceClient:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(
        ServiceUnavailable, match="does not answer \\(Connection refused\\) — check that it runs"
    ):
        ServiceAuditReader(refused).units_page(offset=0, limit=5, filters=UnitFilter())

    far = peer(lambda request: {"ok": True, "result": {"units": "not a list"}})
    reader = ServiceAuditReader(far.connect)
    with pytest.raises(MalformedAnswer, match="same version"):
        reader.units_page(offset=0, limit=5, filters=UnitFilter())
    reader.close()
    with pytest.raises(ServiceUnavailable, match="closing"):
        reader.count_units(UnitFilter())


def test_a_read_whose_connection_is_made_while_the_reader_closes_ends_at_once(peer: Any) -> None:
    """close() interrupts the reads it sees waiting; a read still connecting then must not go on to wait out
    its deadline on a service that never answers (a closing window would wait for it)."""
    far = peer(lambda request: None)
    reader: ServiceAuditReader

    def connect_as_the_window_closes() -> ServiceClient:
        client = far.connect()
        reader.close()  # the window closes between the connection and the read
        return client

    reader = ServiceAuditReader(connect_as_the_window_closes, read_deadline_s=30)
    began = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="closing"):
        reader.count_units(UnitFilter())
    assert time.monotonic() - began < 5
    assert far.requests == []  # nothing was sent on it


# ------------------------------------------------------------------------------ the service's handlers


class Records:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def record_request(self, caller: Any, **row: Any) -> int:
        self.rows.append({"account": caller.account, **row})
        return len(self.rows)


def handlers_on(audit: AuditLog) -> tuple[dict[str, Any], Records]:
    from types import SimpleNamespace

    from station.service.audit_reads import handlers

    records = Records()
    service = SimpleNamespace(
        station=SimpleNamespace(audit=audit), config=SimpleNamespace(name="line-1"), records=records
    )
    return handlers(service), records  # type: ignore[arg-type]


def conn_of(*roles: Any) -> Any:
    from types import SimpleNamespace

    from station.audit.service import Caller

    return SimpleNamespace(caller=Caller(pid=1, uid=1234, gid=1234, account="tom"), roles=frozenset(roles))


def test_the_service_answers_bounded_pages_and_checks_what_it_is_asked(audit: AuditLog) -> None:
    from station.roles import Role

    ops, records = handlers_on(audit)
    lead = conn_of(Role.QUALITY)
    page = ops["audit_units"](lead, {"limit": 10_000, "order_by": "serial", "descending": False})
    assert page["limit"] == PAGE_CAP and len(page["units"]) == 65 and page["units"][0]["id"] == 1
    assert ops["audit_count"](lead, {"station": "line-2"}) == {"count": 5}
    assert ops["audit_unit"](lead, {"unit": 61})["unit"]["station"] == "line-2"
    assert ops["audit_yield"](lead, {"batch": "B-1"})["units"] == 65
    for bad, words in (
        ({"order_by": "pem"}, "order_by must be one of"),
        ({"descending": "yes"}, "descending must be true or false"),
        ({"result": "exploded"}, "not a unit state"),
    ):
        with pytest.raises(BadRequest, match=words):
            ops["audit_units"](lead, bad)
    with pytest.raises(BadRequest, match="unit must be a unit number"):
        ops["audit_unit"](lead, {"unit": "1; DROP TABLE units"})

    tech = conn_of(Role.TECHNICIAN)
    recent = ops["recent_units"](tech, {"limit": 500})
    assert (
        recent["count"] == RECENT_UNITS
        and len(recent["units"]) == RECENT_UNITS
        and recent["station"] == "line-1"
    )
    assert ops["recent_unit"](tech, {"unit": 11})["unit"]["id"] == 11
    refused = ops["recent_unit"](tech, {"unit": 10})
    assert refused["role"] == Role.QUALITY.value and "tom may not view unit 10" in refused["refused"]
    assert "signs in at this window" in refused["refused"]
    assert (
        "may not view the units of station line-2"
        in ops["recent_units"](tech, {"station": "line-2"})["refused"]
    )
    # Someone who may read the whole log is told where it is, not "may not".
    admin_said = ops["recent_unit"](conn_of(Role.ADMIN), {"unit": 10})["refused"]
    assert "covers the 50 most recent units of line-1" in admin_said and "may not" not in admin_said
    assert [(row["op"], row["allowed"], row["role_needed"], row["detail"]) for row in records.rows] == [
        ("recent_unit", False, Role.QUALITY.value, {"unit": 10}),
        ("recent_units", False, Role.QUALITY.value, {"station": "line-2"}),
        ("recent_unit", False, Role.QUALITY.value, {"unit": 10}),
    ]
