"""`station ca …` — create, import, inspect the station's CA and publish its CRL; `station ca root …` for the offline root.

Two kinds of station CA:

* in a PKCS#11 token (production): `station ca init --pkcs11-module … --token-label …` makes the key in the
  token and writes a CSR; the offline root (`station ca root init`, `station ca root sign-station`) certifies
  it; `station ca import-chain` installs the chain.  The token PIN comes from a prompt or from the file named
  by ``[ca] pin_file`` in station.toml (mode 0600/0400) — never from an environment variable;
* in an encrypted file (demos, `--key-storage file`, the default without a module): self-signed, as before.
  The file CA's passphrase comes from ``STATION_CA_PASSPHRASE`` or is asked for on the terminal.

Secrets are never printed, logged or put on a command line (where ``ps`` and shell history would show them).
"""

from __future__ import annotations

import argparse
import getpass
import os
import stat
import time
import urllib.error
import urllib.request
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from station.config import CaSettings, load_ca_settings
from station.errors import StationError
from station.home import StationHome
from station.pki import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    KEY_TYPES,
    MIN_PASSPHRASE_LENGTH,
    STATION_CSR_FILE,
    SYSTEM_CERT_FILE,
    CertificateAuthority,
    RevokedEntry,
    describe_key_type,
    fingerprint_sha256,
    key_file_kdf,
    read_certificate,
    refuse_existing_ca,
    write_file_atomically,
)
from station.pki.token import TOKEN_FILE, TOKEN_KEY_TYPES, TokenSettings

PASSPHRASE_ENV = "STATION_CA_PASSPHRASE"

_RAW = argparse.RawDescriptionHelpFormatter

CA_EPILOG = f"""\
examples:
  station ca init                       create a demo CA (key in an encrypted file)
  station ca init --pkcs11-module /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so --token-label LINE-3
                                        create the station CA's key in a token, write its CSR
  station ca import-chain CHAIN.pem     install the chain the offline root issued
  station ca show                       what CA this station signs with, and its quota
  station ca crl --out /srv/pki/crl.pem publish the list of revoked device certificates
  station ca root init --out /media/root-ca      create the offline root (on a machine off the line)

The file CA's passphrase is read from ${PASSPHRASE_ENV}, else asked for on the terminal.
A token's PIN is asked for, or read from [ca] pin_file in station.toml (mode 0600) — never from the environment.
"""

INIT_EPILOG = """\
examples:
  station ca init --key-type ec-p256 --common-name "Acme Line 3 CA" --validity-days 3650
  station ca init --pkcs11-module /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so --token-label LINE-3

Without a PKCS#11 module (or with --key-storage file): a self-signed demo CA; creates ca.key, ca.cert,
system.key and system.cert in the station home's ca/ directory, asks twice for a new passphrase (at least
8 characters) that encrypts both keys (scrypt). Install ca.cert on the devices; it is the tutorial's ca.cert.

With --pkcs11-module and --token-label: generates the station CA's key inside the token (never extractable),
asks for the token's user PIN, and writes ca/station-ca.csr — take it to the offline root
(`station ca root sign-station`), then `station ca import-chain CHAIN.pem`.
"""

IMPORT_CHAIN_EPILOG = """\
example:
  station ca import-chain /media/usb/LINE-3-chain.pem

Installs the station CA certificate and the root above it (as ca/ca.cert, what devices receive as ca.cert,
and ca/root.cert). Checks that the certificate is for this station's token key and that the chain verifies.
"""

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
examples:
  station ca crl --out /srv/pki/crl.pem --next-update-days 7
  station ca crl --publish /srv/www/pki --every 60
  station ca crl --publish https://pki.example.com/crl/line-3.crl

Lists every device certificate revoked in the audit log — only after `station audit verify` passes (hash
chain and, for a token CA, its signed checkpoints): a CRL from a rewritten log could leave a revoked board
valid. Publish a new CRL before the "next update" time printed, or devices and servers that check it will
refuse all certificates. --publish DIR writes DIR/crl.pem and DIR/crl.der; --publish URL PUTs the DER CRL.
--every N repeats every N minutes until stopped (Ctrl-C). Defaults come from [ca] in station.toml.
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
        "--key-type",
        choices=sorted({*KEY_TYPES, *TOKEN_KEY_TYPES}),
        default="ec-p256",
        help="CA key type (default: ec-p256)",
    )
    init.add_argument(
        "--key-storage",
        choices=("file", "pkcs11"),
        default=None,
        help="where the CA key lives: pkcs11 (a token; the default when --pkcs11-module is given) or file (demo)",
    )
    _token_arguments(init)
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

    import_chain = commands.add_parser(
        "import-chain",
        help="install the certificate chain the offline root issued for this station's token CA",
        description="Install the station CA's certificate chain (station CA first, root last).",
        epilog=IMPORT_CHAIN_EPILOG,
        formatter_class=_RAW,
    )
    import_chain.add_argument("chain", type=Path, metavar="CHAIN.pem", help="the chain sign-station wrote")
    import_chain.set_defaults(handler=run_import_chain)

    _register_root(commands)

    show = commands.add_parser(
        "show",
        help="show the CA and system certificates",
        description="Show the CA's subject, key type, fingerprint and validity, and the system certificate. "
        "Needs no passphrase.",
        epilog=SHOW_EPILOG,
        formatter_class=_RAW,
    )
    show.set_defaults(handler=run_show)

    from station.cli.serve import run_ca_unlock

    unlock = commands.add_parser(
        "unlock",
        help="unlock the CA in the station service (administrator)",
        description="Ask for the CA passphrase (or the token PIN) and send it to the station service over its "
        "socket; the service loads the key once and keeps no copy of the passphrase.",
        formatter_class=_RAW,
    )
    unlock.set_defaults(handler=run_ca_unlock)

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
    crl.add_argument("--out", type=Path, metavar="FILE", help="where to write the PEM CRL")
    crl.add_argument(
        "--next-update-days",
        type=_positive_int,
        default=None,
        metavar="N",
        help="days until the CRL's next update (default: [ca] crl_next_update_days, else 7)",
    )
    crl.add_argument("--publish", metavar="DIR|URL", help="publish to a directory or PUT to an http(s) URL")
    crl.add_argument("--every", type=_positive_int, metavar="MINUTES", help="publish again every MINUTES")
    crl.set_defaults(handler=run_crl)


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pkcs11-module", type=Path, metavar="LIB", help="the token's PKCS#11 library")
    parser.add_argument(
        "--token-label", metavar="LABEL", help="the label of the token that holds (or will hold) the key"
    )
    parser.add_argument("--key-label", metavar="LABEL", help="the key's label in the token")
    parser.add_argument(
        "--softhsm2-conf",
        type=Path,
        metavar="FILE",
        help="for SoftHSM2: its configuration file (e.g. a token directory private to the station home)",
    )


def _register_root(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


# --- secrets -----------------------------------------------------------------------------------


def read_secret_file(path: Path, what: str) -> str:
    """A PIN or passphrase from a file only its owner can read (mode 0600 or 0400), without its line end."""
    try:
        info = path.stat()
    except OSError as exc:
        raise StationError(
            f"The {what} file {path} cannot be read ({exc.strerror}) — check the path."
        ) from None
    mode = stat.S_IMODE(info.st_mode)
    if mode not in (0o600, 0o400) or info.st_uid != os.geteuid():
        raise StationError(
            f"The {what} file {path} has mode {mode:04o} (owner uid {info.st_uid}) — it must be mode 0600 or 0400 "
            f"and owned by this user, or anyone could read the {what}. Run `chmod 600 {path}` and try again."
        )
    text = path.read_text(encoding="utf-8").rstrip("\r\n")
    if not text:
        raise StationError(f"The {what} file {path} is empty — write the {what} in it.")
    return text


def _prompt(prompt: str, *, what: str, how: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", getpass.GetPassWarning)
            return getpass.getpass(prompt)
    except (EOFError, getpass.GetPassWarning):
        raise StationError(f"The {what} is needed and there is no terminal to ask on — {how}.") from None


def read_token_pin(home: StationHome, token_label: str, settings: CaSettings | None = None) -> str:
    """The token's user PIN: from ``[ca] pin_file`` (mode 0600/0400), else asked for. Never from the environment."""
    settings = settings or load_ca_settings(home.config_file)
    if settings.pin_file is not None:
        return read_secret_file(settings.pin_file, "token PIN")
    pin = _prompt(
        f"PIN of token {token_label!r}: ",
        what=f"PIN of token {token_label!r}",
        how="set [ca] pin_file in station.toml to a file with mode 0600 holding it",
    )
    if not pin:
        raise StationError("No PIN was typed — run again and type the token's user PIN.")
    return pin


def load_station_ca(home: StationHome) -> CertificateAuthority:
    """The station's CA, unlocked: a token CA with its PIN, a file CA with its passphrase; [ca] limits applied."""
    settings = load_ca_settings(home.config_file)
    token_file = home.ca_dir / TOKEN_FILE
    if token_file.exists():
        token = TokenSettings.read(token_file)
        ca = CertificateAuthority.load(home.ca_dir, pin=read_token_pin(home, token.token_label, settings))
    else:
        ca = CertificateAuthority.load(home.ca_dir, passphrase=read_passphrase(new=False))
    ca.max_certificates_per_day = settings.max_certificates_per_day
    return ca


def _token_settings(args: argparse.Namespace, home: StationHome | None) -> TokenSettings | None:
    storage = args.key_storage or ("pkcs11" if args.pkcs11_module or args.token_label else "file")
    if storage == "file":
        if args.pkcs11_module or args.token_label:
            raise StationError(
                "--key-storage file takes no --pkcs11-module or --token-label — drop one or the other."
            )
        return None
    if not args.pkcs11_module or not args.token_label:
        raise StationError(
            "A key in a token needs --pkcs11-module LIB and --token-label LABEL (for SoftHSM2: "
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so and the label given to softhsm2-util --init-token)."
        )
    conf = args.softhsm2_conf.resolve() if args.softhsm2_conf else None
    if conf is None and home is not None and (home.root / "softhsm2.conf").exists():
        conf = home.root / "softhsm2.conf"  # a SoftHSM2 token directory private to the station home
    return TokenSettings(
        module=args.pkcs11_module.resolve(),
        token_label=args.token_label,
        key_label=args.key_label or ("station-ca" if home is not None else "root-ca"),
        softhsm2_conf=conf,
    )


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
    token = _token_settings(args, home)
    if token is not None:
        if args.key_type not in TOKEN_KEY_TYPES:
            raise StationError(
                f"A token key is one of {', '.join(TOKEN_KEY_TYPES)} — choose --key-type from those."
            )
        csr_path = CertificateAuthority.init_in_token(
            home.ca_dir,
            settings=token,
            pin=read_token_pin(home, token.token_label),
            common_name=args.common_name,
            key_type=args.key_type,
        )
        print(
            f"Created the station CA key in token {token.token_label!r} (label {token.key_label!r}, not extractable)."
        )
        print(f"Its certificate request is {csr_path}")
        print(
            "\nNext: take that CSR to the offline root and run there\n"
            f"  station ca root sign-station --csr {csr_path.name} --name LINE-NAME --out CHAIN.pem\n"
            "then bring CHAIN.pem back and run\n  station ca import-chain CHAIN.pem"
        )
        return 0
    if args.key_type not in KEY_TYPES:
        raise StationError(f"A file CA key is one of {', '.join(KEY_TYPES)} — choose --key-type from those.")
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
    if (home.ca_dir / TOKEN_FILE).exists():
        _print_token_summary(home)
        return 0
    _print_summary(home.ca_dir)
    return 0


def run_import_chain(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home)
    chain = CertificateAuthority.import_chain(home.ca_dir, _read_input(args.chain, "chain"))
    print(f"Installed the station CA chain in {home.ca_dir / CA_CERT_FILE}:")
    for cert in chain:
        print(
            f"  {cert.subject.rfc4514_string()}  (valid to {cert.not_valid_after_utc:%Y-%m-%d}, "
            f"SHA-256 {fingerprint_sha256(cert)[:16]}…)"
        )
    print("Devices receive this chain as their ca.cert; the station can now provision.")
    return 0


def run_root_init(args: argparse.Namespace) -> int:
    from station.pki.root import init_root

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
    print(f"  SHA-256:  {_colon_hex(fingerprint_sha256(cert))}")
    print(f"  validity: {_validity(cert)}")
    print(f"  key:      {'token ' + repr(token.token_label) if token else root.directory / 'root.key'}")
    print(
        f"\nWrite the SHA-256 above in the ceremony record. Distribute {root.certificate_path} to the systems that "
        "must trust the devices; keep this directory (and the key) off the line."
    )
    return 0


def run_root_sign_station(args: argparse.Namespace) -> int:
    from station.pki.root import DEFAULT_PERMITTED_DNS, DEFAULT_PERMITTED_IP, root_uses_token, sign_station

    root_dir: Path = args.root.resolve()
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
    from station.service.client import connect

    client = connect(args.home, getattr(args, "socket", None), start=False)
    if client is not None:
        with client:
            return _served_crl(client, args)
    home = StationHome.resolve(args.home)
    settings = load_ca_settings(home.config_file)
    publish = args.publish or settings.crl_publish
    every = args.every or (settings.crl_publish_every_minutes if args.publish is None and publish else None)
    if args.out is None and not publish:
        raise StationError(
            "Say where the CRL goes: --out FILE, --publish DIR|URL, or [ca] crl_publish in station.toml."
        )
    next_update_days = args.next_update_days or settings.crl_next_update_days
    # Refuse before unlocking the CA: nothing is signed from a log that does not verify.
    revoked_from_audit(home)
    ca = load_station_ca(home)
    try:
        while True:
            _write_crl(home, ca, args.out, publish, next_update_days)
            if every is None:
                return 0
            print(f"Next publication in {every} minute(s); Ctrl-C stops.", flush=True)
            time.sleep(every * 60)
    except KeyboardInterrupt:
        print("Stopped publishing.")
        return 0
    finally:
        ca.close()


def _served_crl(client: Any, args: argparse.Namespace) -> int:
    """The CRL signed by the station service (which holds the CA, and checks the caller is a quality lead),
    written and published here, by this user."""
    try:
        while True:
            answer = client.call("crl", {"next_update_days": args.next_update_days})
            publish = args.publish or answer["publish"] or ""
            if args.out is None and not publish:
                raise StationError(
                    "Say where the CRL goes: --out FILE, --publish DIR|URL, or [ca] crl_publish in "
                    "station.toml."
                )
            _deliver_crl(answer["pem"].encode("ascii"), args.out, publish)
            every = args.every or (answer["every"] if args.publish is None and publish else None)
            if every is None:
                return 0
            print(f"Next publication in {every} minute(s); Ctrl-C stops.", flush=True)
            time.sleep(every * 60)
    except KeyboardInterrupt:
        print("Stopped publishing.")
        return 0


def _write_crl(
    home: StationHome, ca: CertificateAuthority, out: Path | None, publish: str, next_update_days: int
) -> None:
    _deliver_crl(ca.crl(revoked_from_audit(home), next_update_days=next_update_days), out, publish)


def _deliver_crl(pem: bytes, out: Path | None, publish: str) -> None:
    crl = x509.load_pem_x509_crl(pem)
    places = []
    if out is not None:
        _write_or_explain(out, pem)
        places.append(str(out))
    if publish:
        places.append(_publish(publish, crl))
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    print(
        f"Wrote CRL number {number} with {len(crl)} revoked certificate(s) to {', '.join(places)}.\n"
        f"Its next update is due {crl.next_update_utc:%Y-%m-%d %H:%M} UTC — publish again before then.",
        flush=True,
    )


CRL_PUBLISH_TIMEOUT_S = 30.0


def _publish(destination: str, crl: x509.CertificateRevocationList) -> str:
    from cryptography.hazmat.primitives import serialization

    der = crl.public_bytes(serialization.Encoding.DER)
    if destination.startswith(("http://", "https://")):
        request = urllib.request.Request(
            destination, data=der, method="PUT", headers={"Content-Type": "application/pkix-crl"}
        )
        try:
            with urllib.request.urlopen(request, timeout=CRL_PUBLISH_TIMEOUT_S) as response:
                status = response.status
        except (urllib.error.URLError, OSError) as exc:
            raise StationError(
                f"Could not publish the CRL to {destination} ({exc}) — check the URL and that the server accepts "
                "PUT, then run again. The CRL was not published there."
            ) from None
        if status >= 300:
            raise StationError(f"{destination} answered HTTP {status} to the CRL upload — check the server.")
        return destination
    folder = Path(destination)
    _write_or_explain(folder / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
    _write_or_explain(folder / "crl.der", der)
    return f"{folder}/crl.pem (+ crl.der)"


def _write_or_explain(path: Path, data: bytes) -> None:
    try:
        write_file_atomically(path, data, mode=0o644, replace=True)
    except OSError as exc:
        raise StationError(
            f"Could not write the CRL to {path} ({exc.strerror}) — check that the directory exists "
            "and is writable, then run again."
        ) from None


def audit_trust(home: StationHome) -> tuple[list[x509.Certificate] | None, datetime | None]:
    """What the audit log's checkpoints are checked against: the CA chain, and since when signing is required.

    A station CA in a token signs every unit ending and revocation from its birth on; the demo file CA signs
    them too when it is unlocked, but an unsigned demo log is not an error.
    """
    path = home.ca_dir / CA_CERT_FILE
    if not path.exists():
        return None, None
    chain = x509.load_pem_x509_certificates(path.read_bytes())
    required = chain[0].not_valid_before_utc if (home.ca_dir / TOKEN_FILE).exists() else None
    return chain, required


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

        trusted, required = audit_trust(home)
        with AuditLog(home.audit_db) as audit:
            report = audit.verify(trusted=trusted, require_signed_since=required)
            if not report.ok:
                raise StationError(
                    f"Refusing to build a CRL: the audit log {home.audit_db} does not verify ({report.problem}). "
                    "A CRL built from a rewritten log could leave revoked boards valid. Keep the file as it is, "
                    "report it to quality assurance, and restore the log from a verified backup."
                )
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


def _print_token_summary(home: StationHome) -> None:
    ca_dir = home.ca_dir
    token = TokenSettings.read(ca_dir / TOKEN_FILE)
    print(
        f"Station CA key:   in PKCS#11 token {token.token_label!r}, key {token.key_label!r} (not extractable)"
    )
    print(f"  module:         {token.module}")
    if not (ca_dir / CA_CERT_FILE).exists():
        print(
            f"  certificate:    none yet — take {ca_dir / STATION_CSR_FILE} to the offline root, then "
            "`station ca import-chain CHAIN.pem`"
        )
        return
    chain = x509.load_pem_x509_certificates((ca_dir / CA_CERT_FILE).read_bytes())
    for role, cert in zip(("Station CA:", "Root CA:"), (chain[0], chain[-1]), strict=True):
        print(f"{role:<18}{cert.subject.rfc4514_string()}")
        print(f"  SHA-256:        {_colon_hex(fingerprint_sha256(cert))}")
        print(f"  validity:       {_validity(cert)}")
    from station.pki import max_certificates_of

    limit = max_certificates_of(chain[0])
    settings = load_ca_settings(home.config_file)
    if home.audit_db.exists():
        from station.audit import AuditLog
        from station.pki import IssuanceQuota

        with AuditLog(home.audit_db) as audit:
            since = chain[0].not_valid_before_utc
            today = datetime.now(since.tzinfo).replace(hour=0, minute=0, second=0, microsecond=0)
            quota = IssuanceQuota(
                issued=audit.certificates_issued_since(since),
                maximum=limit,
                issued_today=audit.certificates_issued_since(max(since, today)),
                maximum_per_day=settings.max_certificates_per_day,
            )
        print(f"  quota:          {quota.describe()}")
    else:
        print(f"  quota:          0 certificates issued; limit {limit if limit is not None else 'none'}")


def _print_summary(ca_dir: Path) -> None:
    ca_cert = read_certificate(ca_dir / CA_CERT_FILE)
    print(f"CA certificate:   {ca_dir / CA_CERT_FILE}")
    print(f"  subject:        {ca_cert.subject.rfc4514_string()}")
    print(f"  key type:       {describe_key_type(ca_cert.public_key())}")
    print(f"  SHA-256:        {_colon_hex(fingerprint_sha256(ca_cert))}")
    print(f"  validity:       {_validity(ca_cert)}")
    print(f"  key file:       {_key_file_state(ca_dir / CA_KEY_FILE)}")
    kdf = key_file_kdf(ca_dir / CA_KEY_FILE)
    if kdf != "scrypt":
        print(
            f"  key protection: {kdf} — written before scrypt; re-encrypt it: move ca/ away and `station ca import` it"
        )
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
