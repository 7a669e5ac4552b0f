"""`station ca root …` — the offline root CA, on a machine kept off the line.

These commands work on the root's own directory (``--out`` / ``--root``: a removable medium, a vault), never on a
station home, so they never go through the station service: a root key must not be where a line's service is.
A directory inside a station home is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from station.cli.ca import (
    _RAW,
    _positive_int,
    _prompt,
    _read_input,
    _token_arguments,
    _token_settings,
    read_secret_file,
)
from station.cli.ca_home import colon_hex, validity_text
from station.errors import StationError
from station.home import StationHome
from station.pki import fingerprint_sha256, write_file_atomically

ROOT_INIT_EPILOG = """\
examples:
  station ca root init --out /media/root-ca --common-name "Acme Device Root" --organization Acme
  station ca root init --out /media/root-ca --key-storage pkcs11 \\
      --pkcs11-module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so --token-label ROOT

Run it on a machine kept off the line. The root key is created in the token, or in DIR/root.key encrypted
under a passphrase with scrypt (asked twice, or --passphrase-file FILE with mode 0600).
"""


SIGN_STATION_EPILOG = """\
example:
  station ca root sign-station --root /media/root-ca --csr LINE-3.csr --name LINE-3 \\
      --days 730 --max-certificates 50000 --out LINE-3-chain.pem

Issues the station's CA certificate: CA limited to device certificates (pathLen 0), name constraints
(the station's TLS names: localhost and loopback unless --permit-dns/--permit-ip add more), validity inside
the root's, and an issuance limit the station enforces. Writes the chain (station CA, root) to --out and a
copy of the certificate to ROOT/issued/.
"""


# long: the `station ca root` argument parser, its two subcommands' options in the order --help shows them
def register_root(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    root = commands.add_parser(
        "root",
        help="the offline root CA: init, sign-station",
        description="The offline root CA, kept on a machine off the line; it certifies each station's CA.",
        epilog="examples:\n  station ca root init --out /media/root-ca\n"
        "  station ca root sign-station --root /media/root-ca --csr LINE-3.csr --name LINE-3 --out LINE-3-chain.pem",
        formatter_class=_RAW,
    )

    def show_help(args: argparse.Namespace) -> int:
        root.print_help()
        return 2

    root.set_defaults(handler=show_help)
    actions = root.add_subparsers(dest="root_command", metavar="SUBCOMMAND")
    init = actions.add_parser(
        "init",
        help="create the offline root CA in a directory",
        epilog=ROOT_INIT_EPILOG,
        formatter_class=_RAW,
        description="Create the offline root CA: its key (token or scrypt-encrypted file) and certificate.",
    )
    init.add_argument("--out", required=True, type=Path, metavar="DIR", help="the root CA's directory")
    init.add_argument(
        "--common-name", default="Welma Device Root CA", help="root subject CN (default: %(default)s)"
    )
    init.add_argument("--organization", default="", help="root subject O (copied into every station CA)")
    init.add_argument(
        "--days", type=_positive_int, default=7300, metavar="N", help="validity (default: %(default)s)"
    )
    init.add_argument(
        "--key-type",
        choices=("ec-p384", "ec-p256", "rsa-3072"),
        default="ec-p384",
        help="root key type (default: %(default)s)",
    )
    init.add_argument(
        "--key-storage",
        choices=("file", "pkcs11"),
        default=None,
        help="file (default) or pkcs11 (with --pkcs11-module and --token-label)",
    )
    init.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help="a file (mode 0600) holding the new passphrase"
    )
    init.add_argument(
        "--pin-file", type=Path, metavar="FILE", help="a file (mode 0600) holding the root token's PIN"
    )
    _token_arguments(init)
    init.set_defaults(handler=run_root_init)

    sign = actions.add_parser(
        "sign-station",
        help="issue a station's CA certificate from its CSR",
        epilog=SIGN_STATION_EPILOG,
        formatter_class=_RAW,
        description="Certify a station's issuing CA (its key in the station's token).",
    )
    sign.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="the root CA's directory (default: the current directory)",
    )
    sign.add_argument("--csr", required=True, type=Path, metavar="FILE", help="the station's station-ca.csr")
    sign.add_argument("--name", required=True, help="the station or line, e.g. LINE-3 (its CA's name)")
    sign.add_argument(
        "--days",
        type=_positive_int,
        default=1825,
        metavar="N",
        help="validity of the station CA, never beyond the root's (default: %(default)s)",
    )
    sign.add_argument(
        "--max-certificates",
        type=_positive_int,
        metavar="N",
        help="how many device certificates the station CA may issue in all",
    )
    sign.add_argument(
        "--permit-dns",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name the station's TLS server may use (besides localhost); repeatable",
    )
    sign.add_argument(
        "--permit-ip",
        action="append",
        default=[],
        metavar="CIDR",
        help="a network the station's TLS server address may be in (besides loopback); repeatable",
    )
    sign.add_argument("--out", required=True, type=Path, metavar="CHAIN.pem", help="where to write the chain")
    sign.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help="a file (mode 0600) holding the root passphrase"
    )
    sign.add_argument(
        "--pin-file", type=Path, metavar="FILE", help="a file (mode 0600) holding the root token's PIN"
    )
    sign.set_defaults(handler=run_root_sign_station)


# The packaged station service's home (packaging/welma-station.service): never a place for a root either.
SERVICE_HOME = Path("/var/lib/welma-station")


def refuse_station_home(directory: Path, args: argparse.Namespace) -> None:
    """The offline root lives off the line: a directory inside a station home (this command's, or the
    packaged service's) is refused before anything is made or read."""
    where = directory.expanduser().resolve()
    for home in {StationHome.resolve(getattr(args, "home", None)).root.resolve(), SERVICE_HOME}:
        if where == home or where.is_relative_to(home):
            raise StationError(
                f"{directory} is inside the station home {home} — the offline root CA is kept off the line: "
                "use a directory on the root's own machine or medium (e.g. /media/root-ca)"
            )


def run_root_init(args: argparse.Namespace) -> int:
    from station.pki.root import init_root

    refuse_station_home(args.out, args)
    token = _token_settings(args, None)
    if token is not None:
        pin = (
            read_secret_file(args.pin_file, "token PIN")
            if args.pin_file
            else _prompt(
                f"PIN of token {token.token_label!r}: ",
                what="root token's PIN",
                how="give --pin-file FILE (mode 0600)",
            )
        )
        root = init_root(
            args.out,
            common_name=args.common_name,
            organization=args.organization,
            validity_days=args.days,
            key_type=args.key_type,
            token=token,
            pin=pin,
        )
    else:
        if args.passphrase_file:
            passphrase = read_secret_file(args.passphrase_file, "root passphrase").encode("utf-8")
        else:
            first = _prompt(
                "New root passphrase: ", what="root passphrase", how="give --passphrase-file FILE"
            )
            if (
                _prompt("Same passphrase again: ", what="root passphrase", how="give --passphrase-file FILE")
                != first
            ):
                raise StationError(
                    "The two passphrases differ — run the command again and type the same one twice."
                )
            passphrase = first.encode("utf-8")
        root = init_root(
            args.out,
            common_name=args.common_name,
            organization=args.organization,
            validity_days=args.days,
            key_type=args.key_type,
            passphrase=passphrase,
        )
    cert = root.certificate
    print(f"Created the offline root CA in {root.directory}")
    print(f"  subject:  {cert.subject.rfc4514_string()}")
    print(f"  SHA-256:  {colon_hex(fingerprint_sha256(cert))}")
    print(f"  validity: {validity_text(cert)}")
    print(f"  key:      {'token ' + repr(token.token_label) if token else root.directory / 'root.key'}")
    print(
        f"\nWrite the SHA-256 above in the ceremony record. Distribute {root.certificate_path} to the systems that "
        "must trust the devices; keep this directory (and the key) off the line."
    )
    return 0


def run_root_sign_station(args: argparse.Namespace) -> int:
    from station.pki.root import DEFAULT_PERMITTED_DNS, DEFAULT_PERMITTED_IP, root_uses_token, sign_station

    root_dir: Path = args.root.resolve()
    refuse_station_home(root_dir, args)
    if args.out.exists():  # before signing: the root must not issue a certificate that is then not delivered
        raise StationError(
            f"{args.out} already exists — choose another --out; nothing was signed or overwritten."
        )
    csr_pem = _read_input(args.csr, "CSR")
    passphrase: bytes | None = None
    pin: str | None = None
    if root_uses_token(root_dir):
        pin = (
            read_secret_file(args.pin_file, "token PIN")
            if args.pin_file
            else _prompt(
                "PIN of the root's token: ", what="root token's PIN", how="give --pin-file FILE (mode 0600)"
            )
        )
    elif args.passphrase_file:
        passphrase = read_secret_file(args.passphrase_file, "root passphrase").encode("utf-8")
    else:
        passphrase = _prompt(
            "Root passphrase: ", what="root passphrase", how="give --passphrase-file FILE"
        ).encode()
    cert, chain = sign_station(
        root_dir,
        csr_pem,
        name=args.name,
        days=args.days,
        max_certificates=args.max_certificates,
        permitted_dns=(*DEFAULT_PERMITTED_DNS, *args.permit_dns),
        permitted_ip=(*DEFAULT_PERMITTED_IP, *args.permit_ip),
        passphrase=passphrase,
        pin=pin,
    )
    try:
        write_file_atomically(args.out, chain, mode=0o644, replace=False)
    except FileExistsError:
        raise StationError(
            f"{args.out} already exists — choose another --out; nothing was overwritten."
        ) from None
    limit = f", at most {args.max_certificates} device certificates" if args.max_certificates else ""
    print(
        f"Issued {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}), valid to "
        f"{cert.not_valid_after_utc:%Y-%m-%d}{limit}."
    )
    print(f"Wrote the chain to {args.out}; on the station run: station ca import-chain {args.out.name}")
    return 0
