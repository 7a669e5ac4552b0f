"""`station provision`: one board from scanned serial to PASS or FAIL, printed live."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from station.cli.events import EventLog
from station.engine.outcome import Ending
from station.errors import StationError
from station.flow import FlowEvent
from station.profiles import load_profile
from station.states import StepOutcome

EXAMPLE = """\
examples:
  station provision --serial 202600000000001 --device ssh://root@127.0.0.2:2222
  station provision --serial 202600000000001 --device ssh://root@127.0.0.2:2222 --resume
  station provision --serial 202600000000001 --device ssh://root@127.0.0.2:2222 --restart
  station provision --serial 202600000000001 --device ssh://root@127.0.0.2:2222 \\
      --reprovision --reason "customer return, board re-imaged"

A board whose last unit was aborted because its SSH host key changed keeps being refused until it is
re-onboarded explicitly: --reprovision --reason "…" pins the key it shows now (both units stay in the log).

The board runs in the station service (`station serve`); with none running, one is started for you
(outside production mode) and ends by itself when idle.  Ctrl-C aborts the unit (failed, resumable);
closing the terminal leaves it running in the service (`station units`, `station units --follow`).
A locked CA is unlocked first: the passphrase from STATION_CA_PASSPHRASE (not in production mode) or
asked for, sent to the service.  Exit status 0 only on PASS.
"""


# How long the command waits after its unit for the label to print and the MES to take the record.
SETTLE_S = 60.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="enrol one board (wipe, token, key, CSR, certificate, TLS proof)",
        description="Provision one board through the Welma secure-storage enrollment.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--serial", required=True, help="the board's serial number as scanned from its label")
    parser.add_argument(
        "--device", required=True, help="ssh://root@HOST:PORT or serial:///dev/ttyUSB0?baud=115200"
    )
    parser.add_argument("--profile", help="device profile (default: station.toml's default_profile)")
    parser.add_argument("--operator", default=None, help="who provisions (default: the login name)")
    parser.add_argument("--fixture", help="fixture name recorded with the unit")
    parser.add_argument(
        "--order",
        metavar="ID",
        help="the work order the board is built for (default: the open order holding the serial)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="continue this serial's failed unit from its failed step"
    )
    mode.add_argument(
        "--restart",
        action="store_true",
        help="abandon this serial's failed unit and start again from the first step",
    )
    mode.add_argument(
        "--reprovision",
        action="store_true",
        help="enrol a serial again (needs --reason): one that already passed (supersedes the old unit), "
        "or re-onboard one whose last unit was aborted for a changed host key (pins the new key)",
    )
    parser.add_argument("--reason", help="why the board is re-provisioned (recorded in the audit log)")
    parser.add_argument(
        "--events",
        metavar="FILE",
        help="also write every progress event as one JSON line to FILE (for a line's MES or a log)",
    )
    parser.set_defaults(handler=run)


def print_event(event: FlowEvent) -> None:
    """Live progress a person can follow in a terminal."""
    if event.kind == "unit_started":
        print(f"unit {event.unit_id}: serial {event.serial} ({event.message})", flush=True)
    elif event.kind == "step_started":
        eta = f" (usually {event.eta_s:.1f} s)" if event.eta_s else ""
        retry = f" — attempt {event.attempt}" if event.attempt > 1 else ""
        print(f"  [{event.index + 1:2}/{event.count}] {event.title}…{eta}{retry}", flush=True)
    elif event.kind == "step_finished":
        word = {
            StepOutcome.PASSED: "ok",
            StepOutcome.SKIPPED: "skipped",
            StepOutcome.RETRYING: "retrying",
            StepOutcome.FAILED: "FAILED",
        }[StepOutcome(event.outcome)]
        line = f"         {word} in {event.duration_s:.2f} s"
        if event.outcome != StepOutcome.PASSED and event.message:
            line += f": {event.message.splitlines()[0]}"
        print(line, flush=True)
    elif event.kind == "unit_finished" and event.outcome not in (Ending.REFUSED, Ending.NOT_STARTED):
        verdict = "PASS" if event.outcome == Ending.PASSED else event.outcome.upper()
        print(f"{verdict}: {event.message}", flush=True)


# long: the provision command: arguments, service or in-process, progress, exit code — in that order
def run(args: argparse.Namespace) -> int:
    from station.cli.serve import in_process

    if in_process(args):
        return run_in_process(args)
    """The board runs in the station service (started for this user if none runs): this command asks for it
    and prints its progress.  Ctrl-C aborts the unit (failed, resumable); a killed command leaves it running."""
    from station.cli.serve import call_unlocking, flow_event, service
    from station.cli.served import follow_messages

    if args.reprovision and not (args.reason and args.reason.strip()):
        raise StationError("--reprovision needs --reason TEXT: say why the board is enrolled again")
    if args.reason and not args.reprovision:
        raise StationError("--reason is only used with --reprovision")
    request = {
        "serial": args.serial,
        "device": args.device,
        "profile": args.profile,
        "operator": args.operator or getpass.getuser(),
        "fixture": args.fixture,
        "resume": args.resume,
        "restart": args.restart,
        "reprovision_reason": args.reason if args.reprovision else None,
        "order": args.order,
    }
    with EventLog(args.events) as log, service(args) as client:
        show = log.wrap(print_event)
        started = call_unlocking(client, "retry" if args.resume else "provision", request)
        job = started["job"]
        outcome = None

        def handle(message: dict[str, Any]) -> bool:
            nonlocal outcome
            record = message.get("event")
            if record is None or record.get("job") != job:
                return False
            event = flow_event(record)
            show(event)
            if event.kind == "unit_finished":
                outcome = event.result
            return outcome is not None

        cancelling = "cancelling: the unit will be left failed and can be resumed with --resume"
        if follow_messages(client, handle, abort={"jobs": [job]}, cancelling=cancelling):
            return 130
        # The label and the MES record of the unit, as they go (the service says when they are settled).
        settled_by = time.monotonic() + SETTLE_S
        while outcome is not None and time.monotonic() < settled_by:
            message = client.next_message(wait_s=max(0.1, settled_by - time.monotonic()))
            if message is None or message.get("done") == started["group"]:
                break
            if "notice" in message:
                print(message["notice"], file=sys.stderr, flush=True)
    if outcome is None:
        raise StationError("the station service ended before the unit did — see `station units`")
    if outcome.kind in (Ending.REFUSED, Ending.NOT_STARTED):
        raise StationError(outcome.message)
    return 0 if outcome.passed else 1


def run_in_process(args: argparse.Namespace) -> int:
    """The way before the station service, kept for STATION_IN_PROCESS=1 (tests of the audit's crash safety,
    debugging): the units run under this command and end with it."""
    from station.cli.context import open_station
    from station.engine import Scheduler, UnitJob, choose_profile, known_fixtures

    if args.reprovision and not (args.reason and args.reason.strip()):
        raise StationError("--reprovision needs --reason TEXT: say why the board is enrolled again")
    if args.reason and not args.reprovision:
        raise StationError("--reason is only used with --reprovision")
    station = open_station(args.home)
    try:
        fixture = known_fixtures(station.home, station.config).get(args.fixture or "")
        profile = load_profile(
            choose_profile(station.config, fixture, explicit=args.profile), station.home.profiles_dir
        )
        profile.validate_serial(args.serial)  # before the passphrase prompt, before any device
        ca = station.load_ca()
        with EventLog(args.events) as log:
            # The unit runs in its own worker process (station.engine), so Ctrl-C cancels it cleanly: the
            # unit ends failed and resumable.
            scheduler = Scheduler(
                home=station.home,
                config=station.config,
                ca=ca,
                observer=log.wrap(print_event),
                slots=1,
                line=station.line(),
            )
            job = UnitJob(
                serial=args.serial,
                device=args.device,
                profile=profile,
                operator=args.operator or getpass.getuser(),
                fixture=args.fixture,
                resume=args.resume,
                restart=args.restart,
                reprovision_reason=args.reason if args.reprovision else None,
                order=args.order,
            )
            try:
                (outcome,) = scheduler.run([job])
            except KeyboardInterrupt:
                print(
                    "cancelling: the unit will be left failed and can be resumed with --resume",
                    file=sys.stderr,
                )
                return 130
        if outcome.kind in (Ending.REFUSED, Ending.NOT_STARTED):
            raise StationError(outcome.message)
        return 0 if outcome.passed else 1
    finally:
        station.close()
