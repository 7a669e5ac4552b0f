"""`station admin …` — what an administrator does at the station (set the admin PIN)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from station.admin import check_new_pin, pin_is_set, set_pin
from station.errors import StationError
from station.home import StationHome

PIN_ENV = "STATION_ADMIN_PIN"

EXAMPLE = """\
examples:
  station admin set-pin                     asks for the new PIN twice
  STATION_ADMIN_PIN=… station admin set-pin for scripted station set-up

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


def _read_new_pin() -> str:
    value = os.environ.get(PIN_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise StationError(f"the new admin PIN is needed — set {PIN_ENV} or run the command in a terminal")
    first = getpass.getpass("New admin PIN: ")
    check_new_pin(first)  # say what is wrong before asking a second time
    if getpass.getpass("New admin PIN (again): ") != first:
        raise StationError("the two PINs differ — run the command again")
    return first


def run_set_pin(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home)
    replacing = pin_is_set(home)
    set_pin(home, _read_new_pin())
    print(f"admin PIN {'changed' if replacing else 'set'} ({home.root / 'admin.pin'})")
    return 0
