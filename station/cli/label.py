"""`station label print` — print (or reprint) a board's label on the line's label printer ([label] printer).

The label is made from what the audit log recorded for the board's passed unit; the printer's status is read
first; the attempt is recorded in the audit log as a print or a reprint, whichever it is.
"""

from __future__ import annotations

import argparse
import getpass

from station.errors import StationError

EPILOG = """\
examples:
  station label print --serial 202600000000001
  station label print --serial 202600000000001 --by "Q. Lead"

station.toml:
  [label]
  printer = "zpl://192.0.2.50:9100"        # or "ipp://printserver:631/printers/line3-zebra"
  stock = "62x29"                          # 62x29, 50x25 or 100x50
  print_on_pass = true
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "label",
        help="print a board's label on the line's label printer",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="label_command", metavar="ACTION", required=True)
    printing = actions.add_parser(
        "print",
        help="print (or reprint) the label of a board that passed",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    printing.add_argument("--serial", required=True, metavar="SERIAL", help="the board's serial number")
    printing.add_argument("--by", metavar="NAME", help="who prints it (default: your login name)")
    printing.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from station.cli.context import open_station
    from station.cli.served import running_service
    from station.line.labels import LabelDesk

    client = running_service(args)
    if client is not None:
        # The station service prints it (it owns the log and the printer settings) and records who asked.
        with client:
            answer = client.call("labels", {"serial": args.serial.strip(), "by": args.by})
        print(answer["message"])
        return 0 if answer["printed"] else 1

    station = open_station(args.home)
    try:
        unit = station.audit.find_unit(args.serial.strip())
        if unit is None:
            raise StationError(
                f"no unit of board {args.serial} is in the audit log — check the serial (station units)"
            )
        desk = LabelDesk(config=station.config, audit=station.audit)
        outcome = desk.print_unit(
            unit.id,
            by=(args.by or getpass.getuser()).strip(),
            reprint=bool(station.audit.label_prints(unit.id)),
        )
        print(outcome.message)
        return 0 if outcome.printed else 1
    finally:
        station.close()
