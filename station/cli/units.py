"""`station units` — the most recent units from the audit log, newest first."""

from __future__ import annotations

import argparse
from datetime import datetime

from station.audit import UNIT_STATES, AuditLog, Unit, UnitFilter
from station.display import format_duration as _duration
from station.home import StationHome


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "units",
        help="list the most recent units (boards) and how they went",
        description="List units from the audit log, newest first.",
        epilog="examples:\n  station units\n  station units --serial 2026000 --result failed --limit 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="show at most N units (default 50)"
    )
    parser.add_argument("--serial", metavar="PREFIX", help="only boards whose serial starts with PREFIX")
    parser.add_argument("--result", choices=UNIT_STATES, help="only units in this state")
    parser.add_argument("--order", metavar="ID", help="only units counted in this work order")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home)
    if not home.audit_db.exists():
        print(f"No units recorded yet (no audit log at {home.audit_db}).")
        return 0
    with AuditLog(home.audit_db) as log:
        units = log.units_page(limit=args.limit, filters=UnitFilter(
            serial_prefix=args.serial, result=args.result, order=args.order))
    if not units:
        print("No units match.")
        return 0
    print(format_table(units))
    return 0


def format_table(units: list[Unit]) -> str:
    """A plain text table: id, serial, state, failed step, operator, started (local time), duration."""
    header = ("ID", "SERIAL", "STATE", "FAILED STEP", "OPERATOR", "STARTED", "DURATION")
    rows = [
        (
            str(unit.id),
            unit.serial,
            unit.state,
            unit.failed_step or "",
            unit.operator,
            _local(unit.started_at),
            _duration(unit.duration_s),
        )
        for unit in units
    ]
    widths = [max(len(cells[i]) for cells in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in (header, *rows)
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


