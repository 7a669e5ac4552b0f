"""`station fixtures …` — the fixtures and their host-key inventory.

station fixtures list
station fixtures pin NAME [--expect SHA256:…] [--yes]
"""

from __future__ import annotations

import argparse
import getpass
import sys

from station.admin import load_settings
from station.cli.context import StationContext, open_station
from station.errors import StationError
from station.identity import KnownFixture, find_fixture, known_fixtures, set_fixture_host_key
from station.identity_log import IdentityLog
from station.transport import Deadline, DeviceAddress
from station.transport.ssh import fetch_host_key

PIN_TIMEOUT_S = 15.0

EXAMPLE = """\
examples:
  station fixtures list
  station fixtures pin sim-01
  station fixtures pin bench-3 --expect SHA256:2SLi1o9S94Q3WfxQixtyVTXFM4LPh5zxGdQoqhl4dsI --yes

`pin` connects to the fixture's board (key exchange only: no login, no command), shows the SSH host
key it answers with and, once you confirm, writes it as the fixture's host_key in the file that defines
the fixture (station.toml, the admin's fixtures file or the simulator's) and records the pin in the
audit log.  Check the key first on the board's own console:
    ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fixtures", help="list fixtures and pin the SSH host key each one's board answers with",
        description="Fixtures and their host-key inventory.", epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="fixtures_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="every fixture, where it is defined and its host key")
    listing.set_defaults(handler=_list)
    pin = commands.add_parser(
        "pin", help="record the host key a fixture's board answers with (after you checked it)",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pin.add_argument("name", help="fixture name, e.g. sim-01")
    pin.add_argument("--expect", metavar="FINGERPRINT",
                     help="pin only if the board shows this fingerprint (as read on its console)")
    pin.add_argument("--yes", action="store_true", help="do not ask: the key was checked")
    pin.add_argument("--by", help="who pins (default: the login name)")
    pin.set_defaults(handler=_pin)


def _known(station: StationContext) -> list[KnownFixture]:
    try:
        settings_file = load_settings(station.home).fixtures_file
    except StationError:
        settings_file = None
    return known_fixtures(station.home.root, station.config, settings_file=settings_file)


def _list(args: argparse.Namespace) -> int:
    station = open_station(args.home)
    try:
        fixtures = _known(station)
        if not fixtures:
            print("no fixtures: add [[fixture]] tables to station.toml (or start the simulator)")
            return 0
        rows = [["NAME", "DEVICE", "DEFINED IN", "HOST KEY"]]
        rows += [[k.fixture.name, k.fixture.device, str(k.file or k.origin), k.fixture.host_key or "(not pinned)"]
                 for k in fixtures]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        print(f"first contact with a board not in the inventory: {station.config.identity.first_contact}")
        return 0
    finally:
        station.close()


def _pin(args: argparse.Namespace) -> int:
    station = open_station(args.home)
    try:
        known = find_fixture(_known(station), name=args.name, device="")
        if known is None:
            raise StationError(f"there is no fixture named {args.name!r} — see `station fixtures list`")
        if known.file is None:
            raise StationError(f"fixture {args.name} is not defined in a file the station can write")
        address = DeviceAddress.parse(known.fixture.device)
        if address.scheme != "ssh":
            raise StationError(
                f"fixture {args.name} is a serial console ({known.fixture.device}): it has no SSH host key to pin; "
                "the board's SoC id identifies it"
            )
        key_type, fingerprint = fetch_host_key(address, Deadline(PIN_TIMEOUT_S, what="host-key exchange"))
        print(f"fixture {args.name} ({known.fixture.device}) answers with host key {key_type} {fingerprint}")
        print(f"the inventory ({known.file}) holds: {known.fixture.host_key or 'no key'}")
        if known.fixture.host_key == fingerprint:
            print("already pinned: nothing to do")
            return 0
        if args.expect and args.expect != fingerprint:
            raise StationError(
                f"the board shows {fingerprint}, not the {args.expect} you read on its console — nothing was pinned; "
                "another machine may be answering on this fixture's network: check its cabling"
            )
        if not args.yes and not args.expect:
            if not sys.stdin.isatty():
                raise StationError(
                    "nothing was pinned: check the key on the board's console (ssh-keygen -lf "
                    "/etc/ssh/ssh_host_ed25519_key.pub), then run again with --yes or --expect FINGERPRINT"
                )
            answer = input("Is this the key the board's console shows (ssh-keygen -lf "
                           "/etc/ssh/ssh_host_ed25519_key.pub)? Pin it [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing was pinned")
                return 1
        previous = set_fixture_host_key(known.file, args.name, fingerprint)
        IdentityLog(station.audit).record_host_key_pin(
            fixture=args.name, device=known.fixture.device, key_type=key_type, fingerprint=fingerprint,
            previous=previous, file=str(known.file), by=args.by or getpass.getuser(),
        )
        print(f"pinned: fixture {args.name} now expects {fingerprint} (written to {known.file}, recorded in the "
              "audit log)")
        return 0
    finally:
        station.close()
