"""`station revoke` — revoke a board's certificate, recorded in the audit log, then say how to publish it.

A revocation is only a record until a new CRL is published (``station ca crl --out FILE``): servers and devices
learn of it from the CRL, which needs the CA passphrase. Revoking itself does not, so a quality lead can record
a revocation at once and have the CRL published by whoever holds the passphrase.
"""

from __future__ import annotations

import argparse
import getpass

from station.audit import AuditLog
from station.audit.checkpoints import CheckpointSigner
from station.cli.ca import load_station_ca
from station.errors import StationError
from station.home import StationHome
from station.pki.token import TOKEN_FILE

EPILOG = """\
examples:
  station revoke --serial 202600000000001 --reason keyCompromise --by "Q. Lead"
  station revoke --serial 202600000000001 --reason "board scrapped after drop test"

A reason that is an RFC 5280 reason name (keyCompromise, affiliationChanged, superseded,
cessationOfOperation, privilegeWithdrawn, …) is put in the CRL as its reason code; any other
text is kept in the audit log and the CRL lists the certificate without a reason code.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "revoke",
        help="revoke the certificate of a board (then publish the CRL)",
        description="Revoke the current certificate of a board, with a reason, in the audit log.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--serial", required=True, metavar="SERIAL", help="the board's serial number")
    parser.add_argument("--reason", required=True, metavar="TEXT", help="why (see below)")
    parser.add_argument(
        "--by", metavar="NAME", help="who decided it (default: the name you are logged in with)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    serial = args.serial.strip()
    reason = args.reason.strip()
    by = (args.by or _login_name()).strip()
    if not reason:
        raise StationError("--reason is empty — say why the certificate is revoked (e.g. keyCompromise).")
    if not by:
        raise StationError("Who revokes is not known — give your name with --by NAME.")
    from station.service.client import connect

    client = connect(args.home, getattr(args, "socket", None), start=False)
    if client is not None:
        # The station service owns the audit log: it records the OS account the kernel names for this caller.
        with client:
            answer = client.call("revoke", {"serial": serial, "reason": reason, "by": args.by})
        _say_revoked(
            args, serial, reason, answer["by"], answer["serial_hex"], answer["unit_id"], answer["subject"]
        )
        return 0
    home = StationHome.resolve(args.home)
    if not home.audit_db.exists():
        raise StationError(
            f"There is no audit log at {home.audit_db}: this station home never issued a certificate. "
            f"Check --home or STATION_HOME."
        )
    with AuditLog(home.audit_db) as log:
        ca = None
        if (home.ca_dir / TOKEN_FILE).exists():
            # A station CA in a token signs every revocation in the transaction that records it.
            ca = load_station_ca(home)
            log.attach_checkpoint_signer(CheckpointSigner.for_certificate(ca.certificate, ca.sign_bytes))
        try:
            record = log.revoke(serial=serial, reason=reason, by=by)
        finally:
            if ca is not None:
                ca.close()
    _say_revoked(args, serial, reason, by, record.serial_hex, record.unit_id, record.subject)
    return 0


def _say_revoked(
    args: argparse.Namespace, serial: str, reason: str, by: str, serial_hex: str, unit_id: int, subject: str
) -> None:
    home_option = f"--home {args.home} " if args.home else ""
    print(
        f"Revoked certificate {serial_hex} of board {serial} (unit {unit_id}, {subject}): "
        f"{reason} — recorded for {by}.\n"
        f"Servers and devices learn of it only from a new CRL. Publish one now:\n"
        f"  station {home_option}ca crl --out FILE"
    )


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment or the password database
        return ""
