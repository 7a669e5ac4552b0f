"""The engine's service desk (station.engine.services): many units' calls answered in one group, made durable
by one flush before any answer leaves; a failed flush lets no answer that depends on it out."""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime

import pytest

from station.audit import AuditLog, AuditLogUnavailable
from station.engine.protocol import Call, Refusal, Reply
from station.engine.services import ServiceDesk
from station.errors import StationError

WAIT_S = 10.0


@pytest.fixture
def audit(tmp_path):
    with AuditLog(tmp_path / "audit.db", clock=lambda: datetime(2026, 12, 1, tzinfo=UTC)) as log:
        yield log


def start(audit: AuditLog, serial: str) -> int:
    return audit.start_unit(
        serial=serial, profile="p", device="ssh://root@127.0.0.2:2222", operator="o", station="s"
    ).id


def test_grouped_commits_belong_to_the_thread_that_asked(audit):
    """One thread's grouped (not yet flushed) commits never make another thread's commits undurable."""
    seen: dict[str, int] = {}

    def mode(name: str) -> None:
        with audit._change() as db:
            seen[name] = int(db.execute("PRAGMA synchronous").fetchone()[0])

    inside, leave = threading.Event(), threading.Event()

    def grouped() -> None:
        with audit.grouped_commits():
            mode("grouped")
            inside.set()
            leave.wait(WAIT_S)

    thread = threading.Thread(target=grouped)
    thread.start()
    assert inside.wait(WAIT_S)
    mode("another thread meanwhile")
    leave.set()
    thread.join(WAIT_S)
    mode("after")
    # 1 = NORMAL (the WAL is not flushed at commit), 2 = FULL.
    assert seen == {"grouped": 1, "another thread meanwhile": 2, "after": 2}


def test_many_units_calls_are_flushed_once_and_answered_only_after_the_flush(audit, monkeypatch):
    units = [start(audit, f"2026000000000{n:02d}") for n in range(4)]
    journal: list[tuple[str, int]] = []
    monkeypatch.setattr(audit, "make_durable", lambda: journal.append(("flush", 0)))
    taken, release = threading.Event(), threading.Event()

    def answer(unit: int, call: Call) -> object:
        if call.number == 1:
            taken.set()
            release.wait(WAIT_S)  # the other units' calls queue up meanwhile: they form the next group
        audit.pin_host_key(unit, key_type="ssh-ed25519", fingerprint=f"SHA256:{call.number}")
        journal.append(("answered", call.number))
        return call.number

    sent: queue.SimpleQueue[Reply | Refusal] = queue.SimpleQueue()

    def send(unit: int, message: object) -> None:
        assert isinstance(message, Reply | Refusal)
        journal.append(("sent", message.number))
        sent.put(message)

    desk: ServiceDesk[int] = ServiceDesk(audit, answer, send)
    desk.put(units[0], Call(1, "audit", "pin_host_key"))
    assert taken.wait(WAIT_S)
    for number, unit in enumerate(units[1:], start=2):
        desk.put(unit, Call(number, "audit", "pin_host_key"))
    release.set()
    replies = [sent.get(timeout=WAIT_S) for _ in units]
    desk.close(WAIT_S)
    assert all(isinstance(reply, Reply) for reply in replies)
    assert journal == [
        ("answered", 1),
        ("flush", 0),
        ("sent", 1),
        ("answered", 2),
        ("answered", 3),
        ("answered", 4),
        ("flush", 0),
        ("sent", 2),
        ("sent", 3),
        ("sent", 4),
    ]
    assert [audit.unit(unit).host_key_fingerprint for unit in units] == [f"SHA256:{n}" for n in range(1, 5)]


def test_a_failed_flush_lets_no_write_answer_out(audit, monkeypatch):
    """A certificate whose record may not be on disk never leaves the station; reads are still answered."""
    unit = start(audit, "202600000000042")

    def flush() -> None:
        raise AuditLogUnavailable("The disk holding the audit log is full. Nothing was recorded.")

    monkeypatch.setattr(audit, "make_durable", flush)
    sent: queue.SimpleQueue[Reply | Refusal] = queue.SimpleQueue()
    desk: ServiceDesk[int] = ServiceDesk(
        audit, lambda unit, call: f"answer {call.number}", lambda unit, message: sent.put(message)
    )  # type: ignore[arg-type]
    desk.put(unit, Call(1, "audit", "unit", {"unit_id": unit}))
    desk.put(unit, Call(2, "ca", "issue", {"unit_id": unit}))
    answers = {message.number: message for message in (sent.get(timeout=WAIT_S), sent.get(timeout=WAIT_S))}
    desk.close(WAIT_S)
    assert answers[1] == Reply(1, "answer 1")
    refusal = answers[2]
    assert isinstance(refusal, Refusal)
    assert "could not write the audit log to disk" in refusal.message
    assert "The disk holding the audit log is full" in refusal.message and "press Retry" in refusal.message


def test_make_durable_flushes_what_grouped_commits_wrote(audit):
    """A real flush of the WAL after grouped commits (and none needed before anything was written)."""
    unit = start(audit, "202600000000043")
    with audit.grouped_commits():
        audit.pin_host_key(unit, key_type="ssh-ed25519", fingerprint="SHA256:x")
    audit.make_durable()
    assert audit.path.with_name(audit.path.name + "-wal").stat().st_size > 0
    with AuditLog(audit.path) as other:
        assert other.unit(unit).host_key_fingerprint == "SHA256:x"


def test_a_call_that_needs_no_flush_is_answered_at_once_not_after_the_groups_flush(audit, monkeypatch):
    """A step record or a read in a group with writes leaves before the flush; the writes only after it."""
    units = [start(audit, f"2026000000001{n:02d}") for n in range(3)]
    journal: list[tuple[str, int]] = []
    monkeypatch.setattr(audit, "make_durable", lambda: journal.append(("flush", 0)))
    taken, release = threading.Event(), threading.Event()

    def answer(unit: int, call: Call) -> object:
        if call.number == 1:
            taken.set()
            release.wait(WAIT_S)
        journal.append(("answered", call.number))
        return call.number

    sent: queue.SimpleQueue[Reply | Refusal] = queue.SimpleQueue()

    def send(unit: int, message: object) -> None:
        assert isinstance(message, Reply | Refusal)
        journal.append(("sent", message.number))
        sent.put(message)

    desk: ServiceDesk[int] = ServiceDesk(audit, answer, send)
    desk.put(units[0], Call(1, "audit", "unit"))
    assert taken.wait(WAIT_S)
    desk.put(units[0], Call(2, "ca", "issue"))
    desk.put(units[1], Call(3, "audit", "record_step"))
    desk.put(units[2], Call(4, "tls", "listen"))
    release.set()
    for _ in range(4):
        sent.get(timeout=WAIT_S)
    desk.close(WAIT_S)
    assert journal == [
        ("answered", 1),
        ("sent", 1),
        ("answered", 2),
        ("answered", 3),
        ("sent", 3),
        ("answered", 4),
        ("sent", 4),
        ("flush", 0),
        ("sent", 2),
    ]


def test_a_posted_call_is_served_in_order_and_answered_only_when_refused(audit):
    """A posted step record gets no answer (the unit does not wait for it); it is served before the unit's
    next call; a refused one is answered with the refusal."""
    unit = start(audit, "202600000000044")
    journal: list[int] = []

    def answer(unit: int, call: Call) -> object:
        journal.append(call.number)
        if call.number == 2:
            raise StationError("refused for the test — press Retry")
        return call.number

    sent: queue.SimpleQueue[Reply | Refusal] = queue.SimpleQueue()
    desk: ServiceDesk[int] = ServiceDesk(audit, answer, lambda unit, message: sent.put(message))  # type: ignore[arg-type]
    desk.put(unit, Call(1, "audit", "record_step", answer=False))
    desk.put(unit, Call(2, "audit", "record_step", answer=False))
    desk.put(unit, Call(3, "audit", "finish_unit"))
    first, second = sent.get(timeout=WAIT_S), sent.get(timeout=WAIT_S)
    desk.close(WAIT_S)
    assert journal == [1, 2, 3]
    assert first == Refusal(2, "refused for the test — press Retry")
    assert second == Reply(3, 3)
    assert sent.empty()


# The pipe's reader ends by the SystemExit standing in for os._exit: pytest reports that thread's exit.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_workers_refused_step_record_fails_its_next_call(monkeypatch):
    """The worker posts its step records; a refusal of one is raised by the unit's next call."""
    from multiprocessing import Pipe

    from station.engine import worker
    from station.engine.worker import AuditProxy, ServiceClient

    def station_gone(status: int) -> None:
        raise SystemExit(status)  # ends the pipe's reader thread, not the test's process

    monkeypatch.setattr(worker.os, "_exit", station_gone)
    before = set(threading.enumerate())
    ours, theirs = Pipe(duplex=True)
    client = ServiceClient(theirs)
    (reader,) = set(threading.enumerate()) - before
    audit = AuditProxy(client)
    audit.record_step(7, step="identify", attempt=1, outcome="passed")
    posted = ours.recv()
    assert isinstance(posted, Call) and posted.method == "record_step" and not posted.answer
    ours.send(Refusal(posted.number, "the audit log is full — free space, then press Retry"))
    deadline = threading.Event()
    while client._posted_refusal is None and not deadline.wait(0.01):
        pass
    with pytest.raises(StationError, match="the audit log is full"):
        audit.unit(7)
    ours.close()
    reader.join(WAIT_S)
    assert not reader.is_alive()
