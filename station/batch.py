"""Batch mode: many boards at once, one worker per fixture slot.

Boards on the same fixture run one after another; fixtures run in parallel, so a board whose key
generation takes a minute delays no other fixture.  Two slots can never enrol the same serial: the
audit log's unique index refuses the second (not a Python lock), and the refusal is reported like
any other failure.  Progress goes out through plain callbacks; nothing here knows about Qt.
"""

from __future__ import annotations

import csv
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from station.errors import ConfigError, StationError
from station.flow import FlowEvent, Provisioner, UnitResult
from station.profiles import DeviceProfile

# How long Cancel may take for every slot to record its unit as failed-and-resumable.
CANCEL_DEADLINE_S = 15.0


@dataclass(frozen=True)
class BatchJob:
    """One row of a manifest: a board's serial and where it is connected."""

    serial: str
    device: str
    fixture: str | None = None
    line: int = 0


@dataclass(frozen=True)
class JobOutcome:
    job: BatchJob
    result: str  # passed | failed | aborted | refused | not started
    unit_id: int | None = None
    failed_step: str | None = None
    message: str = ""
    duration_s: float = 0.0


@dataclass
class BatchReport:
    batch_id: str
    outcomes: list[JobOutcome] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def passed(self) -> int:
        return sum(outcome.result == "passed" for outcome in self.outcomes)

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.passed

    @property
    def all_passed(self) -> bool:
        return bool(self.outcomes) and self.failed == 0


def new_batch_id() -> str:
    """Readable and unique: B20261126-0108-3fa2 (date, time, random)."""
    return f"B{datetime.now(UTC):%Y%m%d-%H%M}-{secrets.token_hex(2)}"


def read_manifest(path: Path, *, fixtures: dict[str, str] | None = None) -> list[BatchJob]:
    """Rows ``serial,device[,fixture]`` (a header row is allowed).

    ``device`` is a device address or the name of a known fixture; errors name the file and line.
    """
    fixtures = fixtures or {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read the manifest {path}: {exc.strerror or exc}") from exc
    jobs = []
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() == "serial":
            continue
        if len(cells) < 2 or not cells[1]:
            raise ConfigError(f"{path}, line {number}: expected serial,device[,fixture], got {row!r}")
        serial, device = cells[0], cells[1]
        fixture = cells[2] if len(cells) > 2 and cells[2] else None
        if "://" not in device:
            if device not in fixtures:
                raise ConfigError(
                    f"{path}, line {number}: {device!r} is neither a device address (ssh://…, serial://…) nor a "
                    f"known fixture ({', '.join(sorted(fixtures)) or 'none configured'})"
                )
            fixture = fixture or device
            device = fixtures[device]
        jobs.append(BatchJob(serial=serial, device=device, fixture=fixture, line=number))
    if not jobs:
        raise ConfigError(f"{path}: the manifest lists no boards")
    return jobs


BatchObserver = Callable[[FlowEvent], None]


class Batch:
    """Runs a list of jobs with at most ``jobs`` fixture slots working at once."""

    def __init__(
        self,
        provisioner: Provisioner,
        *,
        profile: DeviceProfile,
        operator: str,
        jobs: int,
        batch_id: str | None = None,
    ) -> None:
        if jobs < 1:
            raise StationError("--jobs must be at least 1")
        self.provisioner = provisioner
        self.profile = profile
        self.operator = operator
        self.jobs = jobs
        self.batch_id = batch_id or new_batch_id()
        self.cancelled = threading.Event()
        # One cancel event per fixture slot, so an operator can abort one board and leave the rest.
        self._slot_cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """Stop every slot: running units end failed and resumable, queued boards are not started."""
        self.cancelled.set()
        with self._lock:
            events = list(self._slot_cancel.values())
        for event in events:
            event.set()

    def cancel_slot(self, device: str) -> None:
        """Abort the board running on one fixture (its unit ends failed and resumable)."""
        with self._lock:
            event = self._slot_cancel.get(device)
        if event is not None:
            event.set()

    def run(self, jobs: Iterable[BatchJob]) -> BatchReport:
        """Provision every job; returns when all slots are done (or cancelled)."""
        report = BatchReport(self.batch_id)
        began = time.monotonic()
        # One queue per device: a fixture holds one board at a time.
        queues: dict[str, list[BatchJob]] = {}
        for job in jobs:
            queues.setdefault(job.device, []).append(job)
        pending = list(queues.values())
        workers: list[threading.Thread] = []
        slots = threading.Semaphore(self.jobs)

        def slot(queue: list[BatchJob]) -> None:
            with slots:
                for job in queue:
                    with self._lock:
                        cancel = self._slot_cancel[job.device] = threading.Event()
                    if self.cancelled.is_set():
                        outcome = JobOutcome(job, "not started", message="batch cancelled before this board started")
                    else:
                        outcome = self._run_job(job, cancel)
                    with self._lock:
                        report.outcomes.append(outcome)

        for index, queue in enumerate(pending):
            worker = threading.Thread(target=slot, args=(queue,), name=f"slot-{index + 1}", daemon=True)
            worker.start()
            workers.append(worker)
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)
        except KeyboardInterrupt:
            self.cancel()
            self.join(workers)
            raise
        report.wall_s = time.monotonic() - began
        order = {id(job): position for position, job in enumerate(job for queue in pending for job in queue)}
        report.outcomes.sort(key=lambda outcome: order.get(id(outcome.job), 0))
        return report

    def join(self, workers: list[threading.Thread]) -> None:
        """Wait (bounded) for cancelled slots to record their units."""
        end = time.monotonic() + CANCEL_DEADLINE_S
        for worker in workers:
            worker.join(max(0.0, end - time.monotonic()))

    def _run_job(self, job: BatchJob, cancel: threading.Event) -> JobOutcome:
        began = time.monotonic()
        try:
            result: UnitResult = self.provisioner.provision(
                serial=job.serial, device=job.device, profile=self.profile, operator=self.operator,
                fixture=job.fixture, batch=self.batch_id, cancel=cancel,
            )
        except StationError as refused:
            # Invalid serial, serial already passed or active in another slot (the unique index), …
            self.provisioner.observer(FlowEvent(kind="unit_finished", serial=job.serial, outcome="refused",
                                                message=str(refused), fixture=job.fixture))
            return JobOutcome(job, "refused", message=str(refused), duration_s=time.monotonic() - began)
        return JobOutcome(
            job, result.unit.state, unit_id=result.unit.id, failed_step=result.failed_step,
            message=result.message, duration_s=time.monotonic() - began,
        )
