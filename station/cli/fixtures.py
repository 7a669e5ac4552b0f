"""`station fixtures …` — the fixtures and their host-key inventory.

station fixtures list
station fixtures pin NAME [--expect SHA256:…] [--yes]
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

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
        "fixtures",
        help="list fixtures and pin the SSH host key each one's board answers with",
        description="Fixtures and their host-key inventory.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="fixtures_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="every fixture, where it is defined and its host key")
    listing.set_defaults(handler=_list)
    pin = commands.add_parser(
        "pin",
        help="record the host key a fixture's board answers with (after you checked it)",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pin.add_argument("name", help="fixture name, e.g. sim-01")
    pin.add_argument(
        "--expect",
        metavar="FINGERPRINT",
        help="pin only if the board shows this fingerprint (as read on its console)",
    )
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
    from station.cli.served import running_service

    client = running_service(args)
    if client is not None:
        with client:  # the station service reads the home it owns
            lines = client.call("fixtures_list")["lines"]
    else:
        station = open_station(args.home)
        try:
            lines = fixture_lines(station)
        finally:
            station.close()
    for line in lines:
        print(line)
    return 0


def fixture_lines(station: StationContext) -> list[str]:
    """What `station fixtures list` prints."""
    fixtures = _known(station)
    if not fixtures:
        return ["no fixtures: add [[fixture]] tables to station.toml (or start the simulator)"]
    rows = [["NAME", "DEVICE", "DEFINED IN", "HOST KEY"]]
    rows += [
        [k.fixture.name, k.fixture.device, str(k.file or k.origin), k.fixture.host_key or "(not pinned)"]
        for k in fixtures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.append(f"first contact with a board not in the inventory: {station.config.identity.first_contact}")
    return lines


def _pin(args: argparse.Namespace) -> int:
    from station.cli.served import running_service

    client = running_service(args)
    if client is not None:
        with client:
            return _served_pin(client, args)
    station = open_station(args.home)
    try:
        known, key_type, fingerprint = fixture_key(station, args.name)
        if not _confirmed(
            args,
            device=known.fixture.device,
            pinned=known.fixture.host_key,
            key_type=key_type,
            fingerprint=fingerprint,
            file=str(known.file),
        ):
            return 0 if known.fixture.host_key == fingerprint else 1
        print(pin_fixture_key(station, known, key_type, fingerprint, by=args.by or getpass.getuser()))
        return 0
    finally:
        station.close()


def _served_pin(client: Any, args: argparse.Namespace) -> int:
    """The station service (which owns the fixture files) reads the board's key and, once confirmed here, pins
    it — only if the board still answers with the key shown."""
    found = client.call("fixtures", {"action": "fetch", "name": args.name})
    if not _confirmed(
        args,
        device=found["device"],
        pinned=found["pinned"],
        key_type=found["key_type"],
        fingerprint=found["fingerprint"],
        file=found["file"],
    ):
        return 0 if found["pinned"] == found["fingerprint"] else 1
    done = client.call(
        "fixtures", {"action": "pin", "name": args.name, "fingerprint": found["fingerprint"], "by": args.by}
    )
    print(done["message"])
    return 0


def fixture_key(station: StationContext, name: str) -> tuple[KnownFixture, str, str]:
    """The fixture ``name`` and the host key (type, fingerprint) its board answers with now."""
    known = find_fixture(_known(station), name=name, device="")
    if known is None:
        raise StationError(f"there is no fixture named {name!r} — see `station fixtures list`")
    if known.file is None:
        raise StationError(f"fixture {name} is not defined in a file the station can write")
    address = DeviceAddress.parse(known.fixture.device)
    if address.scheme != "ssh":
        raise StationError(
            f"fixture {name} is a serial console ({known.fixture.device}): it has no SSH host key to pin; "
            "the board's SoC id identifies it"
        )
    key_type, fingerprint = fetch_host_key(address, Deadline(PIN_TIMEOUT_S, what="host-key exchange"))
    return known, key_type, fingerprint


def _confirmed(
    args: argparse.Namespace, *, device: str, pinned: str | None, key_type: str, fingerprint: str, file: str
) -> bool:
    """Whether to pin: shows the key, then --expect, --yes or a question on the terminal."""
    print(f"fixture {args.name} ({device}) answers with host key {key_type} {fingerprint}")
    print(f"the inventory ({file}) holds: {pinned or 'no key'}")
    if pinned == fingerprint:
        print("already pinned: nothing to do")
        return False
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
        answer = input(
            "Is this the key the board's console shows (ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub)? Pin it [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing was pinned")
            return False
    return True


def pin_fixture_key(
    station: StationContext, known: KnownFixture, key_type: str, fingerprint: str, *, by: str
) -> str:
    """Write ``fingerprint`` as the fixture's host_key and record the pin; the words to print."""
    assert known.file is not None
    previous = set_fixture_host_key(known.file, known.fixture.name, fingerprint)
    IdentityLog(station.audit).record_host_key_pin(
        fixture=known.fixture.name,
        device=known.fixture.device,
        key_type=key_type,
        fingerprint=fingerprint,
        previous=previous,
        file=str(known.file),
        by=by,
    )
    return (
        f"pinned: fixture {known.fixture.name} now expects {fingerprint} (written to {known.file}, recorded in "
        "the audit log)"
    )
