"""Units: provision (and retry) one board, run a batch, abort, list the recent units, follow the running ones.

Units belong to the service, not to the connection that asked for them (:class:`~station.service.connection.Group`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from station.batch import BatchJob, new_batch_id, read_manifest_text
from station.cli.events import event_record
from station.errors import StationError
from station.service.connection import Connection, Group, Handler, bind

if TYPE_CHECKING:
    from station.service.server import StationService


def handlers(service: StationService) -> dict[str, Handler]:
    """The unit requests: op name → handler."""
    return {
        "provision": bind(service, provision),
        "retry": bind(service, provision),
        "batch": bind(service, batch),
        "abort": bind(service, abort),
        "units": bind(service, units),
        "follow": bind(service, follow),
    }


def _unit_job(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    from station.engine import UnitJob, choose_profile, known_fixtures
    from station.profiles import load_profile

    fixture = known_fixtures(service.home, service.config).get(args.get("fixture") or "")
    profile = load_profile(
        choose_profile(service.config, fixture, explicit=args.get("profile")), service.home.profiles_dir
    )
    serial = str(args["serial"])
    profile.validate_serial(serial)  # before anything else: nothing touches a board with a bad serial
    return UnitJob(
        serial=serial,
        device=str(args["device"]),
        profile=profile,
        operator=unit_operator(conn, args),
        fixture=args.get("fixture"),
        resume=bool(args.get("resume")),
        restart=bool(args.get("restart")),
        reprovision_reason=args.get("reprovision_reason"),
        order=args.get("order"),
        # The window's batch grid runs its boards one by one: each keeps the grid's batch id, and a
        # tile (no log) does not want the device output.
        batch=str(args["batch"]) if args.get("batch") else None,
        stream_output=bool(args.get("stream_output", True)),
    )


def provision(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    service._fresh_config()
    job = _unit_job(service, conn, args)
    engine = service._engine()
    group = Group(id=f"unit-{time.monotonic_ns()}", caller=conn.caller, request_id=args.get("_request_id"))
    group.subscribers.add(conn)
    with service._lock:
        number = engine.submit(job)
        group.jobs[number] = BatchJob(job.serial, job.device, job.fixture)
        service._job_group[number] = group
        service._groups[group.id] = group
    return {"job": number, "group": group.id}


def _manifest_jobs(
    service: StationService, args: dict[str, Any]
) -> tuple[list[BatchJob], Callable[[BatchJob], Any]]:
    """The manifest's boards, each with its profile loaded (any bad profile refuses the batch before it starts)."""
    from station.engine import choose_profile, known_fixtures
    from station.profiles import DeviceProfile, load_profile

    service._fresh_config()
    fixtures = known_fixtures(service.home, service.config)
    jobs = read_manifest_text(
        str(args["manifest"]),
        source=str(args.get("manifest_name") or "manifest"),
        fixtures={name: f.device for name, f in fixtures.items()},
    )
    profiles: dict[str, DeviceProfile] = {}

    def profile_for(job: BatchJob) -> DeviceProfile:
        name = choose_profile(service.config, fixtures.get(job.fixture or ""), explicit=args.get("profile"))
        if name not in profiles:
            profiles[name] = load_profile(name, service.home.profiles_dir)
        return profiles[name]

    for job in jobs:
        profile_for(job)
    return jobs, profile_for


def batch(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    from station.engine import UnitJob

    jobs, profile_for = _manifest_jobs(service, args)
    engine = service._engine()
    devices = len({job.device for job in jobs})
    slots = int(args.get("jobs") or devices)
    if slots < 1:
        raise StationError("--jobs must be at least 1")
    batch_id = str(args.get("batch_id") or new_batch_id())
    operator = unit_operator(conn, args)
    units = [
        UnitJob(
            serial=job.serial,
            device=job.device,
            profile=profile_for(job),
            operator=operator,
            fixture=job.fixture,
            batch=batch_id,
            order=job.order,
            stream_output=False,
        )
        for job in jobs
    ]
    group = Group(id=batch_id, caller=conn.caller, request_id=args.get("_request_id"))
    group.subscribers.add(conn)
    with service._lock:
        service._groups[group.id] = group
    runner = threading.Thread(
        target=_run_batch,
        args=(service, engine, group, list(zip(jobs, units, strict=True)), slots),
        name=f"service-batch-{batch_id}",
        daemon=True,
    )
    with service._lock:
        service._batches.append(runner)
    runner.start()
    return {
        "batch_id": batch_id,
        "boards": len(jobs),
        "fixtures": devices,
        "slots": slots,
        "group": group.id,
    }


def _run_batch(
    service: StationService, engine: Any, group: Group, pending: list[tuple[BatchJob, Any]], slots: int
) -> None:
    """Keep at most ``slots`` fixtures of this batch working; boards of one fixture one after another."""
    began = time.monotonic()
    order: list[int] = []
    listed: dict[int, BatchJob] = {}
    in_flight: dict[int, str] = {}
    waiting = list(pending)
    while waiting or in_flight:
        for number in [n for n in in_flight if engine.outcome(n) is not None]:
            del in_flight[number]
        if group.cancelled:
            waiting.clear()
        busy = set(in_flight.values())
        for item in list(waiting):
            if len(in_flight) >= slots:
                break
            job, unit = item
            if job.device in busy:
                continue
            waiting.remove(item)
            with service._lock:
                number = engine.submit(unit)
                group.jobs[number] = job
                service._job_group[number] = group
            order.append(number)
            listed[number] = job
            in_flight[number] = job.device
            busy.add(job.device)
        if in_flight:
            engine.wait(list(in_flight), timeout_s=0.2)
        if not engine.alive:
            break
    outcomes = _batch_outcomes(engine, order, listed, pending)
    service._settled()
    message = {"batch_done": {"batch_id": group.id, "outcomes": outcomes, "wall_s": time.monotonic() - began}}
    with service._lock:
        group.done = True
        watchers = set(group.subscribers)
    for conn in watchers:
        conn.push(message)


def _batch_outcomes(
    engine: Any, order: list[int], listed: dict[int, BatchJob], pending: list[tuple[BatchJob, Any]]
) -> list[dict[str, Any]]:
    """How each board of a batch ended, in the order they started, then the boards never started."""
    outcomes = []
    for number in order:
        outcome = engine.outcome(number)
        job = listed[number]
        outcomes.append(
            {
                "serial": job.serial,
                "device": job.device,
                "fixture": job.fixture,
                "line": job.line,
                "result": str(outcome.kind) if outcome else "not started",
                "unit_id": outcome.unit_id if outcome else None,
                "failed_step": outcome.failed_step if outcome else None,
                "message": outcome.message if outcome else "the station stopped first",
                "duration_s": outcome.duration_s if outcome else 0.0,
            }
        )
    not_started = [job for job, _unit in pending if job not in listed.values()]
    for job in not_started:
        outcomes.append(
            {
                "serial": job.serial,
                "device": job.device,
                "fixture": job.fixture,
                "line": job.line,
                "result": "not started",
                "unit_id": None,
                "failed_step": None,
                "message": "the batch was cancelled before this board's turn",
                "duration_s": 0.0,
            }
        )
    return outcomes


def abort(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    engine = service._engine()
    stopped: list[int] = []
    with service._lock:
        if args.get("group") in service._groups:
            group = service._groups[args["group"]]
            group.cancelled = True
            stopped = [n for n in group.jobs if engine.outcome(n) is None]
        for number in args.get("jobs") or []:
            if int(number) in service._job_group:
                stopped.append(int(number))
        serial = args.get("serial")
        if serial:
            stopped += [
                n
                for n in service._running_jobs
                if service._last_event.get(n) is not None and service._last_event[n].serial == serial
            ]
    if serial and not stopped:
        raise StationError(
            f"no unit of serial {serial} is running in the station service — see station units"
        )
    for number in set(stopped):
        engine.cancel(number)
    return {"aborted": sorted(set(stopped))}


def units(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    from station.cli.units import format_table
    from station.service.audit_wire import filter_from_args, page_bounds

    _, limit = page_bounds({"limit": args.get("limit") or 50})  # at most a page (PAGE_CAP units)
    units = service.station.audit.units_page(limit=limit, filters=filter_from_args(args))
    return {"text": format_table(units) if units else "", "count": len(units)}


def follow(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    with service._lock:
        conn.follows = True
        running = [
            event_record(service._last_event[n])
            for n in sorted(service._running_jobs)
            if n in service._last_event
        ]
    return {"running": running}


def unit_operator(conn: Connection, args: dict[str, Any]) -> str:
    """Who a unit records as its operator: the person signed in at this kiosk (their session, checked by the
    service), else the name the window or command sent, else the OS account."""
    signed = args.get("_signed_in")
    if signed is not None:
        return str(signed.person)
    return str(args.get("operator") or conn.caller.account)
