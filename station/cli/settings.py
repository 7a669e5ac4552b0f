"""`station settings …` — an administrator's settings of the station, through the station service.

* ``station settings production`` says whether the station is in production mode;
* ``station settings production on|off`` turns it on or off (``[station] production`` in station.toml).

With a station service running (a line PC), the service — which owns the home — makes the change and records
which OS account asked; only administrators (welma-admin, root) may.  Without one, the command edits the
home's station.toml itself.
"""

from __future__ import annotations

import argparse

from station.home import StationHome

EXAMPLE = """\
examples:
  station settings production          is the station in production mode?
  station settings production on       refuse demo PINs, require work orders, ignore test hooks
  station settings production off      back to demo mode (training, make run)
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "settings",
        help="administrator settings of the station (production mode)",
        description="Administrator settings of the station.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="settings_action", metavar="SETTING", required=True)
    production = actions.add_parser(
        "production",
        help="show, or turn on or off, production mode ([station] production)",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    production.add_argument("state", nargs="?", choices=("on", "off"), help="on or off (none: show it)")
    production.set_defaults(handler=run_production)


def run_production(args: argparse.Namespace) -> int:
    from station.cli.served import running_service

    wanted = None if args.state is None else args.state == "on"
    client = running_service(args)
    if client is not None:
        with client:
            answer = client.call("production_mode", {"on": wanted})
        now, changed = bool(answer["production"]), bool(answer["changed"])
    else:
        from station.config import load_config
        from station.station_settings import set_production

        home = StationHome.resolve(args.home)
        before = load_config(home.config_file).production
        if wanted is not None:
            set_production(home.config_file, wanted)
        now, changed = load_config(home.config_file).production, wanted is not None and wanted != before
    state = "on" if now else "off"
    if args.state is None:
        print(f"production mode is {state}")
    elif changed:
        print(f"production mode is now {state} ([station] production in station.toml)")
    else:
        print(f"production mode was already {state}: nothing changed")
    return 0
