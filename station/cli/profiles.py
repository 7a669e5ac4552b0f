"""`station profiles …` — the device profiles of the station (administrator), through the station service.

* ``station profiles list`` — every profile the station can use, and whether it is shipped or the station's own;
* ``station profiles show NAME`` — a profile's TOML, as the station uses it;
* ``station profiles install FILE [--name NAME] [--replace]`` — check a profile and install it in the station
  home (HOME/profiles/NAME.toml); a profile that does not load (unknown table or key, bad value) is refused
  with its line, and nothing is written.

The service owns the home: it checks the caller is an administrator (welma-admin, root), records the request
(the profile's size and SHA-256, not its text), and writes the file.  Outside production mode, with no service
running, one is started for this user, as for every served command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from station.errors import StationError

EXAMPLE = """\
examples:
  station profiles list
  station profiles show welma-optee
  station profiles install line3-board.toml                 as profile "line3-board"
  station profiles install new.toml --name welma-optee --replace
                                                            the station's own copy, used instead of the shipped one
"""

# The most a profile file may hold (as the service accepts it).
PROFILE_LIMIT = 256 * 1024


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "profiles",
        help="list, show or install device profiles (administrator)",
        description="The station's device profiles, through the station service.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="profiles_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every profile the station can use")
    listing.set_defaults(handler=run_list)
    show = actions.add_parser("show", help="a profile's TOML")
    show.add_argument("name", help="the profile's name")
    show.set_defaults(handler=run_show)
    install = actions.add_parser(
        "install",
        help="check a profile file and install it in the station home",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    install.add_argument("file", type=Path, metavar="FILE", help="the profile (TOML)")
    install.add_argument("--name", help="the profile's name (default: the file's name without .toml)")
    install.add_argument(
        "--replace", action="store_true", help="replace the station's own profile of that name, if it has one"
    )
    install.set_defaults(handler=run_install)


def run_list(args: argparse.Namespace) -> int:
    from station.cli.serve import service

    with service(args) as client:
        answer = client.call("profiles", {"action": "list"})
    for entry in answer["profiles"]:
        print(f"{entry['name']:<32} {entry['source']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from station.cli.serve import service

    with service(args) as client:
        answer = client.call("profiles", {"action": "show", "name": args.name})
    print(f"# {answer['name']} ({answer['source']})")
    print(answer["text"], end="" if answer["text"].endswith("\n") else "\n")
    return 0


def run_install(args: argparse.Namespace) -> int:
    from station.cli.serve import service
    from station.cli.served import read_input

    path: Path = args.file
    data = read_input(path, "device profile", limit=PROFILE_LIMIT)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StationError(f"{path} is not UTF-8 text — save the profile as UTF-8.") from None
    name = args.name or path.name.removesuffix(".toml")
    with service(args) as client:
        answer = client.call(
            "profiles",
            {
                "action": "install",
                "name": name,
                "profile_text": text,
                "source_name": str(path),
                "replace": args.replace,
            },
        )
    what = "replaced" if answer["replaced"] else "installed"
    print(
        f"Profile {answer['name']!r} {what}: {answer['path']} (serials matching {answer['serial_pattern']})."
    )
    if answer["overrides_shipped"]:
        print(f"The station now uses it instead of the shipped profile {answer['name']!r}.")
    return 0
