"""`station …` — the command line for every action of the station.

Each subcommand group lives in its own module below this package and exposes
``register(subparsers)``; this module only assembles them, so adding a command never means
editing another command's code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from station import __version__
from station.errors import StationError
from station.home import StationHome
from station.permissions import secure_home

# Modules under station/cli/ that provide commands, in the order `station --help` lists them.
COMMAND_MODULES = (
    "provision",
    "batch",
    "units",
    "order",
    "ca",
    "sim",
    "audit",
    "revoke",
    "label",
    "admin",
    "gui",
    "fixtures",
    "fleet",
    "people",
    "serve",
    "settings",
    "profiles",
)

EPILOG = """\
examples:
  station sim up --count 4                 boot four simulated Welma devices
  station ca init                          create the station's CA and TLS server certificate
  station provision --serial 202600000000001 --device ssh://root@127.0.0.2:2222
  station units                            list the most recent units
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="station",
        description="Welma provisioning station: enrol boards' secure-storage keys and certificates.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"station {__version__}")
    parser.add_argument(
        "--home",
        help="station home directory holding all state (default: $STATION_HOME or ~/.local/share/welma-station)",
    )
    parser.add_argument(
        "--socket",
        help="the station service's socket (default: $STATION_SOCKET, the system service's "
        "/run/welma-station/station.sock when no home is named, else HOME/run/station.sock)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"station.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"station.cli.{name}":
                continue  # that command group is not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        home = StationHome.resolve(getattr(args, "home", None))
        from station.cli.serve import guard

        guard(args)  # next to a station service, the service says whether this caller's role allows it
        if home.root.is_dir() and _owned(home):
            # Every command starts by making the home, the audit log and kept exports private again, in words.
            for change in secure_home(home):
                print(f"station: {change}", file=sys.stderr)
        return int(handler(args))
    except StationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _owned(home: StationHome) -> bool:
    """A home this user owns (a station service's home, owned by its account, is not this command's to fix)."""
    try:
        return home.root.stat().st_uid == os.geteuid()
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
