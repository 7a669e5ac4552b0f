"""The quality lead's requests: revoke, CRL, export, verify, checkpoint and back up the audit log.

Files a caller asked for come back as file answers (:func:`~station.service.connection.file_answer`): the
client writes them itself, as its own user.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.errors import StationError
from station.service.connection import Connection, Handler, bind, file_answer

if TYPE_CHECKING:
    from station.service.server import StationService


def handlers(service: StationService) -> dict[str, Handler]:
    """The quality requests: op name → handler."""
    return {
        "revoke": bind(service, revoke),
        "audit_export": bind(service, export),
        "crl": bind(service, crl),
        "audit_verify": bind(service, audit_verify),
        "backup": bind(service, backup),
        "audit_checkpoint": bind(service, audit_checkpoint),
    }


def revoke(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    serial = str(args.get("serial") or "").strip()
    reason = str(args.get("reason") or "").strip()
    if not reason:
        raise StationError("--reason is empty — say why the certificate is revoked (e.g. keyCompromise).")
    typed = str(args.get("by") or "").strip()
    if args.get("_signed_in") is not None and not typed:
        typed = args["_signed_in"].person
    # Who revokes is the OS account the kernel named; a typed name is kept beside it, never instead.
    by = (
        conn.caller.account
        if not typed or typed == conn.caller.account
        else f"{conn.caller.account} (for {typed})"
    )
    record = service.station.audit.revoke(serial=serial, reason=reason, by=by)
    return {
        "serial_hex": record.serial_hex,
        "unit_id": record.unit_id,
        "subject": record.subject,
        "by": by,
    }


def crl(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """A CRL signed with the unlocked CA, from a log that verifies; the client writes and publishes it."""
    from station.cli.ca import revoked_from_audit
    from station.config import load_ca_settings

    service._engine()  # the CA is unlocked (else: say how to unlock it)
    settings = load_ca_settings(service.home.config_file)
    days = int(args.get("next_update_days") or settings.crl_next_update_days)
    pem = service.ca.crl(revoked_from_audit(service.home), next_update_days=days)
    return {
        "pem": pem.decode("ascii"),
        "publish": settings.crl_publish,
        "every": settings.crl_publish_every_minutes,
    }


def audit_verify(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """`station audit verify` made here (the service owns the log); the client prints what it says."""
    from station.cli.audit import verify_lines

    lines, status = verify_lines(service.home, service.station.audit)
    return {"lines": lines, "status": status}


def audit_checkpoint(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """`station audit checkpoint`: the head of a log that verifies, signed with the unlocked CA."""
    service._engine()  # the CA is unlocked (else: say how to unlock it)
    report = service.station.audit.verify()
    if not report.ok:
        raise StationError(
            f"The audit log does not verify ({report.problem}) — refusing to sign it; report it "
            "to quality assurance."
        )
    seq = service.station.audit.checkpoint()
    return {"seq": seq, "subject": service.ca.certificate.subject.rfc4514_string()}


def backup(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """A consistent, verified copy of the audit log made here and sent in chunks: the client writes its file
    itself, as its own user, mode 0640."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="backup-"))
    try:
        written = service.station.audit.backup(scratch / "audit-backup.db")
        data = written.path.read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return file_answer(
        data,
        {"events": written.report.events, "ok": written.report.ok, "problem": written.report.problem},
    )


def export(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """An export made here (the service reads the audit log) and sent to the client in chunks: the client
    writes its file itself, as its own user (mode 0640) — the service writes no file where a client says."""
    import shutil
    import tempfile

    from station.report import export_to_file
    from station.service.audit_wire import filter_from_args

    fmt = str(args.get("format"))
    # Every filter of the audit tab, checked (the command line sends the same keys).
    filters = filter_from_args(args)
    scratch = Path(
        tempfile.mkdtemp(
            prefix="export-",
            dir=service.socket_path.parent
            if service.socket_path.parent.is_relative_to(service.home.root)
            else None,
        )
    )
    try:
        written = export_to_file(
            service.station.audit,
            scratch / f"export.{fmt}",
            fmt=fmt,
            filters=filters,
            station=service.config.name,
            include_steps=bool(args.get("steps")),
        )
        data = written.path.read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return file_answer(data, {"units": written.units, "pages": written.pages})


# -- the socket --------------------------------------------------------------------------------------
