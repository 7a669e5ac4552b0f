"""`station admin …` — what an administrator does at the station (set the admin PIN).

The admin PIN is one PIN shared by whoever knows it, so it is a demo-mode option only: production mode
refuses it (people sign in with their own credentials, `station people`).  Replacing a PIN that is set
needs the current one, unless the command is run by an administrator account (root or a member of the
welma-admin group).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from station.admin import check_new_pin, pin_is_set, set_pin, verify_pin
from station.audit import AuditLog
from station.audit.people import record_people_event
from station.config import load_config
from station.errors import StationError
from station.home import StationHome
from station.people import Actor, PeopleAction
from station.roles import Role

PIN_ENV = "STATION_ADMIN_PIN"

EXAMPLE = """\
examples:
  station admin set-pin                     asks for the new PIN twice
  STATION_ADMIN_PIN=… station admin set-pin for scripted station set-up
  printf '%s\n' OLD NEW | station admin set-pin   without a terminal: the current PIN, then the new one

Replacing a PIN needs the current one unless you are root or in the welma-admin group.  Production
mode refuses the shared admin PIN: enrol people instead (station people add NAME --role admin).
The PIN unlocks the technician screen's settings (profile, fixtures file, auto-start, font, label).
It is stored hashed (PBKDF2-HMAC-SHA256, salted) in HOME/admin.pin, readable by this user only.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "admin",
        help="administrator tasks (admin PIN)",
        description="Administrator tasks at the station.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    set_pin_parser = commands.add_parser(
        "set-pin",
        help="set or change the admin PIN that guards the GUI's settings",
        description="Set the admin PIN (asked twice, or taken from STATION_ADMIN_PIN).",
        epilog="example:\n  station admin set-pin          asks for the new PIN twice",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    set_pin_parser.set_defaults(handler=run_set_pin)


def _stdin_line(what: str) -> str:
    """One line of standard input (not a terminal): a secret never travels in argv."""
    try:
        line = sys.stdin.readline()
    except OSError:
        line = ""
    if not line.strip():
        raise StationError(
            f"{what} is needed — set {PIN_ENV} (the new PIN), give it on standard input, or run the "
            "command in a terminal"
        )
    return line.rstrip("\r\n")


def _read_current_pin() -> str:
    if not sys.stdin.isatty():
        return _stdin_line("the current admin PIN")
    return getpass.getpass("Current admin PIN: ")


def _read_new_pin() -> str:
    value = os.environ.get(PIN_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        return _stdin_line("the new admin PIN")
    first = getpass.getpass("New admin PIN: ")
    check_new_pin(first)  # say what is wrong before asking a second time
    if getpass.getpass("New admin PIN (again): ") != first:
        raise StationError("the two PINs differ — run the command again")
    return first


def run_set_pin(args: argparse.Namespace) -> int:
    from station.cli.served import running_service

    client = running_service(args)
    if client is not None:
        # The station service owns the home: an administrator account's command sends the new PIN over the
        # socket (never in argv); others are refused by the service, which records it.
        with client:
            client.call("authorize", {"op": "admin_set_pin"})
            if client.call("whoami")["production"]:
                client.call("admin_set_pin", {})  # the service says why production mode refuses it
            answer = client.call("admin_set_pin", {"pin": _read_new_pin()})
        print(f"admin PIN {'changed' if answer['replaced'] else 'set'} ({answer['path']})")
        return 0
    home = StationHome.resolve(args.home)
    if load_config(home.config_file).production:
        raise StationError(
            "this station is in production mode, which refuses the shared admin PIN (a demo-mode option) — enrol "
            "each quality lead and administrator with their own credential: station people add NAME --role "
            "quality|admin"
        )
    replacing = pin_is_set(home)
    actor = Actor.for_account(os.getuid())
    how = "first PIN"
    if replacing:
        how = "by an administrator account"
        if not actor.administrator:
            if not verify_pin(home, _read_current_pin()):
                raise StationError(
                    "that is not the current admin PIN — nothing changed. Type the current PIN, or have an "
                    f"administrator (root or a member of {Role.ADMIN.value}) run the command"
                )
            how = "with the current PIN"
    set_pin(home, _read_new_pin())
    with AuditLog(home.audit_db) as audit:
        record_people_event(
            audit,
            action=PeopleAction.ADMIN_PIN_SET.value,
            person="",
            role=Role.ADMIN.value,
            by=actor.name,
            account=actor.account,
            detail=how,
        )
    print(f"admin PIN {'changed' if replacing else 'set'} ({home.root / 'admin.pin'})")
    return 0
