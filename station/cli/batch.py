"""`station batch`: provision every board of a manifest, one worker per fixture slot."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from station.batch import Batch, BatchJob, BatchReport, JobOutcome, read_manifest
from station.cli.events import EventLog
from station.engine.outcome import Ending
from station.errors import StationError
from station.flow import FlowEvent, Provisioner
from station.profiles import DeviceProfile, load_profile
from station.states import StepOutcome

EXAMPLE = """\
manifest (CSV, header optional): serial,device[,fixture[,order]]
  serial,device,fixture,order
  202600000000001,ssh://root@127.0.0.2:2222,A1,WO-2026-0142
  202600000000002,sim-02,,WO-2026-0142

The order column (optional) names the work order each board is built for; empty means the open order
holding the serial (see station order --help). A header row may list the columns in any order.

The device column is an address or a fixture name from station.toml or the simulator's fixtures file.

examples:
  station batch --manifest boards.csv --jobs 8
  station batch --manifest boards.csv --events progress.jsonl

Each board runs in its own worker process; a fixture's profile is --profile, else the fixture's own
(station.toml), else default_profile.

The boards run in the station service (started for you outside production mode when none runs):
killing this command leaves them running (`station units --follow` shows them).
Exit status 0 only if every board passed.  Ctrl-C cancels: running units end failed and resumable.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="provision many boards at once on parallel fixtures",
        description="Provision every board listed in a manifest, fixtures in parallel.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--manifest", required=True, help="CSV file with serial,device[,fixture[,order]]")
    parser.add_argument("--jobs", type=int, default=None, help="fixtures worked at once (default: all)")
    parser.add_argument("--profile", help="device profile (default: station.toml's default_profile)")
    parser.add_argument("--operator", help="who provisions (default: the login name)")
    parser.add_argument("--batch-id", help="batch id recorded on every unit (default: generated)")
    parser.add_argument(
        "--events",
        metavar="FILE",
        help="also write every progress event as one JSON line to FILE (for a line's MES or a log)",
    )
    parser.set_defaults(handler=run)


class LiveProgress:
    """One line per step and per result, prefixed with the fixture, for a terminal or a log."""

    def __init__(self) -> None:
        self.fixture_of: dict[str, str] = {}

    def __call__(self, event: FlowEvent) -> None:
        where = event.fixture or event.serial
        if event.kind == "step_finished" and event.outcome in (StepOutcome.PASSED, StepOutcome.SKIPPED):
            print(
                f"[{where}] {event.serial} {event.title}: {event.outcome} in {event.duration_s:.2f} s",
                flush=True,
            )
        elif event.kind == "step_finished":
            print(f"[{where}] {event.serial} {event.title}: {event.outcome.upper()}", flush=True)
        elif event.kind == "unit_finished":
            verdict = "PASS" if event.outcome == Ending.PASSED else event.outcome.upper()
            print(
                f"[{where}] {event.serial} {verdict} {event.message.splitlines()[0] if event.message else ''}",
                flush=True,
            )


def print_summary(report: BatchReport) -> None:
    rows = [("serial", "fixture", "result", "failed step", "time", "message")]
    for outcome in report.outcomes:
        rows.append(
            (
                outcome.job.serial,
                outcome.job.fixture or outcome.job.device,
                outcome.result.upper() if outcome.result != Ending.PASSED else "PASS",
                outcome.failed_step or "",
                f"{outcome.duration_s:.1f} s",
                (outcome.message.splitlines() or [""])[0][:90] if outcome.result != Ending.PASSED else "",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    total = len(report.outcomes)
    rate = 100.0 * report.passed / total if total else 0.0
    print(
        f"\nbatch {report.batch_id}: {report.passed} passed, {report.failed} failed of {total} "
        f"({rate:.0f} % yield) in {report.wall_s:.1f} s"
    )


# long: the batch command: arguments, service or in-process, progress, exit code — in that order
def run(args: argparse.Namespace) -> int:
    from station.cli.serve import in_process

    if in_process(args):
        return run_in_process(args)
    """The batch runs in the station service (started for this user if none runs); this command sends the
    manifest and prints the progress.  Ctrl-C cancels the batch; a killed command leaves it running."""
    from pathlib import Path

    from station.cli.serve import call_unlocking, flow_event, service
    from station.cli.served import follow_messages
    from station.errors import ConfigError

    manifest = Path(args.manifest)
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read the manifest {manifest}: {exc.strerror or exc}") from exc
    if args.jobs is not None and args.jobs < 1:
        raise StationError("--jobs must be at least 1")
    request = {
        "manifest": text,
        "manifest_name": str(manifest),
        "jobs": args.jobs,
        "profile": args.profile,
        "operator": args.operator or getpass.getuser(),
        "batch_id": args.batch_id,
    }
    observer = LiveProgress()
    with EventLog(args.events) as log, service(args) as client:
        show = log.wrap(observer)
        started = call_unlocking(client, "batch", request)
        print(
            f"batch {started['batch_id']}: {started['boards']} boards on {started['fixtures']} fixtures, "
            f"{started['slots']} at once",
            flush=True,
        )
        done: dict[str, Any] | None = None

        def handle(message: dict[str, Any]) -> bool:
            nonlocal done
            if "batch_done" in message and message["batch_done"]["batch_id"] == started["group"]:
                done = message["batch_done"]
            elif "event" in message:
                show(flow_event(message["event"]))
            return done is not None

        if follow_messages(client, handle, abort={"group": started["group"]}):
            print("cancelled: running units were left failed and can be resumed", file=sys.stderr)
            return 130
    if done is None:
        raise StationError("the station service ended before the batch did — see `station units`")
    report = BatchReport(done["batch_id"], wall_s=float(done["wall_s"]))
    for row in done["outcomes"]:
        report.outcomes.append(
            JobOutcome(
                BatchJob(row["serial"], row["device"], row["fixture"], line=int(row["line"] or 0)),
                row["result"],
                unit_id=row["unit_id"],
                failed_step=row["failed_step"],
                message=row["message"] or "",
                duration_s=float(row["duration_s"] or 0.0),
            )
        )
    print_summary(report)
    return 0 if report.all_passed else 1


def run_in_process(args: argparse.Namespace) -> int:
    """The way before the station service, kept for STATION_IN_PROCESS=1 (tests of the audit's crash safety,
    debugging): the units run under this command and end with it."""
    from pathlib import Path

    from station.cli.context import open_station
    from station.engine import choose_profile, known_fixtures

    station = open_station(args.home)
    try:
        fixtures = known_fixtures(station.home, station.config)
        jobs = read_manifest(Path(args.manifest), fixtures={name: f.device for name, f in fixtures.items()})
        profiles: dict[str, DeviceProfile] = {}

        def profile_for(job: BatchJob) -> DeviceProfile:
            # The one rule the window uses too: --profile, else the fixture's own, else the station default.
            name = choose_profile(station.config, fixtures.get(job.fixture or ""), explicit=args.profile)
            if name not in profiles:
                profiles[name] = load_profile(name, station.home.profiles_dir)
            return profiles[name]

        for job in jobs:
            profile_for(job)  # an unknown profile is refused before the passphrase prompt
        default = profile_for(jobs[0])
        observer = LiveProgress()
        with EventLog(args.events) as log:
            provisioner = Provisioner(
                home=station.home,
                config=station.config,
                ca=station.load_ca(),
                audit=station.audit,
                observer=log.wrap(observer),
                line=station.line(),
            )
            slots = args.jobs or len({job.device for job in jobs})
            batch = Batch(
                provisioner,
                profile=default,
                operator=args.operator or getpass.getuser(),
                jobs=slots,
                batch_id=args.batch_id,
                profile_for=profile_for,
            )
            print(
                f"batch {batch.batch_id}: {len(jobs)} boards on {len({job.device for job in jobs})} fixtures, "
                f"{slots} at once",
                flush=True,
            )
            try:
                report = batch.run(jobs)
            except KeyboardInterrupt:
                print("cancelled: running units were left failed and can be resumed", file=sys.stderr)
                return 130
        print_summary(report)
        return 0 if report.all_passed else 1
    finally:
        station.close()
