"""`station fleet …` — this station in the fleet's PostgreSQL system of record.

* ``init --dsn DSN`` migrates the central schema, registers this station (name, line, CA fingerprint) with its own
  insert-only role, keeps the role's password in HOME/fleet/pgpass and writes ``[fleet]`` into station.toml;
* ``status`` / ``sync`` — the store-and-forward backlog, and sending it now;
* ``verify`` (every station's chain), ``conflicts``, ``units``, ``trace`` (one board across the fleet) and
  ``report`` (PDF) for quality leads;
* ``grant-quality NAME`` — a quality lead's own login role that reads the fleet and writes nothing;
* ``demo`` — a private PostgreSQL cluster for demos and training, started and stopped by the station.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from station.config import OFFLINE_POLICIES, FleetConfig, load_config
from station.errors import StationError
from station.home import StationHome

EPILOG = """\
examples:
  station fleet init --dsn postgresql://fleet_admin@db.plant.example:5432/fleet --line L3
  station fleet status
  station fleet verify
  station fleet conflicts
  station fleet trace --serial 202600000000001
  station fleet report --from 2026-03-01 --to 2026-03-31 --out march-fleet.pdf
  PGPASSFILE=~/admin.pgpass station fleet grant-quality alice --dsn postgresql://fleet_admin@db.plant.example/fleet
  station fleet demo              start a private PostgreSQL for a demo (station fleet demo --stop ends it)
"""


# long: argparse: the command's subcommands and their options, one block each, nothing else
def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="the fleet database: register, forward, verify, conflicts, reports",
        description="PostgreSQL as the system of record of every station.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="fleet_action", metavar="ACTION")

    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=show_help)

    init = actions.add_parser(
        "init",
        help="create/migrate the central schema and register this station",
        description="Connect with an administrator's DSN (its password from ~/.pgpass or PGPASSFILE, never the "
        "command line), migrate the central schema, create this station's insert-only role, and write [fleet] "
        "into station.toml.",
        epilog="example:\n  PGPASSFILE=~/admin.pgpass station fleet init --dsn postgresql://fleet_admin@db:5432/fleet "
        "--line L3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument(
        "--dsn", required=True, help="administrator's postgresql://user@host:port/database (no password)"
    )
    init.add_argument(
        "--station-name", help="this station's name in the fleet (default: station.toml's name)"
    )
    init.add_argument("--line", help="the production line this station is on")
    init.add_argument(
        "--offline", choices=OFFLINE_POLICIES, help="when the fleet is unreachable (default allow-and-flag)"
    )
    init.add_argument("--replace", action="store_true", help="re-register a station name held by another CA")
    init.set_defaults(handler=run_init)

    status = actions.add_parser(
        "status",
        help="connection state, backlog and age of the oldest unsent event",
        epilog="example:\n  station fleet status     exit 0 online, 3 offline, 1 local log "
        "differs from the fleet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.set_defaults(handler=run_status)

    sync = actions.add_parser(
        "sync",
        help="send the backlog to the fleet now",
        epilog="example:\n  station fleet sync --timeout 60",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument(
        "--timeout", type=float, default=60.0, help="give up after this many seconds (default 60)"
    )
    sync.set_defaults(handler=run_sync)

    verify = actions.add_parser(
        "verify",
        help="check every station's chain in the fleet",
        epilog="example:\n  station fleet verify     exit 0 if every chain is intact",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _dsn_option(verify)
    verify.set_defaults(handler=run_verify)

    conflicts = actions.add_parser(
        "conflicts",
        help="boards, host keys or keys seen on two stations; unchecked units",
        epilog="example:\n  station fleet conflicts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _dsn_option(conflicts)
    conflicts.set_defaults(handler=run_conflicts)

    units = actions.add_parser(
        "units",
        help="units across the fleet, newest first, filtered",
        epilog="example:\n  station fleet units --line L3 --result failed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _dsn_option(units)
    _filter_options(units)
    units.add_argument("--limit", type=int, default=50)
    units.set_defaults(handler=run_units)

    trace = actions.add_parser(
        "trace",
        help="every attempt on every station for one board",
        epilog="example:\n  station fleet trace --serial 202600000000001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _dsn_option(trace)
    trace.add_argument("--serial", required=True)
    trace.set_defaults(handler=run_trace)

    report = actions.add_parser(
        "report",
        help="PDF report of the fleet for a period",
        epilog="example:\n  station fleet report --from 2026-03-01 --to 2026-03-31 --out march.pdf",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _dsn_option(report)
    report.add_argument("--from", dest="since", metavar="DATE")
    report.add_argument("--to", dest="until", metavar="DATE")
    report.add_argument("--station")
    report.add_argument("--line")
    report.add_argument("--out", type=Path, required=True, metavar="FILE")
    report.set_defaults(handler=run_report)

    grant = actions.add_parser(
        "grant-quality",
        help="give a quality lead a login of their own that can read the fleet, not write it",
        description="Create (or give a new password to) the PostgreSQL login role NAME, member of the fleet's "
        "reader group only (SELECT; sessions read-only). Connects with an administrator's DSN, its password from "
        "PGPASSFILE. The quality lead's password is asked twice at a prompt, or read as one line from standard "
        "input when that is not a terminal — never from the command line.",
        epilog="examples:\n  PGPASSFILE=~/admin.pgpass station fleet grant-quality alice --dsn "
        "postgresql://fleet_admin@db:5432/fleet\n  PGPASSFILE=~/admin.pgpass station fleet grant-quality alice "
        "--dsn postgresql://fleet_admin@db:5432/fleet --revoke",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    grant.add_argument("name", metavar="NAME", help="the quality lead's role name (lower case, e.g. alice)")
    grant.add_argument(
        "--dsn", required=True, help="administrator's postgresql://user@host:port/database (no password)"
    )
    grant.add_argument(
        "--revoke", action="store_true", help="take the reading rights and the login away instead"
    )
    grant.set_defaults(handler=run_grant_quality)

    demo = actions.add_parser(
        "demo",
        help="start (or --stop) a private PostgreSQL cluster for demos and training",
        description="Start a private PostgreSQL cluster for this station home, register the station in it and "
        "write [fleet] into station.toml. For demos and training only: production stations use the plant's server.",
        epilog="examples:\n  station fleet demo\n  station fleet demo --stop",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--stop", action="store_true", help="stop the demo cluster")
    demo.add_argument("--line", default="demo")
    demo.set_defaults(handler=run_demo)


def _dsn_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", help="connect with this DSN (a quality lead's role) instead of station.toml's [fleet]"
    )


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--station")
    parser.add_argument("--line")
    parser.add_argument("--serial", dest="serial_prefix", metavar="PREFIX")
    parser.add_argument("--result", choices=("running", "failed", "passed", "aborted", "superseded"))
    parser.add_argument("--operator")
    parser.add_argument("--batch")
    parser.add_argument("--from", dest="since", metavar="DATE")
    parser.add_argument("--to", dest="until", metavar="DATE")


# ------------------------------------------------------------------------------------------- helpers


def fleet_config(home: StationHome) -> FleetConfig:
    config = load_config(home.config_file)
    if config.fleet is None:
        raise StationError(
            f"{home.config_file} has no [fleet] section: this station keeps its record locally only. Register it "
            f"with `station fleet init --dsn …` (or `station fleet demo` for a demo)."
        )
    return config.fleet


def open_fleet(args: argparse.Namespace) -> Any:
    """A connection for the quality leads' commands: --dsn if given, else this station's role."""
    from station.fleet.connection import connect

    if getattr(args, "dsn", None):
        return connect(args.dsn, statement_timeout_s=600)
    fleet = fleet_config(StationHome.resolve(args.home))
    return connect(fleet.dsn, passfile=fleet.passfile, statement_timeout_s=600)


def filters_from(args: argparse.Namespace) -> Any:
    from station.cli.audit import _parse_when
    from station.fleet.queries import FleetFilter

    return FleetFilter(
        station=getattr(args, "station", None),
        line=getattr(args, "line", None),
        serial_prefix=getattr(args, "serial_prefix", None),
        result=getattr(args, "result", None),
        operator=getattr(args, "operator", None),
        batch=getattr(args, "batch", None),
        since=_parse_when(getattr(args, "since", None), option="--from", end_of_day=False),
        until=_parse_when(getattr(args, "until", None), option="--to", end_of_day=True),
    )


def station_dsn(admin_dsn: str, role: str) -> str:
    """The admin DSN with the station's role as user (and no password): what station.toml keeps."""
    parts = urlsplit(admin_dsn)
    host = parts.hostname or "localhost"
    netloc = f"{role}@{'[' + host + ']' if ':' in host else host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def write_fleet_section(config_file: Path, fleet: FleetConfig) -> None:
    """Put ``[fleet]`` into station.toml, replacing an existing one; the rest of the file stays as it was."""
    from station.pki import write_file_atomically

    section = (
        "[fleet]\n"
        f'dsn = "{fleet.dsn}"\n'
        f'station_name = "{fleet.station_name}"\n'
        f'line = "{fleet.line}"\n'
        f'offline = "{fleet.offline}"\n'
    )
    text = config_file.read_text(encoding="utf-8") if config_file.exists() else ""
    pattern = re.compile(r"^\[fleet\][^\n]*\n(?:(?!^\[).*\n?)*", re.M)
    if pattern.search(text):
        text = pattern.sub(section + "\n", text, count=1)
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + ("\n" if text else "") + section
    write_file_atomically(config_file, text.encode("utf-8"), mode=0o600, replace=True)
    load_config(config_file)  # what we wrote must read back


def ca_fingerprint(home: StationHome) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from station.pki import CA_CERT_FILE

    path = home.ca_dir / CA_CERT_FILE
    if not path.exists():
        raise StationError(
            f"This station has no CA yet ({path} is missing) — run `station ca init` first, then "
            f"register the station in the fleet."
        )
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


def register_here(
    home: StationHome,
    *,
    admin_dsn: str,
    admin_passfile: Path | None,
    station_name: str | None,
    line: str | None,
    offline: str | None,
    replace: bool,
) -> FleetConfig:
    from station.fleet.connection import connect, pgpass_file
    from station.fleet.schema import migrate, new_password, register_station, write_pgpass

    config = load_config(home.config_file)
    previous = config.fleet
    name = station_name or (previous.station_name if previous else config.name)
    chosen_line = line if line is not None else (previous.line if previous else "")
    policy = offline or (previous.offline if previous else "allow-and-flag")
    fingerprint = ca_fingerprint(home)
    password = new_password()
    with connect(admin_dsn, passfile=admin_passfile, statement_timeout_s=120) as conn:
        applied = migrate(conn)
        registration = register_station(
            conn,
            station=name,
            line=chosen_line,
            ca_fingerprint=fingerprint,
            password=password,
            replace=replace,
        )
        host = conn.info.host
        port = conn.info.port
        database = conn.info.dbname
    passfile = pgpass_file(home.root)
    write_pgpass(
        passfile, host=host, port=int(port), database=database, role=registration.role, password=password
    )
    fleet = FleetConfig(
        dsn=station_dsn(admin_dsn, registration.role),
        station_name=name,
        line=chosen_line,
        offline=policy,
        passfile=passfile,
    )
    write_fleet_section(home.config_file, fleet)
    with connect(fleet.dsn, passfile=passfile) as conn:  # the station's own role works
        conn.execute("SELECT 1 FROM fleet_stations WHERE name = %s", [name]).fetchone()
    print(f"fleet schema: {'migrated to version ' + str(max(applied)) if applied else 'up to date'}")
    print(
        f"station {name!r} (line {chosen_line or '—'}) {'registered' if registration.created else 're-registered'} "
        f"as role {registration.role}; CA fingerprint {fingerprint[:16]}…"
    )
    print(f"[fleet] written to {home.config_file}; the role's password is in {passfile} (0600)")
    return fleet


# ------------------------------------------------------------------------------------------ handlers


def run_init(args: argparse.Namespace) -> int:
    home = StationHome.resolve(args.home).create()
    passfile = os.environ.get("PGPASSFILE")
    register_here(
        home,
        admin_dsn=args.dsn,
        admin_passfile=Path(passfile) if passfile else None,
        station_name=args.station_name,
        line=args.line,
        offline=args.offline,
        replace=args.replace,
    )
    return 0


def run_status(args: argparse.Namespace) -> int:
    from station.audit import AuditLog
    from station.fleet.connection import FleetError, FleetUnavailable, connect, deadline, redact
    from station.fleet.forwarder import format_age

    home = StationHome.resolve(args.home)
    fleet = fleet_config(home)
    print(
        f"station {fleet.station_name} (line {fleet.line or '—'}) → {redact(fleet.dsn)}; offline policy "
        f"{fleet.offline}"
    )
    with AuditLog(home.audit_db) as audit:
        mark, newest, backlog, oldest = audit.fleet_backlog()
    if backlog:
        age = (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds() if oldest else 0.0
        print(
            f"backlog: {backlog} event{'' if backlog == 1 else 's'} not yet in the fleet (events {mark + 1}–{newest}), "
            f"oldest {format_age(age)} old"
        )
    else:
        print(f"backlog: none (all {newest} events forwarded)")
    try:
        with connect(fleet.dsn, passfile=fleet.passfile) as conn, deadline(conn, 5.0, what="status"):
            row = conn.execute(
                "SELECT count(*), coalesce(max(seq), 0) FROM fleet_journal WHERE station = %s",
                [fleet.station_name],
            ).fetchone()
            version = conn.execute("SELECT coalesce(max(version), 0) FROM fleet_schema_migrations").fetchone()
            server = conn.info.parameter_status("server_version")
            assert row is not None
            head = conn.execute(
                "SELECT hash FROM fleet_journal WHERE station = %s AND seq = %s", [fleet.station_name, row[1]]
            ).fetchone()
    except (FleetUnavailable, FleetError) as exc:
        print(f"connection: OFFLINE — {exc}")
        return 3
    assert version is not None
    print(
        f"connection: online (PostgreSQL {server}, fleet schema {version[0]}); the fleet holds {row[0]} events of "
        f"this station (up to {row[1]})"
    )
    if head is not None:
        with AuditLog(home.audit_db) as audit:
            local = audit.event_hashes(int(row[1]), int(row[1])).get(int(row[1]))
        if local != head[0]:
            print(
                f"LOCAL LOG DIFFERS from the fleet at event {row[1]} "
                + (
                    "(the local log ends before it: an old backup restored?)"
                    if local is None
                    else "(rewritten?)"
                )
                + " — run `station audit verify` and tell quality assurance; forwarding is stopped"
            )
            return 1
    return 0


def run_sync(args: argparse.Namespace) -> int:
    from station.audit import AuditLog
    from station.fleet.forwarder import Forwarder

    home = StationHome.resolve(args.home)
    fleet = fleet_config(home)
    started = time.monotonic()
    with AuditLog(home.audit_db) as audit:
        forwarder = Forwarder(fleet, audit)
        sent = 0
        while time.monotonic() - started < args.timeout:
            count = forwarder.send_once()
            sent += count
            if count == 0:
                break
        _mark, newest, backlog, _oldest = audit.fleet_backlog()
    print(
        f"sent {sent} event{'' if sent == 1 else 's'} in {time.monotonic() - started:.1f} s; backlog {backlog} "
        f"(local log has {newest} events)"
    )
    return 0 if backlog == 0 else 1


def run_verify(args: argparse.Namespace) -> int:
    from station.fleet.queries import verify_chains

    with open_fleet(args) as conn:
        reports = verify_chains(conn)
    broken = 0
    for report in reports:
        head = f"head {report.head_seq} {report.head_hash[:16]}…" if report.head_hash else "no events"
        if report.ok:
            print(f"{report.station} (line {report.line or '—'}): OK, {report.events} events, {head}")
        else:
            broken += 1
            print(
                f"{report.station} (line {report.line or '—'}): BROKEN — {report.problem} ({report.events} events, {head})"
            )
    print(f"fleet verify: {len(reports) - broken} of {len(reports)} station chains intact")
    return 0 if broken == 0 else 1


def run_conflicts(args: argparse.Namespace) -> int:
    from station.fleet.queries import conflicts

    with open_fleet(args) as conn:
        found = conflicts(conn)
    for conflict in found:
        print(f"[{conflict.kind}] {conflict.detail}")
    real = [c for c in found if c.kind != "unchecked"]
    print(
        f"{len(real)} conflict{'' if len(real) == 1 else 's'}, {len(found) - len(real)} unit(s) provisioned unchecked"
    )
    return 0


def _unit_line(unit: dict[str, Any]) -> str:
    started = unit["started_at"].astimezone().strftime("%Y-%m-%d %H:%M:%S") if unit["started_at"] else "?"
    extra = f" failed at {unit['failed_step']}" if unit["failed_step"] else ""
    return (
        f"{started}  {unit['station']:<12} {unit['line'] or '—':<6} unit {unit['unit_id']:<6} {unit['serial']:<18} "
        f"{unit['state']}{extra}"
    )


def run_units(args: argparse.Namespace) -> int:
    from station.fleet.queries import count_units, units_page

    filters = filters_from(args)
    with open_fleet(args) as conn:
        rows = units_page(conn, filters, limit=args.limit)
        total = count_units(conn, filters)
    for unit in rows:
        print(_unit_line(unit))
    print(f"{len(rows)} of {total} matching units")
    return 0


def run_trace(args: argparse.Namespace) -> int:
    from station.fleet.queries import traceability

    with open_fleet(args) as conn:
        attempts = traceability(conn, args.serial)
    if not attempts:
        print(f"board {args.serial}: no unit in the fleet")
        return 1
    for unit in attempts:
        print(_unit_line(unit))
        if unit["certificate_serial"]:
            print(
                f"    certificate {unit['certificate_serial']}"
                + (f" revoked {unit['revoked_at']:%Y-%m-%d}" if unit["revoked_at"] else "")
            )
        for event in unit["events"]:
            print(f"    {event['at']}  event {event['seq']}  {event['kind']}")
    print(
        f"board {args.serial}: {len(attempts)} attempt{'' if len(attempts) == 1 else 's'} on "
        f"{len({u['station'] for u in attempts})} station(s)"
    )
    return 0


def run_report(args: argparse.Namespace) -> int:
    from station.fleet.report import render_fleet_report
    from station.outputs import write_export

    filters = filters_from(args)
    with open_fleet(args) as conn:
        pdf, pages, units = render_fleet_report(conn, filters)
    write_export(args.out.expanduser(), pdf)
    print(f"wrote a {pages}-page fleet report listing {units} units to {args.out}")
    return 0


def run_fleet_export(args: argparse.Namespace) -> int:
    """`station audit export --fleet`: the same formats, over every station of the fleet."""
    from station.fleet.report import export_fleet_to_file

    filters = filters_from(args)
    with open_fleet(args) as conn:
        done = export_fleet_to_file(conn, args.out, fmt=args.format, filters=filters)
    if done.pages is not None:
        print(f"wrote a {done.pages}-page fleet report listing {done.units} units to {args.out}")
    else:
        print(f"exported {done.units} fleet unit{'' if done.units == 1 else 's'} to {args.out}")
    return 0


def read_new_password(name: str) -> str:
    """The quality lead's new password: typed twice at a prompt, or one line of standard input (a script, a
    password manager's pipe) — so that it is never in an argv or the shell's history."""
    import getpass
    import sys

    if sys.stdin.isatty():
        first = getpass.getpass(f"New password for {name}: ")
        if getpass.getpass("Again: ") != first:
            raise StationError("The two passwords differ — nothing was changed. Run the command again.")
        return first
    line = sys.stdin.readline()
    if not line:
        raise StationError(
            "No password on standard input — type it at the prompt (run the command in a terminal) "
            "or pipe it in as one line. Nothing was changed."
        )
    return line.rstrip("\r\n")


def run_grant_quality(args: argparse.Namespace) -> int:
    from station.fleet.connection import connect, redact
    from station.fleet.quality import check_password, check_role_name, grant_quality, revoke_quality

    name = check_role_name(args.name)
    passfile = os.environ.get("PGPASSFILE")
    if args.revoke:
        with connect(args.dsn, passfile=Path(passfile) if passfile else None, statement_timeout_s=60) as conn:
            revoke_quality(conn, name)
        print(f"{name} can no longer log in or read the fleet")
        return 0
    password = check_password(read_new_password(name))
    with connect(args.dsn, passfile=Path(passfile) if passfile else None, statement_timeout_s=60) as conn:
        grant = grant_quality(conn, name, password)
    print(
        f"{'created' if grant.created else 'new password for'} {grant.role}: member of {grant.group} (reads the "
        f"fleet, writes nothing)"
    )
    print(
        f'the quality lead connects with  --dsn "{redact(station_dsn(args.dsn, grant.role))}"  and their '
        f"password in their own ~/.pgpass (0600)"
    )
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from station.fleet.demo import start_demo, stop_demo

    home = StationHome.resolve(args.home).create()
    if args.stop:
        print(stop_demo(home))
        return 0
    print(start_demo(home, line=args.line))
    return 0
