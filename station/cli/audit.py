"""`station audit …` — prove the audit log is intact, and export it for quality records.

* ``station audit verify`` walks the hash-chained journal and compares it with the tables;
* ``station audit export`` writes units as CSV (for a spreadsheet) or JSON Lines (for programs), atomically:
  the output file either holds the complete export or is left as it was.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TextIO

from station.audit import UNIT_STATES, AuditLog
from station.errors import StationError
from station.home import StationHome

EXPORT_FORMATS = ("csv", "jsonl")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="verify or export the audit log",
        description="Verify that the audit log is intact, or export it.",
    )
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION")

    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=show_help)

    verify = actions.add_parser(
        "verify",
        help="check that no record was edited, deleted or added outside the station",
        description="Check the hash chain of the audit journal and that every table row matches it.",
    )
    verify.set_defaults(handler=run_verify)

    export = actions.add_parser(
        "export",
        help="export units as CSV or JSON Lines",
        description=(
            "Export units (oldest first) to a file. Dates without a time are local days: "
            "--from 2026-03-01 --to 2026-03-31 covers all of March."
        ),
    )
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="csv (spreadsheet) or jsonl")
    export.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="file to write (replaced whole)"
    )
    export.add_argument("--from", dest="since", metavar="DATE", help="units started on or after DATE")
    export.add_argument(
        "--to", dest="until", metavar="DATE", help="units started up to DATE (a day: inclusive)"
    )
    export.add_argument("--batch", metavar="ID", help="only units of this batch")
    export.add_argument("--result", choices=UNIT_STATES, help="only units in this state")
    export.add_argument("--steps", action="store_true", help="jsonl only: add each unit's step summary")
    export.set_defaults(handler=run_export)


def run_verify(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home)
    with _open_existing(home) as log:
        report = log.verify()
    if report.ok:
        print(f"audit log OK: {report.events} events")
        return 0
    print(f"audit log {home.audit_db} is NOT intact: {report.problem}")
    print("Keep a copy of this file as it is and report it to quality assurance.")
    return 1


def run_export(args: argparse.Namespace) -> int:
    if args.steps and args.format != "jsonl":
        raise StationError("--steps is for --format jsonl only; CSV has one row per unit.")
    since = _parse_when(args.since, option="--from", end_of_day=False)
    until = _parse_when(args.until, option="--to", end_of_day=True)
    if since is not None and until is not None and until <= since:
        raise StationError(f"--to {args.until} is not after --from {args.since}; nothing would be exported.")
    home = StationHome.resolve(args.home)
    with _open_existing(home) as log:

        def write(out: TextIO) -> int:
            if args.format == "csv":
                return log.export_csv(out, batch=args.batch, result=args.result, since=since, until=until)
            return log.export_jsonl(
                out, batch=args.batch, result=args.result, since=since, until=until, include_steps=args.steps
            )

        count = write_atomically(args.out, write)
    print(f"exported {count} unit{'' if count == 1 else 's'} to {args.out}")
    return 0


def write_atomically(path: Path, write: Callable[[TextIO], int]) -> int:
    """Write a text file through a temporary file, fsync and rename; return what ``write`` returns."""
    path = path.expanduser()
    directory = path.parent
    if not directory.is_dir():
        raise StationError(
            f"Cannot write {path}: the folder {directory} does not exist. Create it or pick another."
        )
    if path.is_dir():
        raise StationError(
            f"Cannot write {path}: it is a folder. Give a file name, e.g. {path / 'units.csv'}."
        )
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            result = write(out)
            out.flush()
            os.fsync(out.fileno())
        # An export is meant to be handed on; it holds no secrets (see station.audit.EXPORT_FIELDS).
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk too, or a power cut could bring back the old file.
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
    return result


def _open_existing(home: StationHome) -> AuditLog:
    if not home.audit_db.exists():
        raise StationError(
            f"There is no audit log at {home.audit_db}: nothing was provisioned with this station home. "
            f"Check --home or STATION_HOME."
        )
    return AuditLog(home.audit_db)


def _parse_when(text: str | None, *, option: str, end_of_day: bool) -> datetime | None:
    """A local date or date-time from the command line, as an aware datetime.

    A bare date means the start of that local day — or, for an end bound, the start of the next day, so that
    the day itself is included.
    """
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise StationError(
            f"{option} {text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (local time)."
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()
