"""How a unit ended — the one type the CLI, the single-board window and the batch grid all read."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from station.audit import AuditLog, SerialAlreadyPassed, UnitAlreadyActive
from station.errors import StationError
from station.states import UnitState
from station.steps import STEPS


class Ending(StrEnum):
    """How a unit ended (equal to its word: ``Ending.PASSED == "passed"``)."""

    PASSED = "passed"
    # Failed: resumable (Retry continues it) unless the unit was closed.
    FAILED = "failed"
    # The station refused to go on with the board (a changed host key): set it aside.
    ABORTED = "aborted"
    # Never started: bad input, a board already passed, or one whose unit is active elsewhere.
    REFUSED = "refused"
    # A batch was cancelled before this board's turn came.
    NOT_STARTED = "not started"


@dataclass(frozen=True)
class UnitOutcome:
    """A unit's end, with what whoever shows it needs: the certificate, the failed step, what to do next."""

    kind: Ending
    serial: str
    message: str
    unit_id: int | None = None
    failed_step: str | None = None
    certificate_fingerprint: str | None = None
    # A failed unit Retry can continue (a refused start of a board whose last unit failed, too).
    resumable: bool = False
    fixture: str | None = None
    device: str = ""
    duration_s: float = 0.0
    # Of that, the time the unit waited on its board (the rest is the station's own share).
    device_s: float = 0.0
    job: int = 0
    # Of the station's share, the time the unit waited for the station's services to answer its calls.
    service_s: float = 0.0
    # The CPU seconds its worker process spent on it (0 where no worker reported its end: killed, or none ran).
    worker_cpu_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.kind == Ending.PASSED

    @property
    def next_action(self) -> str:
        """What the person at the station does next, in words."""
        if self.kind == Ending.PASSED:
            return "stick the label on the board, then scan the next board."
        if self.kind == Ending.NOT_STARTED:
            return "nothing was done to the board; start it again when the line is ready."
        if self.kind == Ending.REFUSED:
            return (
                "press Retry to continue this board's unfinished unit from where it failed."
                if self.resumable
                else "nothing was done to the board; fix the cause, then scan again."
            )
        if not self.resumable:
            return "set the board aside and call the line engineer with this message."
        resume_from = STEPS[self.failed_step].resume_from if self.failed_step in STEPS else None
        again = f" — it continues from “{STEPS[resume_from].title}”" if resume_from in STEPS else ""
        return (
            f"do what the message says, then press Retry{again}. "
            "To give up on this board, set it aside and scan the next one."
        )


def refused(
    error: StationError, *, serial: str, fixture: str | None = None, device: str = "", job: int = 0
) -> UnitOutcome:
    """A start the station refused, as an outcome (the one mapping of refusals for every driver)."""
    if isinstance(error, SerialAlreadyPassed):
        return UnitOutcome(
            Ending.REFUSED, serial, str(error), unit_id=error.unit.id, fixture=fixture, device=device, job=job
        )
    if isinstance(error, UnitAlreadyActive):
        unit = error.unit
        return UnitOutcome(
            Ending.REFUSED,
            serial,
            str(error),
            unit_id=unit.id if unit else None,
            failed_step=unit.failed_step if unit else None,
            resumable=unit is not None and unit.state == UnitState.FAILED,
            fixture=fixture,
            device=device,
            job=job,
        )
    return UnitOutcome(Ending.REFUSED, serial, str(error), fixture=fixture, device=device, job=job)


def finished(
    audit: AuditLog,
    unit_id: int,
    *,
    serial: str,
    fixture: str | None = None,
    device: str = "",
    duration_s: float = 0.0,
    device_s: float = 0.0,
    job: int = 0,
) -> UnitOutcome:
    """The outcome of a unit that ran, read back from the audit log (its state is the truth)."""
    unit = audit.unit(unit_id)
    if unit.state == UnitState.PASSED:
        record = audit.certificate_for_unit(unit.id)
        return UnitOutcome(
            Ending.PASSED,
            serial,
            f"serial {serial} enrolled",
            unit_id=unit.id,
            certificate_fingerprint=record.fingerprint_sha256 if record else None,
            fixture=fixture,
            device=device,
            duration_s=duration_s,
            device_s=device_s,
            job=job,
        )
    kind = Ending.ABORTED if unit.state == UnitState.ABORTED else Ending.FAILED
    return UnitOutcome(
        kind,
        serial,
        unit.message or f"unit {unit.id} is {unit.state}",
        unit_id=unit.id,
        failed_step=unit.failed_step,
        resumable=unit.state == UnitState.FAILED,
        fixture=fixture,
        device=device,
        duration_s=duration_s,
        device_s=device_s,
        job=job,
    )
