"""`station ca …` — create, import, inspect the station's CA and publish its CRL; `station ca root …` for the offline root.

Two kinds of station CA:

* in a PKCS#11 token (production): `station ca init --pkcs11-module … --token-label …` makes the key in the
  token and writes a CSR; the offline root (`station ca root init`, `station ca root sign-station`) certifies
  it; `station ca import-chain` installs the chain.  The token PIN comes from a prompt or from the file named
  by ``[ca] pin_file`` in station.toml (mode 0600/0400) — never from an environment variable;
* in an encrypted file (demos, `--key-storage file`, the default without a module): self-signed, as before.
  The file CA's passphrase comes from ``STATION_CA_PASSPHRASE`` or is asked for on the terminal.

Next to a station service (a line PC), `init`, `import`, `import-chain` and `show` run IN the service, on the
home it owns: an administrator's request (refused, and recorded, for anyone else, before any prompt), with the
inputs' content sent by this command (the service cannot read the caller's files) and the passphrase or PIN
typed here and sent over the socket.  Without a service they work on the home themselves, as before.  `crl` is
in :mod:`station.cli.ca_crl`, the offline root's commands in :mod:`station.cli.ca_root` (never served: a root
is kept off the line), what the commands do to a home in :mod:`station.cli.ca_home`.

Secrets are never printed, logged or put on a command line (where ``ps`` and shell history would show them).
"""

from __future__ import annotations

import argparse
import getpass
import os
import stat
import warnings
from pathlib import Path
from typing import Any

# audit_trust and revoked_from_audit are read from here by `station audit verify` and the service's CRL.
from station.cli.ca_home import audit_trust as audit_trust
from station.cli.ca_home import (
    check_key_type,
    import_ca,
    import_chain,
    init_file_ca,
    init_token_ca,
    show_lines,
)
from station.cli.ca_home import revoked_from_audit as revoked_from_audit
from station.cli.served import read_input, running_service
from station.config import CaSettings, load_ca_settings
from station.errors import StationError
from station.home import StationHome
from station.pki import (
    KEY_TYPES,
    MIN_PASSPHRASE_LENGTH,
    STATION_CSR_FILE,
    CertificateAuthority,
    refuse_existing_ca,
    write_file_atomically,
)
from station.pki.token import TOKEN_FILE, TOKEN_KEY_TYPES, TokenSettings

PASSPHRASE_ENV = "STATION_CA_PASSPHRASE"
# The most a PEM input file (key, certificate, chain, CSR) may hold.
INPUT_LIMIT = 1024 * 1024

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} days is not possible; give at least 1")
    return value


# long: the `station ca` argument parser, one subcommand after another as `station ca --help` lists them
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
    init.add_argument(
        "--csr-out",
        type=Path,
        metavar="FILE",
        help="with a token and a station service: where to write your copy of the CSR (default: ./station-ca.csr)",
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

    from station.cli.ca_root import register_root

    register_root(commands)

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

    from station.cli.ca_crl import register_crl

    register_crl(commands)


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
    client = running_service(args)
    if client is not None:
        with client:
            return _served_init(client, args)
    home = StationHome.resolve(args.home).create()
    refuse_existing_ca(home.ca_dir)  # before asking for a passphrase that would be wasted
    token = _token_settings(args, home)
    if token is not None:
        check_key_type(args.key_type, token=True)
        lines, _csr = init_token_ca(
            home,
            token,
            pin=read_token_pin(home, token.token_label),
            key_type=args.key_type,
            common_name=args.common_name,
        )
        _say(lines)
        _next_after_token_init(home.ca_dir / STATION_CSR_FILE)
        return 0
    check_key_type(args.key_type, token=False)
    _say(
        init_file_ca(
            home,
            passphrase=read_passphrase(new=True),
            key_type=args.key_type,
            common_name=args.common_name,
            validity_days=args.validity_days,
        )
    )
    return 0


def _served_init(client: Any, args: argparse.Namespace) -> int:
    """`station ca init` made by the station service in its home (an administrator's request, recorded); the
    passphrase or PIN is asked for here and sent over the socket, never kept."""
    token = _token_settings(args, None)
    request: dict[str, Any] = {
        "action": "init",
        "key_type": args.key_type,
        "common_name": args.common_name,
        "validity_days": args.validity_days,
    }
    if token is not None:
        csr_out: Path = args.csr_out or Path(STATION_CSR_FILE)
        if csr_out.exists():
            raise StationError(f"{csr_out} already exists — choose --csr-out FILE; nothing was made.")
        request.update(
            pkcs11_module=str(token.module),
            token_label=token.token_label,
            key_label=args.key_label or "station-ca",
            softhsm2_conf=str(token.softhsm2_conf) if token.softhsm2_conf else None,
        )
    # Refused (and recorded) for anyone but an administrator, and a CA already there is said, before any prompt.
    checked = client.call("ca", {**request, "check": True})
    if token is not None:
        check_key_type(args.key_type, token=True)
        if not checked["pin_file"]:
            request["pin"] = _prompt(
                f"PIN of token {token.token_label!r}: ",
                what=f"PIN of token {token.token_label!r}",
                how="set [ca] pin_file in the service's station.toml to a file with mode 0600 holding it",
            )
        answer = client.call("ca", request)
        _say(answer["lines"])
        csr = _write_csr_copy(args, answer["csr_pem"].encode("ascii"))
        _next_after_token_init(csr)
        return 0
    check_key_type(args.key_type, token=False)
    request["secret"] = _served_passphrase(bool(checked["production"]), new=True).decode("utf-8")
    answer = client.call("ca", request)
    _say(answer["lines"])
    if answer.get("unlocked"):
        print("The station service has it unlocked; units can run.")
    return 0


def _next_after_token_init(csr: Path) -> None:
    print(
        "\nNext: take that CSR to the offline root and run there\n"
        f"  station ca root sign-station --csr {csr.name} --name LINE-NAME --out CHAIN.pem\n"
        "then bring CHAIN.pem back and run\n  station ca import-chain CHAIN.pem"
    )


def _write_csr_copy(args: argparse.Namespace, pem: bytes) -> Path:
    """The CSR the service made, copied where this user can take it to the offline root (the home is not theirs
    to read): --csr-out, else station-ca.csr in the current directory; an existing file is never replaced."""
    out: Path = args.csr_out or Path(STATION_CSR_FILE)
    try:
        write_file_atomically(out, pem, mode=0o644, replace=False)
    except FileExistsError:
        raise StationError(
            f"{out} appeared meanwhile and was not replaced — the key is in the token and its CSR in the station "
            f"home ({STATION_CSR_FILE} under ca/): ask whoever runs the service for a copy"
        ) from None
    except OSError as exc:
        raise StationError(f"Could not write the CSR to {out} ({exc.strerror}) — choose --csr-out.") from None
    print(f"A copy of the certificate request for you: {out}")
    return out


def _served_passphrase(production: bool, *, new: bool) -> bytes:
    """A CA passphrase for the service: asked for (twice when ``new``), or $STATION_CA_PASSPHRASE outside
    production mode; sent over the socket only."""
    if production and os.environ.get(PASSPHRASE_ENV):
        raise StationError(
            f"In production mode the CA passphrase is never taken from {PASSPHRASE_ENV} — "
            "unset it and run the command in a terminal"
        )
    return read_passphrase(new=new)


def run_show(args: argparse.Namespace) -> int:
    client = running_service(args)
    if client is not None:
        with client:
            _say(client.call("ca", {"action": "show"})["lines"])
        return 0
    _say(show_lines(StationHome.resolve(args.home)))
    return 0


def run_import_chain(args: argparse.Namespace) -> int:
    chain_pem = _read_input(args.chain, "chain")
    client = running_service(args)
    if client is not None:
        with client:
            answer = client.call(
                "ca", {"action": "import_chain", "chain_pem": chain_pem.decode("ascii", "replace")}
            )
        _say(answer["lines"])
        if answer.get("unlocked"):
            print("The station service has it unlocked (the token's [ca] pin_file); units can run.")
        else:
            print("Then unlock it in the station service: station ca unlock (asks for the token's PIN).")
        return 0
    _say(import_chain(StationHome.resolve(args.home), chain_pem))
    return 0


def run_import(args: argparse.Namespace) -> int:
    client = running_service(args)
    if client is None:
        key_password, key_pem, cert_pem = _import_inputs(args)
        home = StationHome.resolve(args.home).create()
        refuse_existing_ca(home.ca_dir)
        lines = import_ca(
            home,
            key_pem=key_pem,
            cert_pem=cert_pem,
            key_password=key_password,
            passphrase=read_passphrase(new=True),
        )
    else:
        with client:
            # Refused (and recorded) for anyone but an administrator, a CA already there said, before anything.
            checked = client.call("ca", {"action": "import", "check": True})
            key_password, key_pem, cert_pem = _import_inputs(args)
            request = {
                "action": "import",
                "key_pem": key_pem.decode("ascii", "replace"),
                "cert_pem": cert_pem.decode("ascii", "replace"),
                "key_password": key_password.decode("utf-8") if key_password is not None else None,
                "secret": _served_passphrase(bool(checked["production"]), new=True).decode("utf-8"),
            }
            answer = client.call("ca", request)
        lines = answer["lines"]
        if answer.get("unlocked"):
            lines = [*lines, "The station service has it unlocked; units can run."]
    print(f"{lines[0]} (the files {args.key} and {args.cert} are unchanged)")
    _say(lines[1:])
    return 0


def _import_inputs(args: argparse.Namespace) -> tuple[bytes | None, bytes, bytes]:
    """(the key file's password, the key, the certificate) of `station ca import`, read by the caller."""
    key_password: bytes | None = None
    if args.key_password_env:
        secret = os.environ.get(args.key_password_env)
        if secret is None:
            raise StationError(
                f"--key-password-env names {args.key_password_env}, but it is not set — "
                f"export the key file's password in {args.key_password_env} and run again."
            )
        key_password = secret.encode("utf-8")
    return key_password, _read_input(args.key, "CA key"), _read_input(args.cert, "CA certificate")


def _say(lines: list[str]) -> None:
    for line in lines:
        print(line)


# --- output ------------------------------------------------------------------------------------


def _read_input(path: Path, what: str) -> bytes:
    """A PEM file a command reads (a key, a certificate, a chain, a CSR): at most INPUT_LIMIT bytes."""
    return read_input(path, what, limit=INPUT_LIMIT)
