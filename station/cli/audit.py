"""`station audit …` — prove the audit log is intact, and export it for quality records.

* ``station audit verify`` walks the hash-chained journal and compares it with the tables;
* ``station audit export`` writes units as CSV (for a spreadsheet) or JSON Lines (for programs), or a PDF
  report of a batch or a period (for people), atomically: the output file either holds the complete export or
  is left as it was;
* ``station audit backup`` writes a consistent copy of the live log with SQLite's online backup (copying
  audit.db by hand while a station runs can miss the commits still in audit.db-wal).
"""

from __future__ import annotations

import argparse
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO

from station.audit import UNIT_STATES, AuditLog, UnitFilter
from station.config import load_config
from station.errors import StationError
from station.home import StationHome
from station.report import EXPORT_FORMATS, export_to_file
from station.report import write_text_atomically as write_atomically

__all__ = ["EXPORT_FORMATS", "register", "run_backup", "run_export", "run_verify", "write_atomically"]

BACKUP_EPILOG = """\
example:
  station audit backup --out /mnt/backup/audit-$(date +%F).db

Safe while stations are provisioning: it copies committed records only, from one consistent moment.
To check a backup, verify it in a scratch station home:
  mkdir -p /tmp/check && cp /mnt/backup/audit-2026-03-31.db /tmp/check/audit.db
  station --home /tmp/check audit verify
To restore: stop every station program, copy the backup over HOME/audit.db and delete HOME/audit.db-wal and
HOME/audit.db-shm if they exist.
"""


# long: argparse: the command's subcommands and their options, one block each, nothing else
def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="verify, export or back up the audit log",
        description="Verify that the audit log is intact, export it, or back it up.",
        epilog="examples:\n  station audit verify\n  station audit export --format csv --out units.csv\n"
        "  station audit backup --out /media/usb/audit-backup.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        epilog="example:\n  station audit verify        exit status 0 if intact, 1 with the first broken record",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.set_defaults(handler=run_verify)

    checkpoint = actions.add_parser(
        "checkpoint",
        help="sign the audit journal's current head with the station CA (token)",
        description="Sign the head of the hash chain with the station CA's key, e.g. after `station revoke`.",
        epilog="example:\n  station audit checkpoint     asks for the token PIN (or reads [ca] pin_file)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    checkpoint.set_defaults(handler=run_checkpoint)

    export = actions.add_parser(
        "export",
        help="export units as CSV or JSON Lines, or a PDF report",
        description=(
            "Export units (oldest first) to a file. Dates without a time are local days: "
            "--from 2026-03-01 --to 2026-03-31 covers all of March. A PDF is a report of the batch or period: "
            "yield, failed attempts by step, key-generation times and a table of the units (--result narrows "
            "only that table)."
        ),
        epilog=(
            "examples:\n"
            "  station audit export --format csv --out march.csv --from 2026-03-01 --to 2026-03-31\n"
            "  station audit export --format jsonl --out failed.jsonl --result failed\n"
            "  station audit export --format pdf --out B20261126.pdf --batch B20261126-0108-3fa2\n"
            "  station audit export --format pdf --out WO-2026-0142.pdf --order WO-2026-0142"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "--format", required=True, choices=EXPORT_FORMATS, help="csv (spreadsheet), jsonl or pdf (report)"
    )
    export.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="file to write (replaced whole)"
    )
    export.add_argument("--from", dest="since", metavar="DATE", help="units started on or after DATE")
    export.add_argument(
        "--to", dest="until", metavar="DATE", help="units started up to DATE (a day: inclusive)"
    )
    export.add_argument("--batch", metavar="ID", help="only units of this batch")
    export.add_argument("--order", metavar="ID", help="only units of this work order")
    export.add_argument("--result", choices=UNIT_STATES, help="only units in this state")
    export.add_argument("--steps", action="store_true", help="jsonl only: add each unit's step summary")
    export.add_argument("--fleet", action="store_true", help="every station of the fleet ([fleet] or --dsn)")
    export.add_argument("--station", help="--fleet: only this station's units")
    export.add_argument("--line", help="--fleet: only units of stations on this line")
    export.add_argument("--dsn", help="--fleet: connect with this DSN (a quality lead's role)")
    export.set_defaults(handler=run_export)

    backup = actions.add_parser(
        "backup",
        help="write a consistent copy of the audit log (safe while stations run)",
        description="Copy the audit log with SQLite's online backup into one self-contained file, and verify\n"
        "the copy. Never copy audit.db or audit.db-wal by hand while a station runs.",
        epilog=BACKUP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backup.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="file to write (replaced whole)"
    )
    backup.set_defaults(handler=run_backup)


def run_verify(args: argparse.Namespace) -> int:
    from station.cli.served import running_service

    client = running_service(args)
    if client is not None:
        # The station service owns the log: it verifies it and says what this command prints.
        with client:
            answer = client.call("audit_verify")
        for line in answer["lines"]:
            print(line)
        return int(answer["status"])
    home = StationHome.resolve(args.home)
    with _open_existing(home) as log:
        lines, status = verify_lines(home, log)
    for line in lines:
        print(line)
    return status


def verify_lines(home: StationHome, log: AuditLog) -> tuple[list[str], int]:
    """What `station audit verify` says about ``log`` (the lines it prints) and its exit status."""
    from station.cli.ca import audit_trust

    trusted, required = audit_trust(home)
    report = log.verify(trusted=trusted, require_signed_since=required)
    # With [fleet], the fleet's copy is the outside anchor: a rewritten chain or an old backup differs from it.
    fleet_verdict = _compare_with_fleet(home, log)
    lines = []
    if report.ok:
        signed = ""
        if report.checkpoints is not None:
            signed = f"; {report.checkpoints} signed checkpoint(s) verified against the station CA" + (
                f", the last covering event {report.last_signed_seq}" if report.last_signed_seq else ""
            )
        lines.append(f"audit log OK: {report.events} events{signed}")
    else:
        lines.append(f"audit log {home.audit_db} is NOT intact: {report.problem}")
    if fleet_verdict is not None:
        lines.append(fleet_verdict[1])
    if report.ok and (fleet_verdict is None or fleet_verdict[0]):
        return lines, 0
    lines.append("Keep a copy of this file as it is and report it to quality assurance.")
    return lines, 1


def _compare_with_fleet(home: StationHome, log: AuditLog) -> tuple[bool, str] | None:
    config = load_config(home.config_file)
    if config.fleet is None:
        return None
    from station.fleet.connection import FleetError, FleetUnavailable, connect
    from station.fleet.queries import compare_with_fleet

    try:
        with connect(config.fleet.dsn, passfile=config.fleet.passfile, statement_timeout_s=600) as conn:
            comparison = compare_with_fleet(log, conn, config.fleet.station_name)
    except (FleetUnavailable, FleetError) as exc:
        return True, f"fleet comparison not made: {exc}"
    if comparison.ok:
        return True, (
            f"matches the fleet: the fleet's {comparison.fleet_events} events of station "
            f"{config.fleet.station_name} are the local log's "
            f"({comparison.local_events - comparison.fleet_events} not forwarded yet)"
        )
    return False, f"DIFFERS FROM THE FLEET: {comparison.problem}"


def run_checkpoint(args: argparse.Namespace) -> int:
    from station.audit.checkpoints import CheckpointSigner
    from station.cli.ca import load_station_ca
    from station.cli.served import running_service

    client = running_service(args)
    if client is not None:
        # The station service holds the unlocked CA: it signs the head of the log it owns.
        from station.cli.serve import call_unlocking

        with client:
            answer = call_unlocking(client, "audit_checkpoint", {})
        print(f"signed the audit journal up to event {answer['seq']} with {answer['subject']}")
        return 0

    home = StationHome.resolve(args.home)
    with _open_existing(home) as log:
        report = log.verify()
        if not report.ok:
            raise StationError(
                f"The audit log does not verify ({report.problem}) — refusing to sign it; report it to quality "
                "assurance."
            )
        ca = load_station_ca(home)
        try:
            log.attach_checkpoint_signer(CheckpointSigner.for_certificate(ca.certificate, ca.sign_bytes))
            seq = log.checkpoint()
        finally:
            ca.close()
    print(f"signed the audit journal up to event {seq} with {ca.certificate.subject.rfc4514_string()}")
    return 0


def run_backup(args: argparse.Namespace) -> int:
    from station.cli.served import received_file, running_service, write_private

    client = running_service(args)
    if client is not None:
        # The station service copies (and verifies) the log it owns; this command writes the copy as this
        # user's own file, mode 0640 (it names operators).
        with client:
            answer = client.call("backup")
            write_private(args.out, received_file(client, answer, what="backup"))
        return _said_backup(
            args.out,
            size_bytes=answer["size"],
            events=answer["events"],
            ok=answer["ok"],
            problem=answer["problem"],
        )
    home = StationHome.resolve(args.home)
    with _open_existing(home) as log:
        written = log.backup(args.out)
    return _said_backup(
        written.path,
        size_bytes=written.size_bytes,
        events=written.report.events,
        ok=written.report.ok,
        problem=written.report.problem,
    )


def _said_backup(path: Path, *, size_bytes: int, events: int, ok: bool, problem: str | None) -> int:
    size = f"{size_bytes / 1e6:.1f} MB" if size_bytes >= 100_000 else f"{size_bytes} bytes"
    if ok:
        print(f"backed up the audit log to {path} ({events} events, {size}); copy verified")
        return 0
    print(f"backed up the audit log to {path} ({size}), but the log is NOT intact: {problem}")
    print("Keep this copy and the live file as they are and report it to quality assurance.")
    return 1


def run_export(args: argparse.Namespace) -> int:
    if getattr(args, "fleet", False):
        from station.cli.fleet import run_fleet_export

        return run_fleet_export(args)
    if getattr(args, "station", None) or getattr(args, "line", None) or getattr(args, "dsn", None):
        raise StationError("--station, --line and --dsn are for the fleet export: add --fleet.")
    if args.steps and args.format != "jsonl":
        raise StationError(
            "--steps is for --format jsonl only; "
            + ("CSV has one row per unit." if args.format == "csv" else "a PDF report has no step details.")
        )
    since = _parse_when(args.since, option="--from", end_of_day=False)
    until = _parse_when(args.until, option="--to", end_of_day=True)
    if since is not None and until is not None and until <= since:
        raise StationError(f"--to {args.until} is not after --from {args.since}; nothing would be exported.")
    from station.service.client import connect

    # --batch/--order/--result/--from/--to, as one filter for every path below.
    filters = UnitFilter.from_mapping({**vars(args), "since": since, "until": until})
    client = connect(args.home, getattr(args, "socket", None), start=False)
    if client is not None:
        with client:
            return _served_export(client, args, filters)
    home = StationHome.resolve(args.home)
    if args.format == "pdf":
        # The report names the station it was made on (station.toml), read before anything is written.
        station = load_config(home.config_file).name
        with _open_existing(home) as log:
            written = export_to_file(
                log,
                args.out,
                fmt="pdf",
                filters=filters,
                station=station,
            )
        listed = f"{written.units} unit{'' if written.units == 1 else 's'}"
        print(f"wrote a {written.pages}-page report listing {listed} to {args.out}")
        return 0
    with _open_existing(home) as log:

        def write(out: TextIO) -> int:
            if args.format == "csv":
                return log.export_csv(out, filters)
            return log.export_jsonl(out, filters, include_steps=args.steps)

        count = write_atomically(args.out, write)
    print(f"exported {count} unit{'' if count == 1 else 's'} to {args.out}")
    return 0


def _served_export(client: Any, args: argparse.Namespace, filters: UnitFilter) -> int:
    """The export made by the station service (which owns the audit log) and written here, by this user, mode
    0640 (it names operators): the service records which OS account asked for it."""
    from station.cli.served import received_file, write_private

    answer = client.call(
        "audit_export",
        {"format": args.format, "steps": args.steps, **filters.to_mapping()},
    )
    write_private(Path(args.out), received_file(client, answer, what="export"))
    count = answer["units"]
    if args.format == "pdf":
        listed = f"{count} unit{'' if count == 1 else 's'}"
        print(f"wrote a {answer['pages']}-page report listing {listed} to {args.out}")
    else:
        print(f"exported {count} unit{'' if count == 1 else 's'} to {args.out}")
    return 0


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
