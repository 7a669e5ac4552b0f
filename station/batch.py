"""Batch mode: many boards at once, one worker per fixture slot.

Boards on the same fixture run one after another; fixtures run in parallel, so a board whose key
generation takes a minute delays no other fixture.  Two slots can never enrol the same serial: the
audit log's unique index refuses the second (not a Python lock), and the refusal is reported like
any other failure.  Progress goes out through plain callbacks; nothing here knows about Qt.

:class:`SlotBoard` is the batch grid a technician fills by scanning (fixture barcode, then the board's
serial) — the window's state of each fixture slot, its counts and yield, kept here so the rules of
scan-to-slot live in the core and the window only shows them.
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

from station.config import Fixture
from station.engine.outcome import Ending
from station.engine.scheduler import (
    CANCEL_DEADLINE_S,  # noqa: E402,F401 - how long Cancel may take
    Scheduler,
    UnitJob,
)
from station.errors import ConfigError, StationError
from station.flow import FlowEvent, Provisioner
from station.pki import CertificateAuthority
from station.profiles import DeviceProfile
from station.states import SlotState, StepOutcome

# A manifest's columns, in this order unless a header row names them.
MANIFEST_COLUMNS = ("serial", "device", "fixture", "order")


@dataclass(frozen=True)
class BatchJob:
    """One row of a manifest: a board's serial and where it is connected."""

    serial: str
    device: str
    fixture: str | None = None
    line: int = 0
    # The work order the board is built for (station.orders); None: the open order holding the serial.
    order: str | None = None


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
        return sum(outcome.result == Ending.PASSED for outcome in self.outcomes)

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
    """Rows ``serial,device[,fixture[,order]]`` (a header row is allowed, and then names the columns).

    ``device`` is a device address or the name of a known fixture; ``order`` a work order id; errors name the
    file and line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read the manifest {path}: {exc.strerror or exc}") from exc
    return read_manifest_text(text, source=str(path), fixtures=fixtures)


def read_manifest_text(text: str, *, source: str, fixtures: dict[str, str] | None = None) -> list[BatchJob]:
    """:func:`read_manifest` of a manifest's text (the station service gets it from its client); errors name
    ``source`` and the line."""
    path = source
    fixtures = fixtures or {}
    text = text.removeprefix("\ufeff")
    jobs = []
    columns: tuple[str, ...] = MANIFEST_COLUMNS
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        names = [cell.lower() for cell in cells]
        if (
            number == 1
            and {"serial", "device"} <= set(names) <= set(MANIFEST_COLUMNS)
            and len(set(names)) == len(names)
        ):
            columns = tuple(names)  # a header naming the columns, in any order
            continue
        if number == 1 and names[0] == "serial":
            continue  # any other header: the columns are in their usual order
        # Reordered into serial, device, fixture, order whatever order the header gave.
        cells = [
            cells[columns.index(name)] if name in columns and columns.index(name) < len(cells) else ""
            for name in MANIFEST_COLUMNS
        ]
        if len(cells) < 2 or not cells[1]:
            raise ConfigError(f"{path}, line {number}: expected serial,device[,fixture], got {row!r}")
        serial, device = cells[0], cells[1]
        fixture = cells[2] if len(cells) > 2 and cells[2] else None
        order = cells[3] or None
        if "://" not in device:
            if device not in fixtures:
                raise ConfigError(
                    f"{path}, line {number}: {device!r} is neither a device address (ssh://…, serial://…) nor a "
                    f"known fixture ({', '.join(sorted(fixtures)) or 'none configured'})"
                )
            fixture = fixture or device
            device = fixtures[device]
        jobs.append(BatchJob(serial=serial, device=device, fixture=fixture, line=number, order=order))
    if not jobs:
        raise ConfigError(f"{path}: the manifest lists no boards")
    return jobs


BatchObserver = Callable[[FlowEvent], None]


class Batch:
    """Runs a list of jobs with at most ``jobs`` fixture slots working at once, through the engine
    (:class:`station.engine.Scheduler`: each unit in its own worker process).

    ``provisioner`` supplies the station's parts (home, station.toml, CA) and the observer of every event;
    ``profile_for`` picks a job's profile (default: ``profile`` for every job)."""

    def __init__(
        self,
        provisioner: Provisioner,
        *,
        profile: DeviceProfile,
        operator: str,
        jobs: int,
        batch_id: str | None = None,
        profile_for: Callable[[BatchJob], DeviceProfile] | None = None,
    ) -> None:
        if jobs < 1:
            raise StationError("--jobs must be at least 1")
        if not isinstance(provisioner.ca, CertificateAuthority):
            raise TypeError("a batch needs the station's CA itself")
        self.provisioner = provisioner
        self.profile = profile
        self.profile_for = profile_for or (lambda job: profile)
        self.operator = operator
        self.jobs = jobs
        self.batch_id = batch_id or new_batch_id()
        self.cancelled = threading.Event()
        self.scheduler = Scheduler(
            home=provisioner.home,
            config=provisioner.config,
            ca=provisioner.ca,
            observer=provisioner.observer,
            slots=jobs,
            line=provisioner.line,
        )
        self._numbers: dict[int, BatchJob] = {}

    def cancel(self) -> None:
        """Stop every slot: running units end failed and resumable, queued boards are not started."""
        self.cancelled.set()
        self.scheduler.cancel_all()

    def cancel_slot(self, device: str) -> None:
        """Abort the board running on one fixture (its unit ends failed and resumable)."""
        for number, job in list(self._numbers.items()):
            if job.device == device and self.scheduler.outcome(number) is None:
                self.scheduler.cancel(number)

    def run(self, jobs: Iterable[BatchJob]) -> BatchReport:
        """Provision every job; returns when all slots are done (or cancelled)."""
        report = BatchReport(self.batch_id)
        began = time.monotonic()
        listed = list(jobs)
        units = [
            UnitJob(
                serial=job.serial,
                device=job.device,
                profile=self.profile_for(job),
                operator=self.operator,
                fixture=job.fixture,
                batch=self.batch_id,
                order=job.order,
                stream_output=False,
            )
            for job in listed
        ]
        outcomes = self.scheduler.run(units)
        for job, outcome in zip(listed, outcomes, strict=True):
            report.outcomes.append(
                JobOutcome(
                    job,
                    str(outcome.kind),
                    unit_id=outcome.unit_id,
                    failed_step=outcome.failed_step,
                    message=outcome.message,
                    duration_s=outcome.duration_s,
                )
            )
        report.wall_s = time.monotonic() - began
        return report


# -- the batch grid: fixture slots a technician fills by scanning ------------------------------------------

# A fixture's barcode may carry this prefix ("FIXTURE:sim-03") so it can never be mistaken for a serial.
FIXTURE_SCAN_PREFIX = "FIXTURE:"

SLOT_STATES = tuple(SlotState)
# A slot whose board is done: a new serial scanned into it replaces the board.
FINISHED_SLOT_STATES = frozenset({SlotState.PASSED, SlotState.FAILED, SlotState.REFUSED})


@dataclass
class Slot:
    """One fixture of the batch grid and the board on it."""

    fixture: Fixture
    serial: str | None = None
    state: SlotState = SlotState.EMPTY
    unit_id: int | None = None
    step: str = ""
    step_title: str = ""
    step_index: int = 0
    step_count: int = 0
    attempt: int = 1
    message: str = ""
    failed_step: str | None = None
    # A failed (or refused because already failed) board whose unit Retry continues.
    resumable: bool = False
    started_at: float | None = None  # time.monotonic() when the unit started
    ended_at: float | None = None

    @property
    def name(self) -> str:
        return self.fixture.name

    @property
    def active(self) -> bool:
        """A unit runs on this fixture (or is stopping)."""
        return self.state in (SlotState.RUNNING, SlotState.STOPPING)


@dataclass(frozen=True)
class ScanOutcome:
    """What a scan did, for the technician: accepted or refused, and why."""

    accepted: bool
    message: str
    fixture: str | None = None  # the slot concerned
    serial: str | None = None  # set when a board's serial was placed on a fixture


@dataclass(frozen=True)
class BatchCounts:
    """The batch header's figures (refused boards count as failed: they did not pass)."""

    empty: int
    queued: int
    running: int
    passed: int
    failed: int

    @property
    def finished(self) -> int:
        return self.passed + self.failed

    @property
    def yield_fraction(self) -> float | None:
        """Passed over finished boards; None before any board finished."""
        return self.passed / self.finished if self.finished else None


SerialCheck = Callable[[Fixture, str], str]


class SlotBoard:
    """The batch grid's state: which board sits on which fixture, scan-to-slot, counts.

    A technician scans a fixture's barcode (its name, or ``FIXTURE:`` + name), then the board's
    serial; or scans a serial alone, which goes to the highlighted next free fixture.  A serial
    already on another fixture is refused on the spot — the audit log's unique index is the real
    guard (another window or station may hold the board); this only spares a pointless start.

    Owned by one thread (the GUI's); the units themselves run elsewhere and report back through
    :meth:`apply` and :meth:`finish`.
    """

    def __init__(
        self,
        fixtures: Iterable[Fixture],
        *,
        batch_id: str | None = None,
        fixture_prefix: str = FIXTURE_SCAN_PREFIX,
    ) -> None:
        self.slots: dict[str, Slot] = {fixture.name: Slot(fixture) for fixture in fixtures}
        self.batch_id = batch_id or new_batch_id()
        self.fixture_prefix = fixture_prefix
        # A fixture scanned whose board's serial is awaited.
        self.selected: str | None = None

    # -- where a scan goes -------------------------------------------------------------------

    def next_free(self) -> Slot | None:
        """The fixture a serial scanned alone goes to: the first empty one, else the first whose
        board is finished and passed (its board was taken off)."""
        for wanted in (SlotState.EMPTY, SlotState.PASSED):
            for slot in self.slots.values():
                if slot.state == wanted:
                    return slot
        return None

    @property
    def highlighted(self) -> Slot | None:
        """The slot the next serial goes to: the fixture scanned last, else the next free one."""
        if self.selected is not None and self.selected in self.slots:
            return self.slots[self.selected]
        return self.next_free()

    def fixture_named(self, text: str) -> str | None:
        """The fixture a scanned text names (``sim-03`` or ``FIXTURE:sim-03``), or None."""
        text = text.strip()
        if self.fixture_prefix and text.upper().startswith(self.fixture_prefix.upper()):
            text = text[len(self.fixture_prefix) :].strip()
        return text if text in self.slots else None

    def scan(self, text: str, check_serial: SerialCheck) -> ScanOutcome:
        """Take one scan: a fixture's barcode selects that fixture, a serial goes on the highlighted one.

        ``check_serial(fixture, text)`` returns the serial as the fixture's profile accepts it, or
        raises StationError saying why not (nothing is placed then).
        """
        text = text.strip()
        if not text:
            return ScanOutcome(
                False, "nothing was scanned — scan a fixture's barcode or a board's serial label"
            )
        name = self.fixture_named(text)
        if name is not None:
            slot = self.slots[name]
            if slot.active:
                return ScanOutcome(
                    False,
                    f"fixture {name} is provisioning board {slot.serial} — wait for its "
                    "result, or abort it first",
                    fixture=name,
                )
            self.selected = name
            return ScanOutcome(
                True, f"fixture {name} selected — now scan the serial of the board on it", fixture=name
            )
        if self.fixture_prefix and text.upper().startswith(self.fixture_prefix.upper()):
            known = ", ".join(self.slots) or "none"
            return ScanOutcome(
                False,
                f"{text!r} names no fixture of this station (known: {known}) — check the fixture's barcode",
            )
        target = self.highlighted
        if target is None:
            return ScanOutcome(
                False,
                "every fixture holds a board — scan a fixture's barcode first to put this "
                "board on a fixture whose board is finished",
            )
        try:
            serial = check_serial(target.fixture, text)
        except StationError as exc:
            return ScanOutcome(False, str(exc), fixture=target.name)
        return self.place(target.name, serial)

    def place(self, name: str, serial: str) -> ScanOutcome:
        """Put board ``serial`` on fixture ``name`` (ready to start); refused if another fixture holds it."""
        slot = self.slots[name]
        holder = self.holder_of(serial)
        if holder is not None and holder is not slot:
            return ScanOutcome(
                False,
                f"serial {serial} is already on fixture {holder.name} — two boards cannot share "
                "a serial: check both labels, then scan the right one",
                fixture=name,
            )
        if slot.active:
            return ScanOutcome(
                False,
                f"fixture {name} is provisioning board {slot.serial} — wait for its result, "
                "or abort it first",
                fixture=name,
            )
        if holder is slot and slot.state in (SlotState.READY, SlotState.FAILED, SlotState.REFUSED):
            self.selected = None
            what = "press Retry to continue it" if slot.resumable else "it waits for Start"
            return ScanOutcome(
                True, f"board {serial} is already on fixture {name} — {what}", fixture=name, serial=serial
            )
        self.slots[name] = Slot(slot.fixture, serial=serial, state=SlotState.READY)
        self.selected = None
        return ScanOutcome(True, f"board {serial} on fixture {name}", fixture=name, serial=serial)

    def holder_of(self, serial: str) -> Slot | None:
        """The fixture that holds board ``serial`` in this grid, if any."""
        return next((slot for slot in self.slots.values() if slot.serial == serial), None)

    def clear(self, name: str) -> None:
        """Take the board off a fixture that is not running (the slot becomes empty)."""
        slot = self.slots[name]
        if slot.active:
            raise StationError(
                f"fixture {name} is provisioning board {slot.serial} — abort it before removing it"
            )
        self.slots[name] = Slot(slot.fixture)
        if self.selected == name:
            self.selected = None

    def new_batch(self) -> str:
        """Empty every idle fixture and draw a new batch id (running units keep theirs)."""
        for name, slot in self.slots.items():
            if not slot.active:
                self.slots[name] = Slot(slot.fixture)
        self.selected = None
        self.batch_id = new_batch_id()
        return self.batch_id

    # -- what the units report -------------------------------------------------------------------

    def startable(self) -> list[Slot]:
        """Fixtures whose board waits for Start, in grid order."""
        return [slot for slot in self.slots.values() if slot.state == SlotState.READY]

    def mark_started(self, name: str, now: float, *, resume: bool = False) -> Slot:
        """A unit starts on fixture ``name`` (a Retry when ``resume``)."""
        slot = self.slots[name]
        if slot.serial is None or slot.active:
            raise StationError(f"fixture {name} has no board waiting to start")
        if resume and not slot.resumable:
            raise StationError(f"board {slot.serial} on fixture {name} has nothing to resume")
        slot.state, slot.started_at, slot.ended_at = SlotState.RUNNING, now, None
        slot.message, slot.failed_step, slot.resumable = "", None, False
        slot.step = slot.step_title = ""
        if self.selected == name:
            self.selected = None
        return slot

    def mark_stopping(self, name: str) -> Slot:
        slot = self.slots[name]
        if slot.state == SlotState.RUNNING:
            slot.state = SlotState.STOPPING
        return slot

    def apply(self, name: str, event: FlowEvent) -> Slot | None:
        """Take a unit's progress into the fixture's slot; return the slot if what it shows changed."""
        slot = self.slots.get(name)
        if slot is None or not slot.active:
            return None
        if event.kind == "unit_started":
            slot.unit_id, slot.step_count = event.unit_id, event.count or slot.step_count
        elif event.kind == "step_started":
            slot.step, slot.step_title, slot.attempt = event.step, event.title, event.attempt
            slot.step_index, slot.step_count = event.index, event.count or slot.step_count
        elif event.kind == "step_finished" and event.outcome == StepOutcome.RETRYING:
            slot.message = event.message
        else:
            return None
        return slot

    def finish(
        self,
        name: str,
        *,
        result: str,
        message: str,
        now: float,
        unit_id: int | None = None,
        failed_step: str | None = None,
        resumable: bool = False,
    ) -> Slot:
        """The unit on fixture ``name`` ended: ``result`` is passed, failed or refused (never started)."""
        if result not in FINISHED_SLOT_STATES:
            raise ValueError(
                f"result must be one of {', '.join(sorted(FINISHED_SLOT_STATES))}, not {result!r}"
            )
        slot = self.slots[name]
        slot.state, slot.message, slot.ended_at = SlotState(result), message, now
        slot.unit_id = unit_id if unit_id is not None else slot.unit_id
        slot.failed_step, slot.resumable = failed_step, resumable
        return slot

    def counts(self) -> BatchCounts:
        states = [slot.state for slot in self.slots.values()]
        return BatchCounts(
            empty=states.count(SlotState.EMPTY),
            queued=states.count(SlotState.READY),
            running=states.count(SlotState.RUNNING) + states.count(SlotState.STOPPING),
            passed=states.count(SlotState.PASSED),
            failed=states.count(SlotState.FAILED) + states.count(SlotState.REFUSED),
        )
