"""The unit's state machine: run a profile's steps in order, each under its deadline and retry policy.

The executor (not the step) enforces deadlines and records every attempt in the audit log with its
start, end, outcome and a digest of its (masked) output.  It reports progress through plain
callbacks (:class:`FlowEvent`) — the GUI turns them into Qt signals, the CLI prints them.
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from station.audit import Unit
from station.config import StationConfig
from station.errors import StationError
from station.home import StationHome
from station.masking import Masker
from station.orders import OrderBook, OrderRefused, order_profile
from station.pki import CertificateAuthority
from station.profiles import MIN_PRODUCTION_PIN_LENGTH, DeviceProfile
from station.states import RESUMABLE_UNIT_STATES, EventKind, StepOutcome, UnitState
from station.steps import (
    STEPS,
    FleetChecks,
    StationSigner,
    StepFailed,
    StepSkipped,
    TlsProofServer,
    UnitContext,
    UnitRecorder,
    UnitRefused,
    UnitSigner,
    crash_point,
    disable_test_hooks,
)
from station.transport import (
    CommandFailed,
    CommandTimedOut,
    Deadline,
    DeviceAddress,
    DeviceLink,
    HostKeyMismatch,
    LinkCancelled,
    LinkLost,
    open_link,
)

if TYPE_CHECKING:
    # The log and the line's hand-off live in the station's process only: a unit's worker (whose Provisioner has
    # proxies to them) never imports them — nor sqlite_utils, barcode and PIL behind them.
    from station.audit import AuditLog
    from station.engine.outcome import UnitOutcome
    from station.line.handoff import LineHandOff

EXCERPT_CHARS = 2000


@dataclass(frozen=True)
class FlowEvent:
    """One thing that happened to a unit, for whoever is watching (CLI, GUI, batch)."""

    kind: EventKind
    serial: str
    unit_id: int | None = None
    step: str = ""
    title: str = ""
    index: int = 0
    count: int = 0
    attempt: int = 1
    outcome: str = ""
    duration_s: float = 0.0
    eta_s: float | None = None
    message: str = ""
    fixture: str | None = None
    # Set by the engine (station.engine): which submitted job this is, the process the unit runs in, the
    # step medians of a unit about to start ("unit_planned"), and how the unit ended ("unit_finished").
    job: int = 0
    pid: int | None = None
    etas: dict[str, float | None] | None = None
    result: UnitOutcome | None = None


Observer = Callable[[FlowEvent], None]


@dataclass(frozen=True)
class Admission:
    """A unit admitted to run: recorded as running, with the steps it will run (a resumed unit skips what
    it need not redo) and what the audit history says each step usually takes."""

    unit: Unit
    device: str
    fixture: str | None
    plan: tuple[str, ...]
    inherited: Unit | None = None
    etas: dict[str, float | None] = field(default_factory=dict)
    # The profile the unit runs with: a work order's profile replaces the one asked for.
    profile: DeviceProfile | None = None


@dataclass(frozen=True)
class UnitResult:
    unit: Unit
    passed: bool
    failed_step: str | None
    message: str
    # Seconds the unit waited on its board (connects, commands, transfers, reboots): the unit's wall time
    # less this is the station's own share.
    device_s: float = 0.0


class _BoardClock:
    """Adds up the time a link spends waiting on the board."""

    CALLS = ("open", "run", "put", "get", "reboot")

    def __init__(self, link: DeviceLink) -> None:
        self.seconds = 0.0
        for name in self.CALLS:
            setattr(link, name, self._timed(getattr(link, name)))

    def _timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began

        return timed


def step_eta(audit: AuditLog, profile: DeviceProfile, step: str) -> float | None:
    """What a step usually takes on this profile: the median of its recent passed runs (None: no history).
    The one rule for every ETA the CLI and the window show."""
    durations = audit.step_durations(profile=profile.name, step=step, limit=30)
    return statistics.median(durations) if durations else None


def step_etas(audit: AuditLog, profile: DeviceProfile) -> dict[str, float | None]:
    """:func:`step_eta` of every step of the profile."""
    return {step: step_eta(audit, profile, step) for step in profile.step_names()}


# The steps' ETAs read per (profile name, its steps), kept by a caller across the admissions of one burst.
EtaCache = dict[tuple[str, tuple[str, ...]], dict[str, float | None]]


def _cached_etas(audit: AuditLog, profile: DeviceProfile, cache: EtaCache | None) -> dict[str, float | None]:
    """:func:`step_etas`, read once per profile into ``cache`` (None: read every time)."""
    if cache is None:
        return step_etas(audit, profile)
    key = (profile.name, profile.step_names())
    etas = cache.get(key)
    if etas is None:
        etas = cache[key] = step_etas(audit, profile)
    return dict(etas)


def _retryable(error: BaseException) -> bool:
    return isinstance(error, LinkLost | CommandTimedOut) and not isinstance(error, HostKeyMismatch)


def _check_order_still_open(book: OrderBook, unit: Unit) -> None:
    """A unit is resumed only while its work order is open (with [fleet]: as the fleet says — closed on another
    station counts): refused here, before anything touches the board."""
    order_id = book.order_of_unit(unit.id)
    if order_id is None:
        return
    try:
        status = book.status(order_id)
    except OrderRefused:
        raise
    except StationError:
        return  # an order of this station only (from before it joined the fleet): the guard step reads its copy
    if status.state == "closed":
        raise OrderRefused(
            "closed",
            f"work order {order_id} was closed ({status.close_reason or 'no reason given'}) while board "
            f"{unit.serial} was unfinished: it is not enrolled — set the board aside and abort its unit (station "
            f"provision --restart refuses it too)",
            status.order,
        )


class Provisioner:
    """Runs units on boards: one call to :meth:`provision` takes one board from scan to PASS or FAIL."""

    def __init__(
        self,
        *,
        home: StationHome,
        config: StationConfig,
        ca: CertificateAuthority | UnitSigner,
        audit: AuditLog | UnitRecorder,
        observer: Observer | None = None,
        line: LineHandOff | None = None,
    ) -> None:
        """``ca`` and ``audit`` are the station's own, or (in a unit's worker process, which only runs
        :meth:`run_admitted`) the engine's proxies to them."""
        self.home = home
        self.config = config
        self.ca = ca
        self.audit = audit
        self.observer: Observer = observer or (lambda event: None)
        # Label printer and MES: told of every finished unit, in _finished (the one place a unit ends).
        self.line = line
        if config.production:
            disable_test_hooks()  # a station in production mode cannot be made to kill itself

    def eta(self, profile: DeviceProfile, step: str) -> float | None:
        """Median of the recent passed durations of this step on this profile, if any were recorded."""
        return step_eta(self._log(), profile, step)

    def _log(self) -> AuditLog:
        from station.audit import AuditLog

        if not isinstance(self.audit, AuditLog):
            raise TypeError("admitting a unit needs the audit log itself, not a worker's proxy")
        return self.audit

    def _orders(self) -> OrderBook:
        """The work orders units are counted in: the fleet's with [fleet] (station.fleet.orders), else the log's."""
        if self.config.fleet is None:
            return self._log().orders
        from station.fleet.orders import order_book

        return order_book(self._log(), self.config)

    def provision(
        self,
        *,
        serial: str,
        device: str,
        profile: DeviceProfile,
        operator: str,
        fixture: str | None = None,
        batch: str | None = None,
        resume: bool = False,
        restart: bool = False,
        reprovision_reason: str | None = None,
        cancel: threading.Event | None = None,
        order: str | None = None,
    ) -> UnitResult:
        """Provision one board in this process.  Bad input raises before anything touches a device or the audit log.

        The station's own programs run units through :mod:`station.engine` (each in a worker process);
        this in-process path is the same two halves, :meth:`admit` then :meth:`run_admitted`."""
        admission = self.admit(
            serial=serial,
            device=device,
            profile=profile,
            operator=operator,
            fixture=fixture,
            batch=batch,
            resume=resume,
            restart=restart,
            reprovision_reason=reprovision_reason,
            order=order,
        )
        return self.run_admitted(
            admission, profile=admission.profile or profile, cancel=cancel or threading.Event()
        )

    # long: the resume rules as one decision, read top to bottom
    def admit(
        self,
        *,
        serial: str,
        device: str,
        profile: DeviceProfile,
        operator: str,
        fixture: str | None = None,
        batch: str | None = None,
        resume: bool = False,
        restart: bool = False,
        reprovision_reason: str | None = None,
        order: str | None = None,
        eta_cache: EtaCache | None = None,
    ) -> Admission:
        """Decide whether and where a unit starts (the resume rules), and record its start.

        Raises StationError (nothing touched a board) for bad input, a board already passed, or one whose
        unit is active elsewhere.  Runs where the audit log is written: the engine's parent process.

        ``order`` is the work order the board is built for (picked in the window, named in a manifest); without
        it the open order holding the serial is used. The order's profile is the unit's profile (returned in
        the admission).

        ``eta_cache``: the steps' ETAs already read for a profile, kept by the caller across the admissions of
        one burst (the engine admits a batch's 64 boards at once: one read of the history, not 64).
        """
        book = self._orders()
        if not resume:
            profile = order_profile(
                book,
                serial,
                order=order,
                required=self.config.orders_required,
                profile=profile,
                profiles_dir=self.home.profiles_dir,
            )
        serial = profile.validate_serial(serial)
        DeviceAddress.parse(device)
        problems = profile.production_pin_problems() if self.config.production else []
        if problems:
            demo = "uses the tutorial's demo PINs; " if profile.uses_demo_pins else ""
            raise StationError(
                f"profile {profile.name} {demo}{'; '.join(problems)} — a station in production mode refuses "
                "guessable PINs: set so_pin and user_pin in the profile to the plant's own values (at least "
                f"{MIN_PRODUCTION_PIN_LENGTH} characters, not one repeated character, not a sequence)"
            )
        if not operator.strip():
            raise StationError("no operator is signed in — sign in (name or badge) before provisioning")
        audit = self._log()
        if isinstance(self.ca, CertificateAuthority):
            # Before anything touches the board: a CA that may not sign any more refuses the unit here.
            StationSigner(self.ca, audit).admit()
        steps = profile.step_names()
        start_at = 0
        if resume:
            unit = audit.find_unit(serial)
            if unit is None or unit.state not in RESUMABLE_UNIT_STATES:
                state = "no unit" if unit is None else f"unit {unit.id} is {unit.state}"
                raise StationError(
                    f"there is nothing to resume for serial {serial} ({state}) — provision it without --resume"
                )
            _check_order_still_open(book, unit)
            resume_step = STEPS[unit.failed_step].resume_from if unit.failed_step in STEPS else "identify"
            start_at = steps.index(resume_step) if resume_step in steps else 0
            unit = audit.resume_unit(unit.id)
        else:
            if restart:
                # Start over from the first step: the failed unit — or one a crash left running, which
                # --resume would also take over — is closed as aborted (kept in the log).
                previous = audit.find_unit(serial)
                if previous is not None and previous.state in RESUMABLE_UNIT_STATES:
                    audit.finish_unit(
                        previous.id, result=UnitState.ABORTED, message="restarted from the first step"
                    )
            unit = audit.start_unit(
                serial=serial,
                profile=profile.name,
                device=device,
                operator=operator,
                station=self.config.name,
                fixture=fixture,
                batch=batch,
                reprovision_reason=reprovision_reason,
                order=order,
                orders_required=self.config.orders_required,
                take_place=getattr(book, "take_place", None),
            )
        crash_point("unit_started")
        # A board whose last unit was aborted must show the host key that unit pinned (the abort may
        # have been the station refusing a changed key); only an explicit re-onboarding (a
        # reprovision reason) lets a new unit pin whatever key the board has now.
        inherited = (
            None if unit.host_key_fingerprint or reprovision_reason else self._aborted_predecessor(unit)
        )
        # Identify and guard run on every attempt (a resumed unit must prove it is the same board).
        plan = tuple(
            step for index, step in enumerate(steps) if step in ("identify", "guard") or index >= start_at
        )
        return Admission(
            unit=unit,
            device=device,
            fixture=fixture,
            plan=plan,
            inherited=inherited,
            etas=_cached_etas(audit, profile, eta_cache),
            profile=profile,
        )

    # long: the unit's run loop: steps, cancel, outcome and its recording, in execution order
    def run_admitted(
        self,
        admission: Admission,
        *,
        profile: DeviceProfile,
        cancel: threading.Event,
        tls: TlsProofServer | None = None,
        identity_file: str | None = None,
        fleet: FleetChecks | None = None,
    ) -> UnitResult:
        """Run the admitted unit's steps on its board and record how it ended (in a worker process, the
        audit log and the CA here are the engine's proxies to the parent)."""
        unit, inherited = admission.unit, admission.inherited
        serial, fixture = unit.serial, admission.fixture
        steps = profile.step_names()
        emit = self._emitter(serial, unit.id, fixture)
        emit(kind="unit_started", count=len(steps), message=f"unit {unit.id}, attempt {unit.attempt}")
        link = open_link(
            DeviceAddress.parse(admission.device),
            identity_file=identity_file or str(self.home.ensure_station_key()),
            pinned_host_key=unit.host_key_fingerprint
            or (inherited.host_key_fingerprint if inherited else None),
            cancel=cancel,
            login_user=profile.console.login_user,
            login_password=profile.console.login_password,
            prompt_pattern=profile.console.prompt_pattern,
        )
        board = _BoardClock(link)
        masker = Masker(profile.secrets)
        current: dict[str, str] = {"step": ""}

        def output(text: str) -> None:
            emit(kind="output", step=current["step"], message=text)

        context = UnitContext(
            serial=serial,
            profile=profile,
            link=link,
            audit=self.audit,
            unit=unit,
            ca=StationSigner(self.ca, self._log()) if isinstance(self.ca, CertificateAuthority) else self.ca,
            config=self.config,
            masker=masker,
            output=output,
            tls=tls,
            fleet=fleet,
            home=self.home,
        )
        try:
            for step in admission.plan:
                current["step"] = step
                index = steps.index(step)
                error = self._run_step(
                    context, step, index, len(steps), cancel, emit, admission.etas.get(step)
                )
                if error is not None:
                    # A changed host key, or a board refused as not this serial's: nothing more to try.
                    aborted = isinstance(error, HostKeyMismatch | UnitRefused)
                    result = UnitState.ABORTED if aborted else UnitState.FAILED
                    message = masker(str(error))
                    if aborted and inherited is not None and not unit.host_key_fingerprint:
                        message += (
                            f" (the expected key was pinned by unit {inherited.id} of this board, which was aborted: "
                            "if the board was re-imaged, re-onboard it explicitly — provision it again with "
                            "--reprovision and a reason)"
                        )
                    unit = self._finished(
                        self.audit.finish_unit(unit.id, result=result, failed_step=step, message=message)
                    )
                    emit(kind="unit_finished", step=step, outcome=result, message=message)
                    return UnitResult(unit, False, step, message, board.seconds)
        finally:
            link.close()
        unit = self._finished(self.audit.finish_unit(unit.id, result=UnitState.PASSED))
        emit(kind="unit_finished", outcome=UnitState.PASSED, message=f"serial {serial} enrolled")
        return UnitResult(unit, True, None, f"serial {serial} enrolled", board.seconds)

    def _finished(self, unit: Unit) -> Unit:
        """The unit's end is recorded: hand it to the line (label on PASS, MES record), without waiting."""
        crash_point("unit_finished")
        if self.line is not None:
            try:
                self.line.unit_finished(unit)
            except Exception:  # noqa: BLE001 - the unit is recorded; the hand-off reports its own problems
                pass
        return unit

    def _aborted_predecessor(self, unit: Unit) -> Unit | None:
        """The board's last earlier unit that pinned a host key, if that unit was aborted."""
        offset = 0
        while True:
            # A prefix filter (the audit log's index), newest first; other serials starting alike
            # and units that never pinned a key (refused at identify) are passed over.
            batch = self._log().units(serial_prefix=unit.serial, limit=50, offset=offset)
            for earlier in batch:
                if earlier.serial == unit.serial and earlier.id < unit.id and earlier.host_key_fingerprint:
                    return earlier if earlier.state == UnitState.ABORTED else None
            if len(batch) < 50:
                return None
            offset += len(batch)

    def _emitter(self, serial: str, unit_id: int, fixture: str | None) -> Callable[..., None]:
        def emit(**fields: Any) -> None:
            try:
                self.observer(FlowEvent(serial=serial, unit_id=unit_id, fixture=fixture, **fields))
            except Exception:  # noqa: BLE001 - a broken watcher must never break a unit
                pass

        return emit

    # long: one step's retry loop with its deadline, cancel and recording; the retry decision reads in one place
    def _run_step(
        self,
        ctx: UnitContext,
        step: str,
        index: int,
        count: int,
        cancel: threading.Event,
        emit: Callable[..., None],
        eta: float | None,
    ) -> StationError | None:
        """Run one step with its retries; return the error that failed it, or None."""
        spec = STEPS[step]
        policy = ctx.profile.policy(step)
        attempts = policy.retries + 1
        for attempt in range(1, attempts + 1):
            if cancel.is_set():
                return LinkCancelled("cancelled by the operator — press Retry to resume this board")
            emit(
                kind="step_started",
                step=step,
                title=spec.title,
                index=index,
                count=count,
                attempt=attempt,
                eta_s=eta,
            )
            started_at = datetime.now(UTC)
            began = time.monotonic()
            deadline = Deadline(policy.timeout_s, what=f"step {step}")
            outcome, text = StepOutcome.PASSED, ""
            error: StationError | None = None
            try:
                # Every link call inside the step is bounded by this deadline.
                text = spec.run(ctx, deadline)
            except StepSkipped as skipped:
                outcome, text = StepOutcome.SKIPPED, str(skipped)
            except CommandFailed as exc:
                # The board said no; the link names the command and its last words, and the person at
                # the station also needs to know what to do next.
                error = CommandFailed(
                    f"{exc} — press Retry; if it fails again, set the board aside", exc.result
                )
                outcome, text = StepOutcome.FAILED, str(error)
            except StationError as exc:
                error = exc
                outcome = (
                    StepOutcome.RETRYING if attempt < attempts and _retryable(exc) else StepOutcome.FAILED
                )
                text = str(exc)
            except Exception as exc:  # noqa: BLE001 - recorded as a failure, never lost
                error = StepFailed(
                    f"step {step} failed unexpectedly: {exc!r} — press Retry; report it if it repeats"
                )
                outcome, text = StepOutcome.FAILED, str(error)
            duration = time.monotonic() - began
            masked = ctx.masker(text)
            self.audit.record_step(
                ctx.unit.id,
                step=step,
                attempt=attempt,
                outcome=outcome,
                started_at=started_at,
                ended_at=datetime.now(UTC),
                output_sha256=hashlib.sha256(masked.encode()).hexdigest(),
                excerpt=masked[-EXCERPT_CHARS:],
                message=ctx.masker(str(error)) if error else "",
            )
            crash_point(f"step:{step}")
            emit(
                kind="step_finished",
                step=step,
                title=spec.title,
                index=index,
                count=count,
                attempt=attempt,
                outcome=outcome,
                duration_s=duration,
                message=masked if outcome != StepOutcome.PASSED else "",
            )
            if error is None:
                return None
            if outcome == StepOutcome.FAILED:
                return error
            if isinstance(error, LinkLost) and step != "identify":
                ctx.link.close()  # reopened below; the host key must still match the pinned one
                try:
                    ctx.link.open(Deadline(ctx.profile.policy("identify").timeout_s, what="reconnect"))
                except StationError as reconnect_error:
                    return reconnect_error
        return None
