"""The enrollment steps of the Welma tutorial, one small function each.

Each step takes the unit's context and a deadline, talks to the board only through its
:class:`~station.transport.DeviceLink`, and returns the text it wants recorded (its digest goes to
the audit log).  The executor in :mod:`station.flow` owns deadlines, retries and recording.  Where
the tutorial is naive we are not: the CSR is checked against the scanned serial and the token's
own public key, and the certificate issued is an end-entity certificate.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from station.attestation import AttestationFailed, load_vendor_root, verify_x509_chain
from station.audit import AuditLog, CertificateRecord, Unit
from station.audit.checkpoints import CheckpointSigner
from station.config import StationConfig
from station.errors import StationError
from station.home import StationHome
from station.identity import (
    Basis,
    SocIdUnreadable,
    find_fixture,
    host_key_mismatch_advice,
    known_fixtures,
    read_soc_id,
)
from station.identity_log import IdentityConflicts, IdentityRecord, when
from station.masking import Masker
from station.orders import OrderStatus
from station.pki import CertificateAuthority, CsrPolicy, check_csr, device_subject
from station.profiles import DeviceProfile
from station.shell import ShellCommand, command
from station.tls_proof import TLS_PORT_BUSY, TlsProofListener
from station.transport import CommandResult, Deadline, DeviceLink, HostKeyMismatch

if TYPE_CHECKING:
    from station.fleet.guard import GuardVerdict

TLS_ACCEPT_TIMEOUT_S = 20.0
# With a fixed TLS-proof port, a unit finding it taken (another unit's proof) tries again this often.
TLS_PORT_WAIT_S = 0.2
# Linux gives every boot a new random id: what tells a board that restarted from one that only
# dropped its connection.
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

# -- test hook -------------------------------------------------------------------------------------
# The crash-safety tests (tests/integration/test_crash_*.py) kill the station at each commit point of
# a unit, as a power cut would: with STATION_TEST_KILL_AT=<point> in its environment the process
# SIGKILLs itself right after the audit write named <point> has committed.  Points: unit_started,
# host_key_pinned, step:<step> (after a step's record), certificate_recorded, device_certificate_pushed,
# unit_finished.  Without the variable (production) it does nothing.
KILL_AT_ENV = "STATION_TEST_KILL_AT"


_test_hooks = {"enabled": True}
# Set in a unit's worker process (station.engine.worker): the station is its parent process.
STATION_PID_ENV = "STATION_ENGINE_PARENT_PID"


def station_is_ancestor(station_pid: int) -> bool:
    """Whether ``station_pid`` is this process's parent, or its parent's parent: a unit's worker is started by
    the station (spawn) or forked by the station's fork server, the station's own child (forkserver)."""
    parent = os.getppid()
    if parent == station_pid:
        return True
    try:
        stat = Path(f"/proc/{parent}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (name) ": state, ppid, …
    return len(fields) > 1 and fields[1] == str(station_pid)


def disable_test_hooks() -> None:
    """Production mode: the test hook is ignored for the rest of this process, whatever the environment says."""
    _test_hooks["enabled"] = False


def crash_point(point: str) -> None:
    """Test hook: die here, without any cleanup, if the crash-safety tests asked for ``point``.

    In a unit's worker process the whole station dies, as in a power cut: the parent (which holds the
    audit log and the CA) first, then the worker itself.  Ignored in production mode
    (:func:`disable_test_hooks`, in the station and in every worker)."""
    if _test_hooks["enabled"] and os.environ.get(KILL_AT_ENV) == point:
        parent = os.environ.get(STATION_PID_ENV)
        if parent and parent.isdigit() and station_is_ancestor(int(parent)):
            os.kill(int(parent), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


class StepFailed(StationError):
    """A step found the board in a state it must not continue from; the message says what to do."""


class UnitRefused(StepFailed):
    """This board must not be enrolled under this serial; nothing was done to it and the unit ends aborted.

    Aborted, not failed: Retry could only repeat the refusal, and the serial stays free for its right board.
    """


class StepSkipped(Exception):  # noqa: N818 - an outcome, not an error
    """The step does not apply to this board (recorded as skipped, with the reason)."""


class UnitRecorder(Protocol):
    """What a unit writes to and reads from the audit log: the :class:`~station.audit.AuditLog` itself, or
    in a worker process the engine's proxy to the parent that owns it."""

    def pin_host_key(self, unit_id: int, *, key_type: str, fingerprint: str) -> None: ...

    def public_key_seen(self, spki_sha256: str) -> bool: ...

    def record_certificate(self, unit_id: int, *, certificate_pem: bytes) -> CertificateRecord: ...

    def certificate_for_unit(self, unit_id: int) -> CertificateRecord | None: ...

    def unit_work_order(self, unit_id: int) -> OrderStatus | None: ...

    def unit(self, unit_id: int) -> Unit: ...

    def record_soc_id(self, unit_id: int, *, soc_id: str, source: str) -> None: ...

    def unit_soc_id(self, unit_id: int) -> IdentityRecord | None: ...

    def identity_conflicts(
        self, unit_id: int, *, soc_id: str | None, host_key_fingerprint: str | None
    ) -> IdentityConflicts: ...

    def record_step(
        self,
        unit_id: int,
        *,
        step: str,
        attempt: int,
        outcome: str,
        started_at: datetime,
        ended_at: datetime,
        output_sha256: str | None = None,
        excerpt: str = "",
        message: str = "",
    ) -> None: ...

    def finish_unit(
        self, unit_id: int, *, result: str, failed_step: str | None = None, message: str | None = None
    ) -> Unit: ...


class FleetChecks(Protocol):
    """What a unit asks the fleet (station.fleet.guard.FleetGuard, or in a worker the engine's proxy to it)."""

    def check_unit(
        self, *, serial: str, unit_id: int, reprovision: bool, host_key: str | None
    ) -> GuardVerdict: ...

    def public_key_holder(self, spki_sha256: str) -> str | None: ...


@dataclass(frozen=True)
class UnitIssuance:
    """A device certificate issued to a unit and already recorded in the audit log."""

    certificate_pem: bytes
    serial_hex: str
    # The station CA's issuance quota after this certificate (None: the CA has no limit).
    quota: str | None = None


class UnitSigner(Protocol):
    """What a unit needs of the CA: :class:`StationSigner` (the CA and the audit log together), or its proxy in
    a worker process."""

    @property
    def certificate_pem(self) -> bytes: ...

    def issue_for_unit(
        self, *, unit_id: int, csr_pem: bytes, profile: DeviceProfile, serial: str
    ) -> UnitIssuance: ...


class StationSigner:
    """The station CA and its audit log, as the sign step needs them: a certificate is issued under the CA's lock
    together with the quota check and its audit record, so parallel units can neither overshoot the quota nor
    let a certificate leave the station unrecorded.  Lives where the CA key is (the engine's parent)."""

    def __init__(self, ca: CertificateAuthority, audit: AuditLog) -> None:
        self.ca = ca
        self.audit = audit

    @property
    def certificate_pem(self) -> bytes:
        return self.ca.certificate_pem

    def admit(self) -> None:
        """Before a unit touches its board: refuse it when the CA may not sign any more, and have the log sign
        unit endings and revocations with the CA's key from here on."""
        self.ca.quota(self.audit.certificates_issued_since).check()
        self.audit.attach_checkpoint_signer(
            CheckpointSigner.for_certificate(self.ca.certificate, self.ca.sign_bytes)
        )

    def issue_for_unit(
        self, *, unit_id: int, csr_pem: bytes, profile: DeviceProfile, serial: str
    ) -> UnitIssuance:
        request = x509.load_pem_x509_csr(csr_pem)
        settings = profile.settings
        records: list[CertificateRecord] = []
        soc_id = None
        if profile.identity.soc_id_in_certificate == "subject-serialNumber":
            # The SoC id the unit recorded at identify (board identity, issue 17), looked up here, where it is kept.
            recorded = self.audit.unit_soc_id(unit_id)
            if recorded is None:
                raise StepFailed(
                    f"the profile puts the SoC id in the certificate, but unit {unit_id} recorded none — press Retry "
                    "(identify reads it again); set the board aside if it happens again"
                )
            soc_id = recorded.soc_id
        # A CA without an issuance limit needs no count of the certificates it issued (a range scan of the
        # audit log under the CA's lock, twice per certificate, growing with the log).
        limited = self.ca.max_certificates is not None or self.ca.max_certificates_per_day is not None
        certificate = self.ca.issue_device_certificate(
            request,
            validity_days=profile.validity_days,
            subject=device_subject(settings["subject"], serial=profile.validate_serial(serial)),
            crl_url=settings.get("crl_url", ""),
            ca_issuers_url=settings.get("ca_issuers_url", ""),
            ocsp_url=settings.get("ocsp_url", ""),
            issued_since=self.audit.certificates_issued_since if limited else None,
            # Fail closed: the certificate is in the audit log, durably, before it can leave the station.
            record=lambda issued: records.append(
                self.audit.record_certificate(
                    unit_id, certificate_pem=issued.public_bytes(serialization.Encoding.PEM)
                )
            ),
            subject_serial_number=soc_id,
        )
        quota = self.ca.quota(self.audit.certificates_issued_since).describe() if limited else None
        return UnitIssuance(
            certificate.public_bytes(serialization.Encoding.PEM), records[0].serial_hex, quota
        )


class TlsProofServer(Protocol):
    """Where the TLS proof's listener runs (:class:`TlsProofListener`, or the engine's parent)."""

    def listen(self, host: str, timeout_s: float, port: int = 0) -> int: ...

    def result(self, port: int, timeout_s: float) -> tuple[bytes | None, list[str]]: ...


@dataclass
class UnitContext:
    """What the steps of one unit share: the board, its profile, the CA and the audit log."""

    serial: str
    profile: DeviceProfile
    link: DeviceLink
    ca: UnitSigner
    audit: UnitRecorder
    unit: Unit
    config: StationConfig
    masker: Masker
    output: Callable[[str], None]
    # The TLS proof's listener; None: one is made here from ``ca`` (which must then be the CA itself).
    tls: TlsProofServer | None = None
    # The fleet's checks ([fleet] configured); None: this process asks the fleet itself.
    fleet: FleetChecks | None = None
    csr_pem: bytes | None = None
    token_public_key_der: bytes | None = None
    certificate: x509.Certificate | None = None
    notes: list[str] = field(default_factory=list)
    # Where fixture definitions (the host-key inventory) are looked up; None: station.toml's only.
    home: StationHome | None = None
    soc_id: str | None = None
    host_key_in_inventory: bool = False
    attested: bool = False

    def run(self, name: str, deadline: Deadline, **extra: str) -> CommandResult:
        """Run the profile's command ``name`` for this board and show its (masked) output."""
        cmd = self.profile.command(name, serial=self.serial, **extra)
        self.output(f"$ {self.masker(cmd.render())}")
        result = self.link.run(cmd, deadline, max_output=self.config.limits.command_output_bytes)
        if result.output.strip():
            self.output(self.masker(result.output.rstrip()))
        return result


StepFunction = Callable[[UnitContext, Deadline], str]


@dataclass(frozen=True)
class StepSpec:
    name: str
    title: str
    run: StepFunction
    # Where a unit that failed in this step starts again on resume (steps whose work does not
    # survive a failure halfway, such as key generation, start from an earlier step).
    resume_from: str


# -- identify and guard -----------------------------------------------------------------------


def expected_subject(ctx: UnitContext) -> x509.Name:
    """The device certificate's subject: the profile's template and the scanned serial (never the CSR's)."""
    return device_subject(ctx.profile.settings["subject"], serial=ctx.profile.validate_serial(ctx.serial))


def identify(ctx: UnitContext, deadline: Deadline) -> str:
    ctx.link.open(deadline)
    key = ctx.link.host_key()
    lines = [_check_host_key(ctx, key)]
    ctx.output(lines[0])
    hostname = ctx.link.run(command("uname", "-n"), deadline).stdout.strip()
    found = ctx.link.run(command("command", "-v", *ctx.profile.tools), deadline, check=False).stdout
    missing = [
        tool for tool in ctx.profile.tools if not re.search(rf"(^|/){re.escape(tool)}\s*$", found, re.M)
    ]
    if missing:
        raise StepFailed(
            f"the board {hostname} lacks {', '.join(missing)} — it is not running an image with the tools "
            f"profile {ctx.profile.name} needs; flash the right image and press Retry"
        )
    module = ctx.profile.module
    if ctx.link.run(command("test", "-e", module), deadline, check=False).exit_status != 0:
        raise StepFailed(
            f"the board {hostname} has no PKCS#11 module at {module} (OP-TEE's PKCS#11 TA or libckteec is "
            'missing: "TA not found") — flash an image with secure storage enabled, then press Retry'
        )
    if "pkcs11-tool" in ctx.profile.tools:
        # The module file can be there while OP-TEE's PKCS#11 TA is not (or tee-supplicant is not
        # running): libckteec then fails at C_Initialize/C_OpenSession with "TA not found".
        slots = ctx.link.run(
            command("pkcs11-tool", "--module", module, "--list-slots"), deadline, check=False
        )
        if slots.exit_status != 0:
            # pkcs11-tool ends with "Aborting."; the line naming the failed call is the one that helps.
            said_lines = [line.strip() for line in slots.output.splitlines() if line.strip()]
            said = (
                [line for line in said_lines if "CKR_" in line or "error" in line.lower()][:1]
                or said_lines[-1:]
                or ["no output"]
            )
            raise StepFailed(
                f"the board {hostname} has {module}, but it cannot reach a PKCS#11 token (`pkcs11-tool "
                f"--list-slots` exited {slots.exit_status}: {said[0][:200]}) — OP-TEE's PKCS#11 TA is missing "
                '("TA not found") or tee-supplicant is not running; flash an image with the PKCS#11 TA, then press Retry'
            )
    lines.insert(0, f"hostname {hostname}; tools {', '.join(ctx.profile.tools)}; module {module}")
    lines.append(_read_soc_id(ctx, deadline))
    return "\n".join(lines)


def _check_host_key(ctx: UnitContext, key: tuple[str, str] | None) -> str:
    """Compare the host key the board showed with its fixture's inventory — before any command runs."""
    if key is None:
        return "no SSH host key on this link (serial console): the SoC id is the board's identity"
    settings_file = None
    if ctx.home is not None:
        from station.admin import load_settings  # the admin's fixtures file, as the window uses it

        try:
            settings_file = load_settings(ctx.home).fixtures_file
        except StationError:
            settings_file = None
    fixtures = known_fixtures(ctx.home.root if ctx.home else None, ctx.config, settings_file=settings_file)
    known = find_fixture(fixtures, name=ctx.unit.fixture, device=ctx.unit.device)
    fixture_name = known.fixture.name if known else (ctx.unit.fixture or ctx.unit.device)
    expected = known.fixture.host_key if known else None
    if expected is not None:
        if key[1] != expected:
            raise HostKeyMismatch(
                f"the board on fixture {fixture_name} answered with host key {key[0]} {key[1]}, but the fixture's "
                f"inventory ({known.file if known and known.file else known.origin if known else '?'}) holds "
                f"{expected} — {host_key_mismatch_advice(fixture_name)}"
            )
        ctx.host_key_in_inventory = True
        return f"{Basis.VERIFIED}: host key {key[1]} is the one fixture {fixture_name}'s inventory holds"
    if ctx.config.identity.first_contact == "require-inventory":
        raise HostKeyMismatch(
            f"fixture {fixture_name} has no host key in the inventory and this station requires one "
            f'(first_contact = "require-inventory"); the board answered with {key[0]} {key[1]} — nothing was '
            f"run on it. An administrator checks the key on the board's console (ssh-keygen -lf "
            f"/etc/ssh/ssh_host_ed25519_key.pub) and runs `station fixtures pin {fixture_name}`; until then, "
            "set the board aside"
        )
    return (
        f"host key {key[1]} is not in an inventory (fixture {fixture_name}): pinned for this unit only "
        '(first_contact = "pin-per-unit")'
    )


def _read_soc_id(ctx: UnitContext, deadline: Deadline) -> str:
    earlier = ctx.audit.unit_soc_id(ctx.unit.id)
    try:
        soc = read_soc_id(ctx.link, ctx.profile.identity, deadline)
    except SocIdUnreadable as exc:
        raise StepFailed(str(exc)) from None
    if soc is None:
        ctx.output("SoC unique id: none (the profile does not require one)")
        return "SoC unique id: none (not required by the profile)"
    if earlier is not None and earlier.soc_id != soc.value:
        # A resumed unit must continue on the board it started on.
        raise StepFailed(
            f"this is not the board unit {ctx.unit.id} started on: its SoC id was {earlier.soc_id}, the board on "
            f"the fixture now has {soc.value} — put the unit's board back on the fixture and press Retry, or set "
            "this board aside"
        )
    ctx.audit.record_soc_id(ctx.unit.id, soc_id=soc.value, source=soc.source)
    ctx.soc_id = soc.value
    ctx.output(f"SoC unique id {soc.value} ({Basis.REPORTED}, read from {soc.source})")
    return f"SoC unique id {soc.value} ({Basis.REPORTED}, read from {soc.source})"


def _set_aside(previous_serial: str) -> str:
    return (
        "set the board aside with its label and call the quality lead; scan the next board. "
        f"If the label is wrong, the board stays {previous_serial}; enrolling it under a new serial needs a "
        "re-provision with a reason (station provision … --reprovision --reason)"
    )


def _identity_guard(ctx: UnitContext) -> list[str]:
    """The same board under another label, or this label on another board: refused unless re-provisioned."""
    reason = ctx.unit.reprovision_reason
    lines: list[str] = []
    key = ctx.link.host_key()
    # One question to the audit log (in a worker, to the station over its pipe), about this unit's own serial.
    conflicts = ctx.audit.identity_conflicts(
        ctx.unit.id, soc_id=ctx.soc_id, host_key_fingerprint=key[1] if key is not None else None
    )
    if ctx.soc_id:
        for other in conflicts.same_soc_other_serial[:1]:
            found = (
                f"this board (SoC id {ctx.soc_id}) is already enrolled as serial {other.serial} "
                f"(unit {other.id}, {when(other)}), but its label was scanned as {ctx.serial}"
            )
            if not reason:
                raise UnitRefused(f"{found} — {_set_aside(other.serial)}")
            lines.append(f"{found}; accepted: re-provisioned with reason {reason!r}")
        for other, other_soc_id in conflicts.same_serial_other_soc[:1]:
            found = (
                f"serial {ctx.serial} is already enrolled on another board (SoC id "
                f"{other_soc_id or '?'}, unit {other.id}, {when(other)}); this board's SoC id is "
                f"{ctx.soc_id}"
            )
            if not reason:
                raise UnitRefused(f"{found} — two boards carry the same label: {_set_aside(ctx.serial)}")
            lines.append(f"{found}; accepted: re-provisioned with reason {reason!r}")
        lines.append(f"{Basis.VERIFIED}: SoC id {ctx.soc_id} is enrolled under no other serial")
    if key is not None:
        for other in conflicts.same_host_key_other_serial[:1]:
            found = (
                f"this board's host key {key[1]} belongs to serial {other.serial} (unit {other.id}, "
                f"{when(other)}), but its label was scanned as {ctx.serial} — a swapped label"
            )
            if not reason:
                raise UnitRefused(f"{found} — {_set_aside(other.serial)}")
            lines.append(f"{found}; accepted: re-provisioned with reason {reason!r}")
    return lines


def guard(ctx: UnitContext, deadline: Deadline) -> str:
    """Refuse a board that is not this serial's: its SoC id or host key belongs to another serial's enrolled
    unit, this serial was enrolled on another SoC, or the board carries another serial's certificate."""
    lines = [f"serial {ctx.serial} matches {ctx.profile.serial_pattern.pattern}"]
    lines += work_order_check(ctx)
    if ctx.unit.reprovision_reason:
        lines.append(f"re-provisioning asked for: {ctx.unit.reprovision_reason}")
    lines += _identity_guard(ctx)
    path = ctx.profile.cert_path
    status = ctx.link.run(command("test", "-s", path), deadline, check=False).exit_status
    if status not in (0, 1):
        # 1 is "no such (non-empty) file"; anything else is an error, and a board that cannot be
        # looked at must not be wiped on the assumption that it holds nothing.
        raise StepFailed(
            f"the board could not tell whether it holds a device certificate (`test -s {path}` exited {status}) "
            "— its storage may be failing; press Retry, and set the board aside if it happens again"
        )
    if status == 0:
        try:
            existing = x509.load_pem_x509_certificate(ctx.link.get(path, deadline))
            # The serialNumber attribute is the SoC id the station adds itself (profile [identity]).
            subject = x509.Name(
                [rdn for rdn in existing.subject.rdns if all(a.oid != NameOID.SERIAL_NUMBER for a in rdn)]
            ).rfc4514_string()
        except ValueError:
            subject = "(unreadable)"
        expected = expected_subject(ctx).rfc4514_string()
        if subject != expected and not ctx.unit.reprovision_reason:
            raise UnitRefused(
                f"this board already holds a device certificate for {subject}, but the scanned serial is "
                f"{ctx.serial} — check the label matches the board: {_set_aside(subject)}"
            )
        lines.append(f"board already holds a certificate for {subject}; it will be replaced")
    # The board is accepted for this serial: from here on it must keep showing this key.  (Pinned only
    # now, so a refused board leaves nothing that a later unit of this serial would inherit.)
    key = ctx.link.host_key()
    if key is not None:
        ctx.audit.pin_host_key(ctx.unit.id, key_type=key[0], fingerprint=key[1])
        crash_point("host_key_pinned")
        ctx.output(f"host key {key[0]} {key[1]} pinned for this unit")
    # The fleet (other stations) is asked last, with the host key this unit has just pinned.
    if ctx.config.fleet is not None:
        lines.append(_fleet_guard(ctx))
    return "\n".join(lines)


def work_order_check(ctx: UnitContext) -> list[str]:
    """The unit's work order (its place was taken when the unit started): still open on a resumed attempt?"""
    status = ctx.audit.unit_work_order(ctx.unit.id)
    if status is None:
        return [
            "no work order required"
            if not ctx.config.orders_required
            else "no work order (unit started before orders were required)"
        ]
    order_id = status.order_id
    if status.state == "closed":
        raise StepFailed(
            f"work order {order_id} was closed ({status.close_reason or 'no reason given'}) while this board was "
            "unfinished: it is not enrolled — set the board aside and abort its unit (station provision --restart "
            "refuses it too)"
        )
    return [f"work order {order_id}: {status.progress_text()}"]


def _fleet(ctx: UnitContext) -> FleetChecks:
    """The fleet's checks: in a unit's worker the engine's proxy (the station's process asks the fleet over its
    one connection), in-process this process's own guard."""
    if ctx.fleet is not None:
        return ctx.fleet
    from station.fleet.guard import fleet_guard

    assert ctx.config.fleet is not None
    return fleet_guard(ctx.config.fleet)


def _fleet_guard(ctx: UnitContext) -> str:
    """Ask the fleet (other stations) before the board is touched; see station.fleet.guard."""
    from station.fleet.guard import FleetRefusal

    unit = ctx.audit.unit(ctx.unit.id)
    try:
        verdict = _fleet(ctx).check_unit(
            serial=ctx.serial,
            unit_id=unit.id,
            reprovision=bool(unit.reprovision_reason),
            host_key=unit.host_key_fingerprint,
        )
    except FleetRefusal as exc:
        raise StepFailed(str(exc)) from None
    ctx.output(verdict.text)
    return verdict.text


def _fleet_public_key_holder(ctx: UnitContext, token_key_der: bytes) -> None:
    from station.fleet.guard import FleetRefusal

    spki = hashlib.sha256(token_key_der).hexdigest()
    try:
        holder = _fleet(ctx).public_key_holder(spki)
    except FleetRefusal as exc:
        raise StepFailed(str(exc)) from None
    if holder is not None:
        raise StepFailed(
            f"the token's public key was already certified in the fleet for {holder} — a key must never be "
            "certified twice (a cloned token?); set the board aside and tell quality assurance"
        )


# -- secure storage on the board -----------------------------------------------------------


def wipe(ctx: UnitContext, deadline: Deadline) -> str:
    # On SoftHSM the tutorial's find/rm prints "Is a directory" for token directories and still
    # exits 0; OP-TEE's flat store prints nothing.  Only the exit status counts.
    return ctx.run("wipe", deadline).output


def _boot_id(ctx: UnitContext, deadline: Deadline) -> str:
    result = ctx.link.run(command("cat", BOOT_ID_PATH), deadline, check=False)
    return result.stdout.strip() if result.exit_status == 0 else ""


def reboot(ctx: UnitContext, deadline: Deadline) -> str:
    before = _boot_id(ctx, deadline)
    ctx.output("$ reboot")
    ctx.link.reboot(deadline)
    after = _boot_id(ctx, deadline)
    if before and after == before:
        # The connection dropped and came back, but the board never restarted: the wiped secure
        # storage would not be re-read.
        raise StepFailed(
            f"the board answered again after `reboot` but did not restart (boot id {before} unchanged) — "
            "power-cycle it and press Retry"
        )
    ctx.output("board is back")
    return f"rebooted and reconnected (boot id {before or 'unknown'} -> {after or 'unknown'})"


def init_token(ctx: UnitContext, deadline: Deadline) -> str:
    return ctx.run("init_token", deadline).output


def init_pin(ctx: UnitContext, deadline: Deadline) -> str:
    return ctx.run("init_pin", deadline).output


_ACCESS = re.compile(r"Access:\s*(.+)")


def keygen(ctx: UnitContext, deadline: Deadline) -> str:
    generated = ctx.run("keygen", deadline).output
    listing = ctx.run("list_private_key", deadline).output
    label = ctx.profile.key_label
    blocks = [
        block for block in re.split(r"(?=Private Key Object)", listing) if "Private Key Object" in block
    ]
    ours = [block for block in blocks if re.search(rf"label:\s*{re.escape(label)}\s*$", block, re.M)]
    if len(ours) != 1:
        raise StepFailed(
            f"the token holds {len(ours)} private keys labelled {label} after key generation (expected 1) — "
            "press Retry to re-initialise the token and generate the key again"
        )
    access = _ACCESS.search(ours[0])
    flags = {flag.strip() for flag in access.group(1).split(",")} if access else set()
    needed = {"sensitive", "always sensitive", "never extractable", "local"}
    if not needed <= flags:
        raise StepFailed(
            f"the private key {label} is not protected as it must be (Access: {', '.join(sorted(flags)) or 'none'}; "
            f"needed: {', '.join(sorted(needed))}) — this secure storage cannot be trusted; set the board aside"
        )
    # The station cannot look inside the token: these flags are what the board prints (README "What the
    # station can and cannot prove"); only an attestation ([attestation] in the profile) would prove them.
    return f"{Basis.REPORTED}: key flags {', '.join(sorted(flags))}\n{generated}\n{listing}"


def csr(ctx: UnitContext, deadline: Deadline) -> str:
    # openssl prints 'Engine "pkcs11" set.' on stderr: stderr text is not a failure.
    return ctx.run("csr", deadline).output


def fetch_csr(ctx: UnitContext, deadline: Deadline) -> str:
    # Both reads are capped (station.toml [limits] file_bytes): a CSR path that is a symlink to
    # /dev/zero fails the unit with "the board sent more than …", it is not read for ever.
    cap = ctx.config.limits.file_bytes
    ctx.csr_pem = ctx.link.get(ctx.profile.csr_path, deadline, max_bytes=cap)
    ctx.run("read_public_key", deadline)
    ctx.token_public_key_der = ctx.link.get(ctx.profile.pubkey_path, deadline, max_bytes=cap)
    ctx.output(ctx.csr_pem.decode("ascii", "replace").rstrip())
    return ctx.csr_pem.decode("ascii", "replace") + hashlib.sha256(ctx.token_public_key_der).hexdigest()


def check_csr_step(ctx: UnitContext, deadline: Deadline) -> str:
    if ctx.csr_pem is None or ctx.token_public_key_der is None:
        raise StepFailed("no CSR was fetched from the board — press Retry")
    try:
        token_key = serialization.load_der_public_key(ctx.token_public_key_der)
    except ValueError as exc:
        raise StepFailed(
            "the token's public key read back from the board is not a valid key — press Retry to generate it again"
        ) from exc
    if ctx.config.fleet is not None:
        _fleet_public_key_holder(
            ctx,
            token_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    request = check_csr(
        ctx.csr_pem,
        expected_subject=expected_subject(ctx),
        policy=CsrPolicy.for_key_type(ctx.profile.key_type),
        token_public_key=token_key,
        public_key_seen=ctx.audit.public_key_seen,
    )
    lines = [
        f"{Basis.VERIFIED}: CSR signature, subject {request.subject.rfc4514_string()}, key never certified before, "
        f"key equal to the token's key {ctx.profile.key_label}",
        _attest(ctx, token_key, deadline),
    ]
    ctx.output(lines[-1])
    return "\n".join(lines)


def _attest(ctx: UnitContext, token_key: object, deadline: Deadline) -> str:
    """Verify the board's key attestation when the profile declares one; otherwise say what stays unproven."""
    settings = ctx.profile.attestation
    if settings.format == "none":
        return (
            f"{Basis.REPORTED}: the token's public key and its flags (no attestation: profile "
            f"{ctx.profile.name} declares none)"
        )
    statement = ctx.link.run(ShellCommand(settings.command), deadline).stdout
    spki = token_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        proved = verify_x509_chain(
            statement.encode("utf-8", "replace"),
            vendor_root=load_vendor_root(settings.vendor_root),
            token_public_key_der=spki,
        )
    except AttestationFailed as exc:
        raise UnitRefused(
            f"{exc} — nothing was signed; set the board aside and call the quality lead"
        ) from None
    ctx.attested = True
    return f"{Basis.VERIFIED}: {proved}"


def sign(ctx: UnitContext, deadline: Deadline) -> str:
    assert ctx.csr_pem is not None
    in_subject = ctx.profile.identity.soc_id_in_certificate == "subject-serialNumber"
    if in_subject and not ctx.soc_id:
        raise StepFailed(
            "the profile puts the SoC id in the certificate, but none was read from this board — press Retry "
            "(identify reads it again); set the board aside if it happens again"
        )
    # The station adds the SoC id this unit recorded at identify (StationSigner), never one the worker names.
    issuance = ctx.ca.issue_for_unit(
        unit_id=ctx.unit.id, csr_pem=ctx.csr_pem, profile=ctx.profile, serial=ctx.serial
    )
    crash_point("certificate_recorded")
    certificate = x509.load_pem_x509_certificate(issuance.certificate_pem)
    ctx.certificate = certificate
    ctx.output(f"issued certificate serial {issuance.serial_hex} for {certificate.subject.rfc4514_string()}")
    pem = issuance.certificate_pem.decode("ascii")
    if issuance.quota is not None:
        ctx.output(f"station CA quota: {issuance.quota}")
        return f"station CA quota: {issuance.quota}\n{pem}"
    return pem


def _issued_certificate(ctx: UnitContext) -> x509.Certificate:
    if ctx.certificate is None:
        record = ctx.audit.certificate_for_unit(ctx.unit.id)
        if record is None:
            raise StepFailed("no certificate was issued for this unit yet — press Retry")
        ctx.certificate = x509.load_pem_x509_certificate(record.pem.encode("ascii"))
    return ctx.certificate


def push(ctx: UnitContext, deadline: Deadline) -> str:
    device_pem = _issued_certificate(ctx).public_bytes(serialization.Encoding.PEM)
    ca_pem = ctx.ca.certificate_pem
    ctx.link.put(device_pem, ctx.profile.cert_path, deadline)
    crash_point("device_certificate_pushed")
    ctx.link.put(ca_pem, ctx.profile.ca_cert_path, deadline)
    readback = ctx.link.run(
        command("sha256sum", ctx.profile.cert_path, ctx.profile.ca_cert_path), deadline
    ).stdout
    expected = {
        ctx.profile.cert_path: hashlib.sha256(device_pem).hexdigest(),
        ctx.profile.ca_cert_path: hashlib.sha256(ca_pem).hexdigest(),
    }
    seen: dict[str, str] = {}
    for line in readback.strip().splitlines():
        digest, _, path = line.partition("  ")
        seen[path.strip()] = digest.strip()
    for path, digest in expected.items():
        if seen.get(path) != digest:
            raise StepFailed(
                f"{path} on the board does not read back as written (sha256 {seen.get(path, 'missing')}) — "
                "the board's storage may be failing; press Retry, and set the board aside if it happens again"
            )
        ctx.output(f"{path}: sha256 {digest} verified")
    return f"{Basis.VERIFIED}: certificates read back with the digests written\n{readback}"


def tls_proof(ctx: UnitContext, deadline: Deadline) -> str:
    """The tutorial's step 5: the board connects with its token key; we check it shows our certificate."""
    if not ctx.profile.device_has_network:
        raise StepSkipped(
            "skipped (serial only): the profile says this board has no network path to the station"
        )
    issued = _issued_certificate(ctx)
    host = ctx.config.tls_listen_address or ctx.link.local_address() or "127.0.0.1"
    # The board may reach us under another address (NAT, QEMU's 10.0.2.100): [tls_proof] dial_address.
    dial = ctx.config.tls_dial_address or host
    if ctx.tls is not None:
        listener = ctx.tls
    elif isinstance(ctx.ca, CertificateAuthority | StationSigner):
        # In one process (Provisioner.provision): the station's own CA, wrapped by run_admitted in a StationSigner.
        listener = TlsProofListener(ctx.ca if isinstance(ctx.ca, CertificateAuthority) else ctx.ca.ca)
    else:
        raise StepFailed("the station has no TLS listener for the proof — report this; press Retry")
    port = _listen(listener, host, ctx.config.tls_port, deadline)
    client_failed = True
    try:
        result = ctx.link.run(
            ctx.profile.command("tls_client", serial=ctx.serial, server=f"{dial}:{port}"),
            deadline,
            check=False,
        )
        client_failed = result.exit_status != 0
    finally:
        # A client that failed will not connect any more: do not wait for it.
        presented, failure = listener.result(
            port, 0.0 if client_failed else deadline.cap(TLS_ACCEPT_TIMEOUT_S)
        )
    tail = ctx.masker(result.output)
    ctx.output(tail.rstrip()[-2000:])
    issued_der = issued.public_bytes(serialization.Encoding.DER)
    if client_failed or failure or presented is None:
        last = [line for line in tail.splitlines() if line.strip()][-1:] or ["no output"]
        # The board's own words first: they say why it did not connect.
        reason = (
            f"openssl s_client exited {result.exit_status}: {last[0][:200]}"
            if client_failed
            else "; ".join(failure) or "the board presented no certificate"
        )
        raise StepFailed(
            f"the board could not prove its identity over mutual TLS ({reason}) — check the board reaches "
            f"{dial}:{port} (station.toml [tls_proof] dial_address, port), then press Retry"
        )
    if presented != issued_der:
        raise StepFailed(
            "the board presented a certificate other than the one just issued — the certificate on the "
            "board is not ours; press Retry to push it again"
        )
    return (
        f"{Basis.VERIFIED}: the board holds the certified key — mutual TLS with {host}:{port} (dialled as "
        f"{dial}:{port}), it presented certificate {issued.serial_number:x}\n{tail}"
    )


def _listen(listener: TlsProofServer, host: str, port: int, deadline: Deadline) -> int:
    """The proof's port; a fixed one ([tls_proof] port) is shared by units one at a time."""
    while True:
        try:
            return listener.listen(host, deadline.cap(TLS_ACCEPT_TIMEOUT_S), port=port)
        except StationError as exc:
            if not str(exc).startswith(TLS_PORT_BUSY):
                raise StepFailed(str(exc)) from exc
            if deadline.remaining() < TLS_PORT_WAIT_S:
                raise StepFailed(
                    f"the TLS-proof port {host}:{port} stayed in use (another unit or program holds it) — "
                    "press Retry, or choose another [tls_proof] port in station.toml"
                ) from exc
            time.sleep(TLS_PORT_WAIT_S)


STEPS: dict[str, StepSpec] = {
    spec.name: spec
    for spec in (
        StepSpec("identify", "Identify board", identify, "identify"),
        StepSpec("guard", "Check serial", guard, "identify"),
        StepSpec("wipe", "Wipe secure storage", wipe, "wipe"),
        StepSpec("reboot", "Reboot", reboot, "reboot"),
        StepSpec("init_token", "Initialise token", init_token, "init_token"),
        # A user PIN that cannot be set may mean a token that was never initialised (init_token
        # said yes without doing it): start again from the token, which is cheap and harmless here.
        StepSpec("init_pin", "Set user PIN", init_pin, "init_token"),
        # A key generation cut off halfway may leave a half-made object: start again from a fresh token.
        StepSpec("keygen", "Generate key", keygen, "init_token"),
        StepSpec("csr", "Create CSR", csr, "csr"),
        # /tmp does not survive a reboot, and the checks need the CSR in hand: fetch it again.
        StepSpec("fetch_csr", "Fetch CSR", fetch_csr, "csr"),
        StepSpec("check_csr", "Check CSR", check_csr_step, "csr"),
        StepSpec("sign", "Sign certificate", sign, "csr"),
        # A unit that fails after signing has its certificate revoked as it ends (AuditLog.finish_unit): a
        # resume makes a new key and certificate instead of pushing a revoked one.
        StepSpec("push", "Push certificates", push, "init_token"),
        StepSpec("tls_proof", "Mutual TLS proof", tls_proof, "init_token"),
    )
}
