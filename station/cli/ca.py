"""`station ca …` — create, import, inspect the station's CA and publish its CRL.

The CA passphrase comes from ``STATION_CA_PASSPHRASE`` or is asked for on the terminal; it is
never printed, logged or put on a command line (where ``ps`` and shell history would show it).
"""

from __future__ import annotations

import argparse
import getpass
import os
import warnings
from datetime import datetime
from pathlib import Path

from cryptography import x509

from station.errors import StationError
from station.home import StationHome
from station.pki import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    KEY_TYPES,
    MIN_PASSPHRASE_LENGTH,
    SYSTEM_CERT_FILE,
    CertificateAuthority,
    RevokedEntry,
    describe_key_type,
    fingerprint_sha256,
    read_certificate,
    refuse_existing_ca,
    write_file_atomically,
)

PASSPHRASE_ENV = "STATION_CA_PASSPHRASE"

_RAW = argparse.RawDescriptionHelpFormatter

CA_EPILOG = f"""\
examples:
  station ca init                       create the CA and the system's TLS certificate
  station ca show                       what CA this station signs with
  station ca crl --out /srv/pki/crl.pem publish the list of revoked device certificates

The CA passphrase is read from ${PASSPHRASE_ENV}, else asked for on the terminal.
"""

INIT_EPILOG = """\
example:
  station ca init --key-type ec-p256 --common-name "Acme Line 3 CA" --validity-days 3650

Creates ca.key, ca.cert, system.key and system.cert in the station home's ca/ directory.
Asks twice for a new passphrase (at least 8 characters) that encrypts both keys.
Install ca.cert on the devices; it is the tutorial's ca.cert.
"""

SHOW_EPILOG = """\
example:
  station --home /srv/station ca show
"""

IMPORT_EPILOG = """\
example:
  export OLD_CA_PASSWORD            # the password of the existing ca.key, if it has one
  station ca import --key ca.key --cert ca.cert --key-password-env OLD_CA_PASSWORD

Adopts a CA made elsewhere (for example with the tutorial's `openssl req -new -x509`).
The key is stored re-encrypted under a new station passphrase (asked twice); the original
files are left as they are.  A new system.key/system.cert is made and signed by that CA.
"""

CRL_EPILOG = """\
example:
  station ca crl --out /srv/pki/crl.pem --next-update-days 7

Lists every device certificate revoked in the audit log.  Publish a new CRL before the
"next update" time printed, or devices and servers that check it will refuse all certificates.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} days is not possible; give at least 1")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `station ca` and its subcommands."""
    parser = subparsers.add_parser(
        "ca",
        help="the station's certificate authority: init, show, import, crl",
        description="The station's local certificate authority, which certifies each device's key.",
        epilog=CA_EPILOG,
        formatter_class=_RAW,
    )

    def show_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=show_help)
    commands = parser.add_subparsers(dest="ca_command", metavar="SUBCOMMAND")

    init = commands.add_parser(
        "init",
        help="create a new CA and the system's TLS server certificate",
        description="Create a new CA key and self-signed certificate, and the system's TLS server pair.",
        epilog=INIT_EPILOG,
        formatter_class=_RAW,
    )
    init.add_argument(
        "--key-type", choices=KEY_TYPES, default="ec-p256", help="CA key type (default: ec-p256)"
    )
    init.add_argument(
        "--common-name", default="Welma Station CA", help="CA subject CN (default: %(default)s)"
    )
    init.add_argument(
        "--validity-days",
        type=_positive_int,
        default=3650,
        metavar="N",
        help="how long the CA certificate is valid (default: %(default)s)",
    )
    init.set_defaults(handler=run_init)

    show = commands.add_parser(
        "show",
        help="show the CA and system certificates",
        description="Show the CA's subject, key type, fingerprint and validity, and the system certificate. "
        "Needs no passphrase.",
        epilog=SHOW_EPILOG,
        formatter_class=_RAW,
    )
    show.set_defaults(handler=run_show)

    imp = commands.add_parser(
        "import",
        help="adopt an existing CA key and certificate",
        description="Import an existing CA key and certificate into the station home.",
        epilog=IMPORT_EPILOG,
        formatter_class=_RAW,
    )
    imp.add_argument("--key", required=True, type=Path, metavar="FILE", help="the CA's PEM private key")
    imp.add_argument("--cert", required=True, type=Path, metavar="FILE", help="the CA's PEM certificate")
    imp.add_argument(
        "--key-password-env",
        metavar="VAR",
        help="name of the environment variable holding the key file's password (if it is encrypted)",
    )
    imp.set_defaults(handler=run_import)

    crl = commands.add_parser(
        "crl",
        help="write a signed CRL of the revoked device certificates",
        description="Write a CRL signed by the CA listing the certificates revoked in the audit log.",
        epilog=CRL_EPILOG,
        formatter_class=_RAW,
    )
    crl.add_argument("--out", required=True, type=Path, metavar="FILE", help="where to write the PEM CRL")
    crl.add_argument(
        "--next-update-days",
        type=_positive_int,
        default=7,
        metavar="N",
        help="days until the CRL's next update (default: %(default)s)",
    )
    crl.set_defaults(handler=run_crl)


# --- passphrase --------------------------------------------------------------------------------


def read_passphrase(*, new: bool) -> bytes:
    """The CA passphrase from $STATION_CA_PASSPHRASE, else from the terminal (twice when ``new``)."""
    value = os.environ.get(PASSPHRASE_ENV) or None
    if value is None:
        no_terminal = StationError(
            f"The CA passphrase is needed and there is no terminal to ask on — set {PASSPHRASE_ENV} "
            "and run again."
        )
        try:
            # Never fall back to reading a passphrase with echo from a pipe: make that an error.
            with warnings.catch_warnings():
                warnings.simplefilter("error", getpass.GetPassWarning)
                value = getpass.getpass("New CA passphrase: " if new else "CA passphrase: ")
                if new and getpass.getpass("Same passphrase again: ") != value:
                    raise StationError(
                        "The two passphrases differ — run the command again and type the same one twice."
                    )
        except (EOFError, getpass.GetPassWarning):
            raise no_terminal from None
    if new and len(value) < MIN_PASSPHRASE_LENGTH:
        raise StationError(
            f"The CA passphrase must have at least {MIN_PASSPHRASE_LENGTH} characters — "
            "choose a longer one and run again."
        )
    return value.encode("utf-8")


# --- handlers ----------------------------------------------------------------------------------


def run_init(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home).create()
    refuse_existing_ca(home.ca_dir)  # before asking for a passphrase that would be wasted
    passphrase = read_passphrase(new=True)
    ca = CertificateAuthority.init(
        home.ca_dir,
        passphrase=passphrase,
        common_name=args.common_name,
        key_type=args.key_type,
        validity_days=args.validity_days,
    )
    print(f"Created the station CA in {ca.directory}")
    _print_summary(ca.directory)
    print(f"\nNext: install {ca.certificate_path} on the devices as their trusted CA (ca.cert).")
    return 0


def run_show(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home)
    _print_summary(home.ca_dir)
    return 0


def run_import(args: argparse.Namespace) -> int:
    key_password: bytes | None = None
    if args.key_password_env:
        secret = os.environ.get(args.key_password_env)
        if secret is None:
            raise StationError(
                f"--key-password-env names {args.key_password_env}, but it is not set — "
                f"export the key file's password in {args.key_password_env} and run again."
            )
        key_password = secret.encode("utf-8")
    key_pem = _read_input(args.key, "CA key")
    cert_pem = _read_input(args.cert, "CA certificate")
    home = StationHome.resolve(args.home).create()
    refuse_existing_ca(home.ca_dir)
    ca = CertificateAuthority.import_existing(
        home.ca_dir,
        key_pem=key_pem,
        cert_pem=cert_pem,
        key_password=key_password,
        passphrase=read_passphrase(new=True),
    )
    print(f"Imported the CA into {ca.directory} (the files {args.key} and {args.cert} are unchanged)")
    _print_summary(ca.directory)
    return 0


def run_crl(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home)
    ca = CertificateAuthority.load(home.ca_dir, passphrase=read_passphrase(new=False))
    revoked = revoked_from_audit(home)
    pem = ca.crl(revoked, next_update_days=args.next_update_days)
    out: Path = args.out
    try:
        write_file_atomically(out, pem, mode=0o644, replace=True)
    except OSError as exc:
        raise StationError(
            f"Could not write the CRL to {out} ({exc.strerror}) — check that the directory exists "
            "and is writable, then run again."
        ) from None
    crl = x509.load_pem_x509_crl(pem)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    print(
        f"Wrote CRL number {number} with {len(crl)} revoked certificate(s) to {out}.\n"
        f"Publish it; its next update is due {crl.next_update_utc:%Y-%m-%d %H:%M} UTC — "
        "run this command again before then."
    )
    return 0


def revoked_from_audit(home: StationHome) -> list[RevokedEntry]:
    """The revoked device certificates recorded in the audit log.

    No audit database means this station never certified anything, so nothing can be revoked
    (and opening the log would create an empty database as a side effect).  If the database
    exists it must be read: a CRL silently missing a revocation is worse than no CRL.
    """
    if not home.audit_db.exists():
        return []
    try:
        # Imported here: `station ca` must work on a station whose audit log was never set up.
        from station.audit import AuditLog

        with AuditLog(home.audit_db) as audit:
            records = audit.revoked_certificates()
    except (ImportError, AttributeError) as exc:
        raise StationError(
            f"The audit log {home.audit_db} exists but this station cannot read revocations from it "
            f"({exc}) — update the station software, then run again."
        ) from None
    return [
        RevokedEntry(serial_number=record.serial_number, revoked_at=record.revoked_at, reason=record.reason)
        for record in records
    ]


# --- output ------------------------------------------------------------------------------------


def _read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StationError(f"Cannot read the {what} file {path} ({exc.strerror}) — check the path.") from None


def _colon_hex(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()


def _validity(cert: x509.Certificate) -> str:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    state = "valid" if start <= datetime.now(end.tzinfo) < end else "NOT VALID NOW"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC ({state})"


def _key_file_state(path: Path) -> str:
    if not path.exists():
        return f"{path} (MISSING)"
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return f"{path} (mode {mode:04o} — too open: run `chmod 600 {path}`)"
    return f"{path} (mode {mode:04o})"


def _print_summary(ca_dir: Path) -> None:
    ca_cert = read_certificate(ca_dir / CA_CERT_FILE)
    print(f"CA certificate:   {ca_dir / CA_CERT_FILE}")
    print(f"  subject:        {ca_cert.subject.rfc4514_string()}")
    print(f"  key type:       {describe_key_type(ca_cert.public_key())}")
    print(f"  SHA-256:        {_colon_hex(fingerprint_sha256(ca_cert))}")
    print(f"  validity:       {_validity(ca_cert)}")
    print(f"  key file:       {_key_file_state(ca_dir / CA_KEY_FILE)}")
    system_path = ca_dir / SYSTEM_CERT_FILE
    system = read_certificate(system_path)
    try:
        san = system.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ", ".join(str(name.value) for name in san)
    except x509.ExtensionNotFound:
        names = "(none)"
    print(f"System (TLS server) certificate: {system_path}")
    print(f"  subject:        {system.subject.rfc4514_string()}")
    print(f"  names:          {names}")
    print(f"  SHA-256:        {_colon_hex(fingerprint_sha256(system))}")
    print(f"  validity:       {_validity(system)}")
