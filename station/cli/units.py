"""`station units` — the most recent units from the audit log, newest first."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

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
    parser.add_argument(
        "--follow",
        action="store_true",
        help="then watch the units running in the station service, live, until they end "
        "(Ctrl-C stops watching, not the units)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from station.cli.serve import service
    from station.service.client import connect

    # A running station service answers (it owns the home); with none, the home is read here.
    client = (
        service(args, start=False)
        if args.follow
        else connect(args.home, getattr(args, "socket", None), start=False)
    )
    if client is not None:
        with client:
            page = client.call(
                "units", {"limit": args.limit, **UnitFilter.from_mapping(vars(args)).to_mapping()}
            )
            print(page["text"] if page["count"] else "No units match.")
            if args.follow:
                return follow(client)
        return 0
    home = StationHome.resolve(args.home)
    if not home.audit_db.exists():
        print(f"No units recorded yet (no audit log at {home.audit_db}).")
        return 0
    with AuditLog(home.audit_db) as log:
        units = log.units_page(
            limit=args.limit,
            filters=UnitFilter.from_mapping(vars(args)),  # --serial, --result, --order
        )
    if not units:
        print("No units match.")
        return 0
    print(format_table(units))
    return 0


def follow(client: Any) -> int:
    """Print the running units' progress until none runs (Ctrl-C stops watching; the units go on)."""
    from station.cli.batch import LiveProgress
    from station.cli.serve import flow_event

    show = LiveProgress()
    running = {record["job"]: record for record in client.call("follow")["running"]}
    for record in running.values():
        print(
            f"[{record.get('fixture') or record['serial']}] {record['serial']} running: {record.get('title') or ''}",
            flush=True,
        )
    try:
        while True:
            message = client.next_message(wait_s=None if running else 2.0)
            if message is None:
                break
            record = message.get("event")
            if record is None:
                continue
            event = flow_event(record)
            running[event.job] = record
            if event.kind == "unit_finished":
                running.pop(event.job, None)
            if event.kind == "step_started":
                print(f"[{event.fixture or event.serial}] {event.serial} {event.title}…", flush=True)
            show(event)
    except KeyboardInterrupt:
        print("stopped watching; the units go on in the station service", file=sys.stderr)
        return 130
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
