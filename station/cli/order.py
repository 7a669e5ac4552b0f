"""`station order …` — the work orders this station may build: import from the ERP/MES, list, show, close.

Orders live in the audit log (who imported them, when, from which file and its SHA-256, who closed them and why),
so ``station audit verify`` covers them too. See station/orders.py for the file formats. With ``[fleet]`` they
live in the fleet too and these commands read and change the fleet's (station/fleet/orders.py).
"""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from station.audit import AuditLog
from station.config import load_config
from station.errors import StationError
from station.home import StationHome
from station.orders import OrderBook, OrderStatus, read_order_file
from station.profiles import DeviceProfile, available_profiles, load_profile

IMPORT_EPILOG = """\
CSV (first row names the columns; due is optional; serials are ranges FROM-TO and/or single serials,
separated by spaces, commas or semicolons — quote a cell holding commas):
  order,profile,quantity,serials,due
  WO-2026-0142,welma-optee,5,202600000000001-202600000000005,2026-12-31
  WO-2026-0143,welma-optee-ec,3,202600000000101 202600000000105 202600000000107,
More rows with the same order id add serials to it (leave profile/quantity/due empty or repeat them).

JSON:
  {"orders": [{"order": "WO-2026-0142", "profile": "welma-optee", "quantity": 5,
               "serials": ["202600000000001-202600000000005"], "due": "2026-12-31"}]}

Rules: the profile must be installed on the station; every serial must match the profile's pattern; a serial
appears once in a file; the quantity is at least the number of single serials and at most the number of
serials. A file with any problem is refused whole (file and line named) and nothing is imported.
Importing the same order again changes nothing; the same order id with other content is refused with the
differences shown.
With [fleet] in station.toml the orders go to the fleet database (all or none; the fleet must answer): every
station sees them, and list/show/close read and change the fleet's orders.

example:
  station order import WO-2026-0142.csv --by "Q. Lead"
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "order",
        help="import, list, show or close work orders (which boards may be enrolled)",
        description="Work orders from the ERP/MES: which product (profile), which serials, how many.",
        epilog="examples:\n  station order import WO-2026-0142.csv\n  station order list\n"
        '  station order show WO-2026-0142\n  station order close WO-2026-0142 --reason "cancelled by planning"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="order_action", metavar="ACTION")

    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=show_help)
    importing = actions.add_parser(
        "import",
        help="import the orders of a CSV or JSON file",
        description="Import work orders.",
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    importing.add_argument("file", type=Path, metavar="FILE", help="orders as .csv or .json")
    importing.add_argument("--by", metavar="NAME", help="who imports (default: your login name)")
    importing.set_defaults(handler=run_import)

    listing = actions.add_parser(
        "list",
        help="every order and its progress",
        description="List work orders, newest import first.",
        epilog="examples:\n  station order list\n  station order list --open",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--open", action="store_true", help="only orders still open")
    listing.set_defaults(handler=run_list)

    show = actions.add_parser(
        "show",
        help="one order: its serials, who imported it, its progress",
        description="Show one work order.",
        epilog="example:\n  station order show WO-2026-0142",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("order_id", metavar="ID")
    show.set_defaults(handler=run_show)

    close = actions.add_parser(
        "close",
        help="close an order: no further board is enrolled on it",
        description="Close a work order. Boards already running finish; no new unit is started on it.",
        epilog='example:\n  station order close WO-2026-0142 --reason "order cancelled by planning"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    close.add_argument("order_id", metavar="ID")
    close.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded in the audit log)")
    close.add_argument("--by", metavar="NAME", help="who closes it (default: your login name)")
    close.set_defaults(handler=run_close)


def run_import(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home).create()
    known = set(available_profiles(home.profiles_dir))

    def profile(name: str) -> DeviceProfile | None:
        return load_profile(name, home.profiles_dir) if name in known else None

    parsed = read_order_file(args.file, profiles=profile)
    with AuditLog(home.audit_db) as log:
        book = _book(home, log)
        result = book.import_orders(parsed, by=args.by or _login_name())
        for order_id in result.imported:
            print(f"imported order {order_id}: {book.status(order_id).summary()}")
    for order_id in result.unchanged:
        print(f"order {order_id} was already imported with the same content — unchanged")
    print(
        f"{args.file}: {len(result.imported)} imported, {len(result.unchanged)} unchanged "
        f"(file sha256 {parsed.sha256})"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home).create()
    with AuditLog(home.audit_db) as log:
        book = _book(home, log)
        orders = book.orders(state="open" if args.open else None)
    _say_offline(book)
    if not orders:
        print(
            "no work order"
            + (" is open" if args.open else " was imported")
            + " — import one with: station order import FILE"
        )
        return 0
    rows = [("order", "profile", "state", "passed", "in progress", "yield", "due", "serials")]
    for status in orders:
        rate = status.yield_fraction
        rows.append(
            (
                status.order_id,
                status.order.profile,
                status.state_text,
                f"{status.passed}/{status.quantity}",
                str(status.running + status.failed),
                "—" if rate is None else f"{rate * 100:.0f} %",
                status.order.due.isoformat() if status.order.due else "",
                status.order.serials_text(limit=2),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def run_show(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home).create()
    with AuditLog(home.audit_db) as log:
        book = _book(home, log)
        status = book.status(args.order_id)
    _say_offline(book)
    print(describe(status))
    return 0


def run_close(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home).create()
    with AuditLog(home.audit_db) as log:
        status = _book(home, log).close(args.order_id, by=args.by or _login_name(), reason=args.reason)
    print(
        f"closed work order {status.order_id} ({status.progress_text()}); no further board is enrolled on it"
    )
    return 0


def _book(home: StationHome, log: AuditLog) -> OrderBook:
    """The fleet's orders with [fleet] in station.toml, else this station's."""
    config = load_config(home.config_file)
    if config.fleet is None:
        return log.orders
    from station.fleet.orders import order_book

    return order_book(log, config)


def _say_offline(book: OrderBook) -> None:
    reason = getattr(book, "offline_reason", None)
    if reason:
        import sys

        print(
            f"warning: {reason} Showing this station's copy of the work orders (progress counts this station's "
            f"units only).",
            file=sys.stderr,
        )


def describe(status: OrderStatus) -> str:
    order = status.order
    lines = [
        f"order       {status.order_id}",
        f"state       {status.state_text}",
        f"profile     {order.profile}",
        f"quantity    {order.quantity}",
        f"due         {order.due.isoformat() if order.due else '—'}",
        f"serials     {order.serials_text(limit=50)} ({order.serial_count} serials)",
        f"progress    {status.progress_text()}" + (f", {status.aborted} aborted" if status.aborted else ""),
        f"imported    {_local(status.imported_at)} by {status.imported_by} from {status.source_file} "
        f"(sha256 {status.file_sha256})",
    ]
    if status.closed_at is not None:
        lines.append(f"closed      {_local(status.closed_at)} by {status.closed_by}: {status.close_reason}")
    lines.append(
        f"units       station units --order {status.order_id}  ·  "
        f"station audit export --format pdf --out {status.order_id}.pdf --order {status.order_id}"
    )
    return "\n".join(lines)


def _local(moment: object) -> str:
    from datetime import datetime

    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if isinstance(moment, datetime) else "?"


def _login_name() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment or the password database
        name = ""
    if not name.strip():
        raise StationError("who you are is not known — give your name with --by NAME")
    return name
