"""What the enrollment steps share: their outcomes (failed, refused, skipped), the protocols a unit talks to
(audit log, CA, fleet, TLS listener — in a worker process, proxies to the parent), the unit's context and a
step's spec, and :class:`StationSigner`, the CA side of the sign step.  Moved out of :mod:`station.steps`,
which re-exports every name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from station.audit import CertificateRecord, Unit
from station.audit.checkpoints import CheckpointSigner
from station.config import StationConfig
from station.errors import StationError
from station.home import StationHome
from station.identity_log import IdentityConflicts, IdentityRecord
from station.masking import Masker
from station.orders import OrderStatus
from station.pki import CertificateAuthority, device_subject
from station.profiles import DeviceProfile
from station.transport import CommandResult, Deadline, DeviceLink

if TYPE_CHECKING:
    from station.audit import AuditLog
    from station.fleet.guard import GuardVerdict


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
