"""The administrator's CA requests: `station ca init | import | import-chain | show`, made in the service's home.

The service cannot read the caller's files, so the command sends what they hold (a PEM key, certificate or chain,
bounded by the frame size); a new passphrase, a token PIN or a key file's password come as secret arguments
(:data:`station.service.ops.SECRET_ARGS`: never recorded or logged) and are dropped once used.  A file CA made
or imported here is unlocked at once with the passphrase just given (the service needs it anyway); a token CA
once its chain is installed, when the service has the token's ``[ca] pin_file``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.errors import StationError
from station.service.connection import Connection, Handler, bind

if TYPE_CHECKING:
    from station.service.server import StationService

# The most one PEM input (key, certificate, chain) may hold.
PEM_LIMIT = 1024 * 1024


def handlers(service: StationService) -> dict[str, Handler]:
    """The CA requests: op name → handler."""
    return {"ca": bind(service, ca)}


def ca(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    action = args.get("action")
    if action == "show":
        from station.cli.ca_home import show_lines

        return {"lines": show_lines(service.home)}
    if action == "init":
        return _init(service, args)
    if action == "import":
        return _import(service, args)
    if action == "import_chain":
        return _import_chain(service, args)
    raise StationError("a ca request is init, import, import_chain or show")


def _pem(args: dict[str, Any], key: str, what: str) -> bytes:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise StationError(f"the {what} is missing from the request — give its file to the command")
    data = value.encode("utf-8")
    if len(data) > PEM_LIMIT:
        raise StationError(f"the {what} is over {PEM_LIMIT // 1024} KiB — a PEM {what} is far smaller")
    return data


def _secret(args: dict[str, Any], key: str, what: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise StationError(f"the {what} is needed")
    return value


def _checked(service: StationService) -> dict[str, Any]:
    """A CA may be made here: none exists (said before the caller types a secret)."""
    from station.config import load_ca_settings
    from station.pki import refuse_existing_ca

    refuse_existing_ca(service.home.ca_dir)
    return {
        "pin_file": load_ca_settings(service.home.config_file).pin_file is not None,
        "production": service.config.production,
    }


def _init(service: StationService, args: dict[str, Any]) -> Any:
    from station.cli.ca_home import check_key_type, init_file_ca, init_token_ca

    home = service.home
    token = _token(service, args)
    key_type = str(args.get("key_type") or "ec-p256")
    checked = _checked(service)
    check_key_type(key_type, token=token is not None)
    if args.get("check"):
        return checked
    common_name = str(args.get("common_name") or "Welma Station CA")
    if token is not None:
        from station.cli.ca import read_secret_file
        from station.config import load_ca_settings

        pin_file = load_ca_settings(home.config_file).pin_file
        pin = args.get("pin")
        if not isinstance(pin, str) or not pin:
            if pin_file is None:
                raise StationError(
                    "the token's user PIN is needed (or [ca] pin_file in the service's station.toml)"
                )
            pin = read_secret_file(pin_file, "token PIN")
        lines, csr = init_token_ca(home, token, pin=pin, key_type=key_type, common_name=common_name)
        del pin
        return {"lines": lines, "csr_pem": csr.decode("ascii")}
    secret = _secret(args, "secret", "new CA passphrase")
    lines = init_file_ca(
        home,
        passphrase=secret.encode("utf-8"),
        key_type=key_type,
        common_name=common_name,
        validity_days=int(args.get("validity_days") or 3650),
    )
    return {"lines": lines, "unlocked": _unlock(service, secret)}


def _token(service: StationService, args: dict[str, Any]) -> Any:
    """The token a CA key is made in (None: a file CA), from the request's module, token and key labels."""
    from station.pki.token import TokenSettings

    module, label = args.get("pkcs11_module"), args.get("token_label")
    if not module and not label:
        return None
    if not module or not label:
        raise StationError("A key in a token needs --pkcs11-module LIB and --token-label LABEL.")
    conf = Path(str(args["softhsm2_conf"])) if args.get("softhsm2_conf") else None
    if conf is None and (service.home.root / "softhsm2.conf").exists():
        conf = service.home.root / "softhsm2.conf"  # a SoftHSM2 token directory private to the station home
    return TokenSettings(
        module=Path(str(module)),
        token_label=str(label),
        key_label=str(args.get("key_label") or "station-ca"),
        softhsm2_conf=conf,
    )


def _import(service: StationService, args: dict[str, Any]) -> Any:
    from station.cli.ca_home import import_ca

    checked = _checked(service)
    if args.get("check"):
        return checked
    key_pem = _pem(args, "key_pem", "CA key")
    cert_pem = _pem(args, "cert_pem", "CA certificate")
    password = args.get("key_password")
    if password is not None and not isinstance(password, str):
        raise StationError("the key file's password must be text")
    secret = _secret(args, "secret", "new CA passphrase")
    lines = import_ca(
        service.home,
        key_pem=key_pem,
        cert_pem=cert_pem,
        key_password=password.encode("utf-8") if password is not None else None,
        passphrase=secret.encode("utf-8"),
    )
    return {"lines": lines, "unlocked": _unlock(service, secret)}


def _import_chain(service: StationService, args: dict[str, Any]) -> Any:
    from station.cli.ca_home import import_chain

    lines = import_chain(service.home, _pem(args, "chain_pem", "certificate chain"))
    service._unlock_from_credentials(None)  # a token whose [ca] pin_file the service reads
    return {"lines": lines, "unlocked": service.scheduler is not None}


def _unlock(service: StationService, secret: str) -> bool:
    """The CA just made or imported, unlocked in the service with the passphrase just given."""
    try:
        service.unlock(secret)
    except StationError as exc:
        print(f"station service: the new CA stays locked: {exc}", file=sys.stderr, flush=True)
        return False
    return True
