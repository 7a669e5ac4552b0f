"""The audit log itself: :class:`AuditLog`, its writes (units, steps, certificates, revocations, label prints),
composed with the reads, statistics, integrity checks, exports and fleet forwarding of the modules beside it."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from station.audit.core import AuditCore
from station.audit.export import Exports
from station.audit.fleet import FleetForwarding
from station.audit.orders import (
    PlaceTaker,
    SqliteOrderBook,
    claim_place,
    release_place,
)
from station.audit.queries import UnitQueries
from station.audit.records import (
    STEP_OUTCOMES,
    SUPERSEDED_REASON,
    UNIT_ENDED_REASON,
    UNIT_RESULTS,
    CertificateRecord,
    LabelPrint,
    PublicKeyReused,
    SerialAlreadyPassed,
    Unit,
    UnitAlreadyActive,
    _certificate_from_row,
    _label_print_from_row,
    _local_text,
    _timestamp,
)
from station.audit.schema import _insert
from station.audit.stats import YieldStats
from station.audit.verify import Integrity
from station.errors import StationError
from station.orders import OrderStatus
from station.states import RESUMABLE_UNIT_STATES, UnitState

if TYPE_CHECKING:
    # Imported where a connection is made: a unit's worker process uses this module's records, not SQLite.
    import sqlite_utils

    from station.identity_log import IdentityConflicts, IdentityRecord


class AuditLog(UnitQueries, YieldStats, Integrity, Exports, FleetForwarding, AuditCore):
    """The station's audit database: units, their steps, certificates, and the hash-chained event journal.

    Every public method is safe to call from several threads at once.
    """

    @property
    def orders(self) -> SqliteOrderBook:
        """The work orders recorded in this log (station.orders)."""
        return SqliteOrderBook(self)

    def unit_work_order(self, unit_id: int) -> OrderStatus | None:
        """The work order a unit holds a place in, as it stands now (None: the unit is in no order)."""
        book = self.orders
        order_id = book.order_of_unit(unit_id)
        return None if order_id is None else book.status(order_id)

    # -- board identity (station/identity_log.py): what a unit's steps ask, also from a worker ----------

    def record_soc_id(self, unit_id: int, *, soc_id: str, source: str) -> None:
        """Record the SoC unique id unit ``unit_id`` read from its board (once per distinct id)."""
        from station.identity_log import IdentityLog

        IdentityLog(self).record_soc_id(unit_id, soc_id=soc_id, source=source)

    def unit_soc_id(self, unit_id: int) -> IdentityRecord | None:
        """The SoC id unit ``unit_id`` last recorded (None: none yet)."""
        from station.identity_log import IdentityLog

        return IdentityLog(self).soc_id_of(unit_id)

    def identity_conflicts(
        self, unit_id: int, *, soc_id: str | None, host_key_fingerprint: str | None
    ) -> IdentityConflicts:
        """Other enrolments that unit ``unit_id``'s board (SoC id, host key) or serial clash with."""
        from station.identity_log import IdentityLog

        return IdentityLog(self).conflicts(unit_id, soc_id=soc_id, host_key_fingerprint=host_key_fingerprint)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------- units

    # long: one transaction (supersede, insert, journal, claim the order place); its commit boundary reads in one place
    def start_unit(
        self,
        *,
        serial: str,
        profile: str,
        device: str,
        operator: str,
        station: str,
        fixture: str | None = None,
        batch: str | None = None,
        reprovision_reason: str | None = None,
        order: str | None = None,
        orders_required: bool = False,
        take_place: PlaceTaker | None = None,
    ) -> Unit:
        """Record that provisioning of board ``serial`` starts now; return the new running unit.

        Refused with :class:`SerialAlreadyPassed` when the board already passed and no reprovision reason is
        given, and with :class:`UnitAlreadyActive` while the board has a running or failed unit. With a
        reason, the passed unit becomes 'superseded' by the new one in the same transaction.

        The unit takes a place in its work order (``order``, or the open order holding the serial) in the same
        transaction; :class:`station.orders.OrderRefused` (nothing recorded) when it may not — no open order
        holds the serial while ``orders_required``, the order is closed, complete or for another profile.
        ``take_place`` (with ``[fleet]``: station.fleet.orders) takes the place in the fleet too, inside the same
        transaction — refused there, nothing is recorded here either.
        """
        for name, value in (
            ("serial", serial),
            ("profile", profile),
            ("device", device),
            ("operator", operator),
            ("station", station),
        ):
            if not value or not value.strip():
                raise ValueError(f"start_unit needs a non-empty {name}")
        reason = reprovision_reason.strip() if reprovision_reason else None
        try:
            with self._change() as db:
                at = self._now_text()
                superseded: int | None = None
                if reason:
                    row = db.execute(
                        "SELECT id FROM units WHERE serial = ? AND state = ?",
                        [serial, UnitState.PASSED.value],
                    ).fetchone()
                    if row is not None:
                        superseded = int(row[0])
                        # Leaves the current-unit index first, so the new unit can take its place.
                        db.table("units").update(superseded, {"state": UnitState.SUPERSEDED.value})
                unit_id = _insert(
                    db,
                    "units",
                    {
                        "serial": serial,
                        "profile": profile,
                        "device": device,
                        "fixture": fixture,
                        "batch": batch,
                        "operator": operator,
                        "station": station,
                        "state": UnitState.RUNNING.value,
                        "attempt": 1,
                        "started_at": at,
                        "reprovision_reason": reason or None,
                    },
                )
                if superseded is not None:
                    db.table("units").update(superseded, {"superseded_by": unit_id})
                    self._append_event(db, at=at, kind="unit.superseded", table="units", pk=superseded)
                    release_place(db, unit_id=superseded, at=at, journal=self._append_event)
                self._append_event(db, at=at, kind="unit.started", table="units", pk=unit_id)
                claim_place(
                    db,
                    unit_id=unit_id,
                    serial=serial,
                    profile=profile,
                    order_id=order,
                    required=orders_required,
                    at=at,
                    journal=self._append_event,
                    central=take_place,
                    reprovision=reason is not None,
                )
                return self._unit(db, unit_id)
        except sqlite3.IntegrityError as exc:
            if "units.serial" not in str(exc):
                raise
            current = self.find_unit(serial)
            if current is not None and current.state == UnitState.PASSED:
                raise SerialAlreadyPassed(current) from None
            raise UnitAlreadyActive(serial, current) from None

    def resume_unit(self, unit_id: int) -> Unit:
        """Continue a failed unit (or one left 'running' by a crash): running again, attempt + 1."""
        with self._change() as db:
            unit = self._unit(db, unit_id)
            if unit.state not in RESUMABLE_UNIT_STATES:
                raise StationError(
                    f"Unit {unit_id} (board {unit.serial}) is {unit.state} and cannot be resumed — only a failed "
                    f"or interrupted unit can. Start a new unit for the board instead."
                )
            db.table("units").update(
                unit_id,
                {
                    "state": UnitState.RUNNING.value,
                    "attempt": unit.attempt + 1,
                    "ended_at": None,
                    "failed_step": None,
                    "message": None,
                },
            )
            self._append_event(db, at=self._now_text(), kind="unit.resumed", table="units", pk=unit_id)
            return self._unit(db, unit_id)

    def finish_unit(
        self,
        unit_id: int,
        *,
        result: str,
        failed_step: str | None = None,
        message: str | None = None,
        revocation_reason: str | None = None,
    ) -> Unit:
        """End a unit as passed, failed or aborted.

        A running unit can end any way; a failed unit can only be aborted (the board is given up or will be
        started over).  A unit ending failed or aborted has its certificates revoked in the same transaction
        (``revocation_reason``, else ``cessationOfOperation``): whichever executor ends the unit, a board set
        aside keeps no valid identity.  Resuming it makes a new key and certificate.
        """
        if result not in UNIT_RESULTS:
            raise ValueError(f"result must be one of {', '.join(UNIT_RESULTS)}, not {result!r}")
        if result == UnitState.PASSED and failed_step is not None:
            raise ValueError("a passed unit has no failed step")
        with self._change() as db:
            unit = self._unit(db, unit_id)
            allowed = (
                UNIT_RESULTS
                if unit.state == UnitState.RUNNING
                else (UnitState.ABORTED,)
                if unit.state == UnitState.FAILED
                else ()
            )
            if result not in allowed:
                raise StationError(
                    f"Unit {unit_id} (board {unit.serial}) is {unit.state}; it cannot be marked {result}."
                    + (" Resume it first." if unit.state == UnitState.FAILED else "")
                )
            at = self._now_text()
            db.table("units").update(
                unit_id, {"state": result, "ended_at": at, "failed_step": failed_step, "message": message}
            )
            self._append_event(db, at=at, kind=f"unit.{result}", table="units", pk=unit_id)
            if result == UnitState.ABORTED:
                release_place(db, unit_id=unit_id, at=at, journal=self._append_event)
            if result != UnitState.PASSED:
                # Same transaction: a board the line set aside never holds a certificate that is still valid.
                self._revoke_unit_certificates(
                    db,
                    unit,
                    at=at,
                    reason=revocation_reason or UNIT_ENDED_REASON,
                    by=f"station (unit {result})",
                )
            return self._unit(db, unit_id)

    def _revoke_unit_certificates(
        self, db: sqlite_utils.Database, unit: Unit, *, at: str, reason: str, by: str
    ) -> None:
        """Revoke every still-valid certificate issued to ``unit`` (it ended failed or aborted)."""
        rows = db.execute(
            "SELECT id FROM certificates WHERE unit_id = ? AND revoked_at IS NULL ORDER BY id", [unit.id]
        ).fetchall()
        for (cert_id,) in rows:
            db.table("certificates").update(
                cert_id, {"revoked_at": at, "revocation_reason": reason, "revoked_by": by}
            )
            self._append_event(db, at=at, kind="certificate.revoked", table="certificates", pk=int(cert_id))

    def pin_host_key(self, unit_id: int, *, key_type: str, fingerprint: str) -> None:
        """Remember the SSH host key the device showed; a different key later in the same unit is refused."""
        if not key_type or not fingerprint:
            raise ValueError("pin_host_key needs a key type and a fingerprint")
        with self._change() as db:
            unit = self._unit(db, unit_id)
            if unit.host_key_fingerprint is not None:
                if (unit.host_key_type, unit.host_key_fingerprint) == (key_type, fingerprint):
                    return
                raise StationError(
                    f"The device of unit {unit_id} (board {unit.serial}) now shows host key {key_type} "
                    f"{fingerprint}, but {unit.host_key_type} {unit.host_key_fingerprint} was pinned earlier in "
                    f"this unit. Another machine may be answering at its address — stop, check the fixture "
                    f"cabling and network, then resume."
                )
            if unit.state != UnitState.RUNNING:
                raise StationError(f"Unit {unit_id} is {unit.state}; host keys are pinned while a unit runs.")
            db.table("units").update(
                unit_id, {"host_key_type": key_type, "host_key_fingerprint": fingerprint}
            )
            self._append_event(
                db, at=self._now_text(), kind="unit.host_key_pinned", table="units", pk=unit_id
            )

    # ----------------------------------------------------------------------------------------- steps

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
    ) -> None:
        """Record one outcome of one step. ``excerpt`` is stored as given: mask secrets before calling."""
        if outcome not in STEP_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(STEP_OUTCOMES)}, not {outcome!r}")
        if not step:
            raise ValueError("record_step needs a step name")
        row = {
            "unit_id": unit_id,
            "step": step,
            "attempt": attempt,
            "outcome": outcome,
            "started_at": _timestamp(started_at),
            "ended_at": _timestamp(ended_at),
            "output_sha256": output_sha256,
            "excerpt": excerpt,
            "message": message,
        }
        with self._change() as db:
            self._require_unit(db, unit_id)
            step_id = _insert(db, "steps", row)
            self._append_event(db, at=self._now_text(), kind="step.recorded", table="steps", pk=step_id)

    # ---------------------------------------------------------------------------------- certificates

    def record_certificate(self, unit_id: int, *, certificate_pem: bytes) -> CertificateRecord:
        """Record a certificate issued to a running unit; it is on disk (fsync'd) when this returns.

        The caller pushes the certificate to the device only afterwards, so no certificate is ever in the
        field without a record. A public key that already has a certificate raises :class:`PublicKeyReused`.
        """
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        spki_sha256 = hashlib.sha256(spki).hexdigest()
        row = {
            "unit_id": unit_id,
            # Hex text: certificate serials are up to 159 bits, beyond SQLite's 64-bit integers.
            "serial_hex": format(certificate.serial_number, "x"),
            "fingerprint_sha256": certificate.fingerprint(hashes.SHA256()).hex(),
            "spki_sha256": spki_sha256,
            "subject": certificate.subject.rfc4514_string(),
            "not_before": _timestamp(certificate.not_valid_before_utc),
            "not_after": _timestamp(certificate.not_valid_after_utc),
            # Re-encoded: only the certificate is kept, whatever else the PEM text held.
            "pem": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        }
        try:
            with self._change() as db:
                unit = self._unit(db, unit_id)
                if unit.state != UnitState.RUNNING:
                    raise StationError(
                        f"Unit {unit_id} (board {unit.serial}) is {unit.state}; certificates are issued only to a "
                        f"running unit. Nothing was recorded — do not push this certificate."
                    )
                at = self._now_text()
                cert_id = _insert(db, "certificates", {**row, "issued_at": at})
                self._append_event(db, at=at, kind="certificate.issued", table="certificates", pk=cert_id)
                self._revoke_superseded(db, unit, at=at, newest=cert_id)
                return self._certificate(db, cert_id)
        except sqlite3.IntegrityError as exc:
            if "certificates.spki_sha256" not in str(exc) and "certificates.fingerprint_sha256" not in str(
                exc
            ):
                raise
            with self._lock:
                holders = list(
                    self._db.query("SELECT * FROM certificates WHERE spki_sha256 = ?", [spki_sha256])
                )
            raise PublicKeyReused(
                spki_sha256, _certificate_from_row(holders[0]) if holders else None
            ) from None

    def _revoke_superseded(self, db: sqlite_utils.Database, unit: Unit, *, at: str, newest: int) -> None:
        """Revoke (reason 'superseded') every earlier valid certificate of the unit's board.

        Done when the replacement is recorded, not when a re-provisioning starts: until then the board may
        still hold its old key and certificate (a re-provisioning given up before its wipe step leaves the
        board as it was), and revoking early would break a working board for nothing. From here on the old
        key is gone (keygen runs on a wiped token) and the new certificate replaces the old one — the same
        holds for a certificate issued earlier in the same unit, before a resume made a new key.
        """
        earlier = db.execute(
            """
            SELECT c.id FROM certificates AS c JOIN units AS u ON u.id = c.unit_id
            WHERE u.serial = ? AND c.revoked_at IS NULL AND c.id <> ? ORDER BY c.id
            """,
            [unit.serial, newest],
        ).fetchall()
        for (cert_id,) in earlier:
            db.table("certificates").update(
                cert_id,
                {"revoked_at": at, "revocation_reason": SUPERSEDED_REASON, "revoked_by": unit.operator},
            )
            self._append_event(
                db, at=at, kind="certificate.superseded", table="certificates", pk=int(cert_id)
            )

    def revoke(self, *, serial: str, reason: str, by: str) -> CertificateRecord:
        """Revoke the newest certificate issued to board ``serial``; return it as revoked."""
        if not reason.strip() or not by.strip():
            raise ValueError("a revocation needs a reason and the name of who revokes")
        with self._change() as db:
            row = db.execute(
                """
                SELECT c.id FROM certificates AS c JOIN units AS u ON u.id = c.unit_id
                WHERE u.serial = ? ORDER BY c.id DESC LIMIT 1
                """,
                [serial],
            ).fetchone()
            if row is None:
                raise StationError(
                    f"No certificate was issued to board {serial} by this station — check the serial. "
                    f"Nothing was revoked."
                )
            cert_id = int(row[0])
            current = self._certificate(db, cert_id)
            if current.revoked_at is not None:
                raise StationError(
                    f"The certificate of board {serial} (serial {current.serial_hex}) was already revoked on "
                    f"{_local_text(current.revoked_at)} ({current.revocation_reason}). Nothing to do."
                )
            at = self._now_text()
            db.table("certificates").update(
                cert_id, {"revoked_at": at, "revocation_reason": reason, "revoked_by": by}
            )
            self._append_event(db, at=at, kind="certificate.revoked", table="certificates", pk=cert_id)
            return self._certificate(db, cert_id)

    def record_label_print(
        self, unit_id: int, *, by: str, printer: str, reprint: bool, printed: bool, message: str
    ) -> LabelPrint:
        """Journal one label sent to (or refused by) a label printer for unit ``unit_id``."""
        with self._change() as db:
            self._require_unit(db, unit_id)
            at = self._now_text()
            pk = _insert(
                db,
                "label_prints",
                {
                    "unit_id": unit_id,
                    "at": at,
                    "by": by,
                    "printer": printer,
                    "reprint": int(reprint),
                    "printed": int(printed),
                    "message": message,
                },
            )
            self._append_event(
                db, at=at, kind="label.reprinted" if reprint else "label.printed", table="label_prints", pk=pk
            )
            return _label_print_from_row(db.table("label_prints").get(pk))
