"""`station serve` (the station service) and `station abort`; the helpers every CLI client of the service uses."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from station.errors import StationError
from station.flow import FlowEvent
from station.home import StationHome

EXAMPLE = """\
examples:
  station serve                                   per-user service on the default home
  station --home /var/lib/welma-station serve --socket /run/welma-station/station.sock
                                                  what the systemd unit welma-station.service runs

The service is the one process that opens the station home (CA, audit log, keys) and runs units; the CLI
talks to it on its Unix socket.  Who may do what is decided by the caller's OS groups (welma-tech,
welma-quality, welma-admin; root and the service's own account are administrators) — see the README's
administrator guide.  The CA is unlocked once: from a credential file (--credential, or systemd's
LoadCredential=ca-passphrase:…), a token's [ca] pin_file, or `station ca unlock`.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the station service (owner of the home, runner of units)",
        description="Run the station service on a Unix socket.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--home", default=argparse.SUPPRESS, help="station home (default: as for every command)"
    )
    parser.add_argument(
        "--socket", default=argparse.SUPPRESS, help="the socket to serve (default: HOME/run/station.sock)"
    )
    parser.add_argument(
        "--credential",
        type=Path,
        help="a file (mode 0600, owned by the service) holding the CA passphrase or token PIN",
    )
    parser.add_argument("--log", type=Path, help="once serving, write output to this file (appended)")
    parser.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="end once no client is connected and no unit runs (how the CLI starts one)",
    )
    parser.set_defaults(handler=run_serve)

    abort = subparsers.add_parser(
        "abort",
        help="abort a board running in the station service (it ends failed and resumable)",
        description="Abort the running unit of a serial; the board can be resumed later with --resume.",
        epilog="example:\n  station abort --serial 202600000000001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    abort.add_argument("--serial", required=True, help="the board's serial")
    abort.set_defaults(handler=run_abort)


def run_serve(args: argparse.Namespace) -> int:
    from station.service.client import home_socket
    from station.service.server import ServiceRunning, serve

    home = StationHome.resolve(args.home).create()
    path = Path(args.socket) if getattr(args, "socket", None) else home_socket(home)
    try:
        return serve(home, path, exit_when_idle=args.exit_when_idle, credential=args.credential, log=args.log)
    except ServiceRunning as exc:
        print(f"station service: {exc}; nothing to do", file=sys.stderr)
        return 0


def run_abort(args: argparse.Namespace) -> int:
    with service(args, start=False) as client:
        result = client.call("abort", {"serial": args.serial})
    print(
        f"abort asked for serial {args.serial} (job {', '.join(map(str, result['aborted']))}): it ends failed and "
        "can be resumed with --resume"
    )
    return 0


# -- helpers for commands that are clients of the service ----------------------------------------------


def service(args: argparse.Namespace, *, start: bool = True) -> Any:
    """A connection to the service for this command's --home / --socket (started for this user if needed)."""
    from station.service.client import ServiceUnavailable, connect, find_socket

    client = connect(getattr(args, "home", None), getattr(args, "socket", None), start=start)
    if client is None:
        path, _system = find_socket(getattr(args, "home", None), getattr(args, "socket", None))
        raise ServiceUnavailable(
            f"no station service answers on {path} — start one (`station serve`, or "
            "`systemctl start welma-station` on a line PC)"
        )
    return client


def call_unlocking(client: Any, op: str, request: dict[str, Any]) -> Any:
    """``client.call(op, request)``; a locked CA is unlocked first when this caller may (the passphrase from
    $STATION_CA_PASSPHRASE outside production mode, else asked for) — it goes to the service over its socket."""
    from station.service.client import CaLockedError

    try:
        return client.call(op, request)
    except CaLockedError as locked:
        whoami = client.call("whoami")
        if "welma-admin" not in whoami["roles"]:
            raise
        secret = _ca_secret(locked.kind, production=bool(whoami["production"]))
        client.call("ca_unlock", {"secret": secret})
        return client.call(op, request)


def _ca_secret(kind: dict[str, Any], *, production: bool) -> str | None:
    from station.cli.ca import PASSPHRASE_ENV, _prompt, read_passphrase

    if kind.get("kind") == "token":
        label = kind.get("label")
        return _prompt(
            f"PIN of token {label!r}: ",
            what=f"PIN of token {label!r}",
            how="set [ca] pin_file in station.toml to a file with mode 0600 holding it",
        )
    if production:
        import os

        if os.environ.get(PASSPHRASE_ENV):
            raise StationError(
                f"In production mode the CA passphrase is never taken from {PASSPHRASE_ENV} — "
                "unset it and run `station ca unlock` in a terminal"
            )
    return read_passphrase(new=False).decode("utf-8")


def run_ca_unlock(args: argparse.Namespace) -> int:
    """`station ca unlock`: ask for the CA passphrase (or token PIN) and send it to the service."""
    with service(args, start=True) as client:
        client.call("authorize", {"op": "ca_unlock"})  # an administrator's: refused (and recorded) for others
        whoami = client.call("whoami")
        if whoami["ca_unlocked"]:
            print("the station's CA is already unlocked")
            return 0
        from station.pki.token import TOKEN_FILE

        home = StationHome.resolve(getattr(args, "home", None))
        try:
            token = (home.ca_dir / TOKEN_FILE).exists()
        except OSError:
            token = False
        kind: dict[str, Any] = {"kind": "token", "label": "station CA"} if token else {"kind": "file"}
        try:
            client.call("ca_unlock", {})  # a token whose PIN file the service reads
        except StationError:
            client.call("ca_unlock", {"secret": _ca_secret(kind, production=bool(whoami["production"]))})
    print("the station's CA is unlocked in the station service; units can run")
    return 0


def flow_event(record: dict[str, Any]) -> FlowEvent:
    """A FlowEvent back from its JSON record (station.cli.events.event_record)."""
    from station.engine.outcome import Ending, UnitOutcome

    names = {field.name for field in dataclasses.fields(FlowEvent)}
    values = {key: value for key, value in record.items() if key in names and key != "result"}
    result = record.get("result")
    if result:
        fields = {field.name for field in dataclasses.fields(UnitOutcome)}
        outcome = {key: value for key, value in result.items() if key in fields}
        outcome["kind"] = Ending(outcome["kind"])
        values["result"] = UnitOutcome(**outcome)
    return FlowEvent(**values)


# Commands that are served by the service itself (they ask it directly) or that are the service.
_SERVED = frozenset({"provision", "batch", "abort", "units", "revoke", "serve"})
# Actions served by the service itself (the command asks it directly when one runs).
_SERVED_ACTIONS = frozenset(
    {
        ("audit", "export"),
        ("ca", "crl"),
        ("audit", "verify"),
        ("audit", "backup"),
        ("admin", "set-pin"),
        ("settings", "production"),
        ("audit", "checkpoint"),
        ("fixtures", "list"),
        ("label", "print"),
        ("fixtures", "pin"),
        ("ca", "init"),
        ("ca", "import"),
        ("ca", "import-chain"),
        ("ca", "show"),
        ("profiles", "list"),
        ("profiles", "show"),
        ("profiles", "install"),
    }
)
# Actions that never touch a station home, so no service has a say: the offline root's (station.cli.ca_root).
_LOCAL_ACTIONS = frozenset({("ca", "root")})


def guard(args: argparse.Namespace) -> None:
    """Next to a running station service, a command the service does not serve yet is checked against the
    caller's role by the service (which records a refusal) before it runs here.  No service: nothing to ask."""
    from station.service.client import connect
    from station.service.ops import op_for_command

    command = getattr(args, "command", None)
    if not command or command in _SERVED:
        return
    action = getattr(args, f"{command}_action", None) or getattr(args, f"{command}_command", None)
    if (command == "ca" and action == "unlock") or (command, action) in _SERVED_ACTIONS | _LOCAL_ACTIONS:
        return
    op = op_for_command(command, action)
    if op is None:
        return
    try:
        client = connect(getattr(args, "home", None), getattr(args, "socket", None), start=False)
    except StationError:
        return
    if client is None:
        return
    with client:
        client.call("authorize", {"op": op.name, "command": " ".join(filter(None, (command, action)))})


IN_PROCESS_ENV = "STATION_IN_PROCESS"


def in_process(args: argparse.Namespace) -> bool:
    """Whether units run under this command instead of the service: STATION_IN_PROCESS=1, outside production
    mode only (the audit's crash-safety tests, debugging).  Such units end when the command ends."""
    import os

    if os.environ.get(IN_PROCESS_ENV) != "1":
        return False
    from station.config import load_config

    home = StationHome.resolve(getattr(args, "home", None))
    if load_config(home.config_file).production:
        raise StationError(
            f"{IN_PROCESS_ENV}=1 is refused in production mode: units run in the station service "
            "(systemctl start welma-station)"
        )
    print(
        f"station: {IN_PROCESS_ENV}=1: the units run in this process and end with it (no station service)",
        file=sys.stderr,
        flush=True,
    )
    return True
