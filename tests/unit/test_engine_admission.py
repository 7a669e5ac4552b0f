"""Boards admitted together: their starts made durable by one flush before any of their workers starts, and
no worker at all when that flush fails (issue 13, P3).  No board is needed: the worker start is recorded."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from station.audit import AuditLog, AuditLogUnavailable
from station.config import StationConfig
from station.engine import Ending, Scheduler, UnitJob
from station.home import StationHome
from station.pki import CertificateAuthority
from station.profiles import load_profile


@pytest.fixture
def scheduler(tmp_path: Path):
    home = StationHome(tmp_path / "home").create()
    ca = CertificateAuthority.init(home.ca_dir, passphrase=b"engine admission passphrase")
    engine = Scheduler(home=home, config=StationConfig(name="t"), ca=ca, slots=2)
    engine._audit = AuditLog(home.audit_db)  # what the engine thread opens first; this test is that thread
    yield engine
    engine._audit.close()


def queue_boards(scheduler: Scheduler, count: int) -> list[int]:
    numbers = []
    for index in range(count):
        number = index + 1
        job = UnitJob(
            serial=f"20260000000010{index}",
            device=f"ssh://root@127.0.0.2:22{index:02d}",
            profile=load_profile("welma-optee"),
            operator="o",
        )
        scheduler._queues.setdefault(job.device, deque()).append((number, job))
        numbers.append(number)
    return numbers


def test_boards_admitted_together_are_flushed_once_before_any_worker_starts(scheduler, monkeypatch):
    journal: list[str] = []
    audit = scheduler._audit
    assert audit is not None
    flush = audit.make_durable

    def flushed() -> None:
        journal.append("flush")
        flush()

    monkeypatch.setattr(audit, "make_durable", flushed)
    monkeypatch.setattr(
        scheduler,
        "_start",
        lambda number, job, admission, began: journal.append(
            f"start {number} {audit.unit(admission.unit.id).state}"
        ),
    )
    queue_boards(scheduler, 3)
    scheduler._start_ready()
    # Two slots: two boards admitted, one flush, then their workers; the third waits for a slot.
    assert journal == ["flush", "start 1 running", "start 2 running"]
    assert [job.serial for jobs in scheduler._queues.values() for _, job in jobs] == ["202600000000102"]


def test_no_worker_starts_when_the_admissions_cannot_be_made_durable(scheduler, monkeypatch):
    audit = scheduler._audit
    assert audit is not None
    started = []

    def broken() -> None:
        raise AuditLogUnavailable("The disk holding the audit log is full. Nothing was recorded.")

    monkeypatch.setattr(audit, "make_durable", broken)
    monkeypatch.setattr(scheduler, "_start", lambda *args: started.append(args))
    numbers = queue_boards(scheduler, 2)
    scheduler._start_ready()
    assert started == []
    for number in numbers:
        outcome = scheduler.outcome(number)
        assert outcome is not None and outcome.kind == Ending.FAILED and outcome.resumable
        assert (
            "could not write the audit log to disk" in outcome.message
            and "board was not touched" in outcome.message
        )
        assert outcome.unit_id is not None
        unit = audit.unit(outcome.unit_id)
        assert unit.state == "failed" and unit.failed_step == "identify"


def test_boards_admitted_together_read_the_steps_history_once(scheduler, monkeypatch):
    """The ETA plan every admission carries is read once for a burst of boards of one profile, not once per
    board (64 boards: 13 queries, not 832)."""
    audit = scheduler._audit
    assert audit is not None
    reads: list[str] = []
    durations = audit.step_durations

    def counted(**kwargs):
        reads.append(kwargs["step"])
        return durations(**kwargs)

    monkeypatch.setattr(audit, "step_durations", counted)
    admissions = []
    monkeypatch.setattr(
        scheduler, "_start", lambda number, job, admission, began: admissions.append(admission)
    )
    queue_boards(scheduler, 2)
    scheduler._start_ready()
    steps = load_profile("welma-optee").step_names()
    assert len(admissions) == 2
    assert sorted(reads) == sorted(steps)
    assert set(admissions[0].etas) == set(steps)
    assert admissions[0].etas == admissions[1].etas
    assert admissions[0].etas is not admissions[1].etas  # each admission its own copy
