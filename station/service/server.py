"""`station serve`: the station service — the one process that opens the station home and runs units.

It hosts the one :class:`~station.engine.Scheduler`, the audit log, the CA (unlocked once) and the line
hand-off, and answers clients (the CLI, later the window) on a Unix socket (:mod:`station.service.frames`).
Each connection's caller is who the kernel says it is (SO_PEERCRED); every request is checked against
:data:`station.service.ops.OPS` and its role, and refusals are recorded in the audit log.

Units belong to the service, not to the connection that asked for them: a client that goes away leaves its
units running; any client may follow the running units (``follow``), two at once or more.  Events go to each
client through its own bounded queue and writer thread: a client that stops reading is dropped, the engine
never waits for it.
"""

from __future__ import annotations

import fcntl
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station.audit.service import Caller, ServiceRecords
from station.batch import BatchJob, new_batch_id, read_manifest_text
from station.cli.events import event_record
from station.errors import StationError
from station.flow import FlowEvent
from station.home import StationHome
from station.roles import Role, account_name, allowed, roles_of
from station.service import audit_reads, frames
from station.service.hardening import harden_process
from station.service.ops import OPS, SECRET_ARGS, Op, refusal
from station.service.sessions import SessionError, Sessions

# How many messages may wait for one client before it is dropped as not reading.
CLIENT_QUEUE_LIMIT = 20000
# An auto-started (per-user, demo) service ends this long after its last client left and its last unit ended.
IDLE_LINGER_S = 1.0
# How long the service waits for a client's next request before it checks on itself again.
POLL_S = 0.5
# The credential file (systemd LoadCredential=ca-passphrase:…) holding the CA passphrase or token PIN.
CREDENTIAL_NAME = "ca-passphrase"
SERVICE_LOG = "service.log"


class Connection:
    """One client: its caller, its roles, and a writer thread draining its queue."""

    def __init__(self, sock: socket.socket, caller: Caller, roles: frozenset[Role]) -> None:
        self.sock = sock
        self.caller = caller
        self.roles = roles
        self.follows = False
        self.closed = threading.Event()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(CLIENT_QUEUE_LIMIT)
        self._writer = threading.Thread(
            target=self._write_loop, name=f"service-writer-{caller.pid}", daemon=True
        )
        self._writer.start()

    def push(self, message: dict[str, Any]) -> None:
        """Queue a message for this client; never blocks (a client that does not read is dropped)."""
        if self.closed.is_set():
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.close()

    def _write_loop(self) -> None:
        while True:
            message = self._queue.get()
            if message is None or self.closed.is_set():
                return
            try:
                frames.send(self.sock, message)
            except (frames.FrameError, OSError):
                self.close()
                return

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass


@dataclass
class Group:
    """The units one request asked for (one board, or one batch), and who watches them."""

    id: str
    caller: Caller
    request_id: int | None
    subscribers: set[Connection] = field(default_factory=set)
    jobs: dict[int, BatchJob] = field(default_factory=dict)
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)
    cancelled: bool = False
    done: bool = False


class StationService:
    def __init__(
        self,
        home: StationHome,
        socket_path: Path,
        *,
        exit_when_idle: bool = False,
        credential: Path | None = None,
    ) -> None:
        from station.cli.context import open_station

        self.home = home
        self.socket_path = socket_path
        self.exit_when_idle = exit_when_idle
        self.station = open_station(str(home.root))
        self.config = self.station.config
        self._config_seen = self._config_stamp()
        self.records = ServiceRecords(self.station.audit)
        self.uid = os.geteuid()
        self.scheduler: Any = None  # station.engine.Scheduler, once the CA is unlocked
        self.ca: Any = None
        self._lock = threading.RLock()
        self._connections: set[Connection] = set()
        self._groups: dict[str, Group] = {}
        self._job_group: dict[int, Group] = {}
        self._last_event: dict[int, FlowEvent] = {}
        self._running_jobs: set[int] = set()
        self._batches: list[threading.Thread] = []
        self._records: queue.SimpleQueue[tuple[int, Caller, int | None] | None] = queue.SimpleQueue()
        self._recorder = threading.Thread(target=self._record_loop, name="service-recorder", daemon=True)
        self._recorder.start()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._lock_file: int | None = None
        self._handlers: dict[str, Callable[[Connection, dict[str, Any]], Any]] = {
            "whoami": self._whoami,
            "sign_in": self._sign_in,
            "ca_unlock": self._ca_unlock,
            "provision": self._provision,
            "retry": self._provision,
            "batch": self._batch,
            "abort": self._abort,
            "units": self._units,
            "follow": self._follow,
            "revoke": self._revoke,
            "audit_export": self._export,
            "crl": self._crl,
            "sign_out": self._sign_out,
            "people_change": self._people_change,
            "audit_verify": self._audit_verify,
            "backup": self._backup,
            "admin_set_pin": self._admin_set_pin,
            "production_mode": self._production_mode,
            "audit_checkpoint": self._audit_checkpoint,
            "labels": self._labels,
            "fixtures_list": self._fixtures_list,
            "fixtures": self._fixtures,
        }
        self._handlers.update(audit_reads.handlers(self))
        # Kiosk sessions (station.service.sessions): token → a person signed in, bound to the caller's uid.
        self.sessions = Sessions()
        self._unlock_from_credentials(credential)

    # -- the CA ------------------------------------------------------------------------------------------

    def _ca_kind(self) -> dict[str, Any]:
        from station.pki.token import TOKEN_FILE, TokenSettings

        token_file = self.home.ca_dir / TOKEN_FILE
        if token_file.exists():
            return {"kind": "token", "label": TokenSettings.read(token_file).token_label}
        return {"kind": "file"}

    def _unlock_from_credentials(self, credential: Path | None) -> None:
        """Unlock at start without a person: a credential file (systemd LoadCredential=), or a token's
        ``[ca] pin_file``.  Never from this process's environment in production mode."""
        from station.cli.ca import read_secret_file
        from station.config import load_ca_settings
        from station.pki import CA_CERT_FILE

        if not (self.home.ca_dir / CA_CERT_FILE).exists():
            return
        if credential is None and os.environ.get("CREDENTIALS_DIRECTORY"):
            candidate = Path(os.environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
            credential = candidate if candidate.exists() else None
        try:
            if credential is not None:
                self.unlock(read_secret_file(credential, "CA passphrase"))
            elif self._ca_kind()["kind"] == "token" and load_ca_settings(self.home.config_file).pin_file:
                self.unlock(None)
        except StationError as exc:
            print(f"station service: the CA stays locked: {exc}", file=sys.stderr, flush=True)

    def unlock(self, secret: str | None) -> None:
        """Load the CA key once (the secret is not kept), then start the engine that uses it."""
        from station.audit.checkpoints import CheckpointSigner
        from station.cli.ca import read_token_pin
        from station.config import load_ca_settings
        from station.engine import Scheduler
        from station.pki import CertificateAuthority

        with self._lock:
            if self.scheduler is not None:
                return
            settings = load_ca_settings(self.home.config_file)
            kind = self._ca_kind()
            if kind["kind"] == "token":
                pin = secret if secret is not None else read_token_pin(self.home, kind["label"], settings)
                ca = CertificateAuthority.load(self.home.ca_dir, pin=pin)
            else:
                if secret is None:
                    raise StationError("the CA passphrase is needed to unlock the station's CA")
                ca = CertificateAuthority.load(self.home.ca_dir, passphrase=secret.encode("utf-8"))
            del secret
            ca.max_certificates_per_day = settings.max_certificates_per_day
            self.station.audit.attach_checkpoint_signer(
                CheckpointSigner.for_certificate(ca.certificate, ca.sign_bytes)
            )
            self.ca = ca
            self.scheduler = Scheduler(
                home=self.home, config=self.config, ca=ca, observer=self._on_event, line=self._line()
            )
            self.scheduler.start()
        print("station service: the CA is unlocked; units can run", file=sys.stderr, flush=True)

    def _line(self) -> Any:
        """The label printer and MES hand-off; what it says goes to the log and to the clients watching units."""
        from station.line.handoff import LineHandOff

        if self.station._line is None:
            self.station._line = LineHandOff(
                config=self.config, home=self.home, audit=self.station.audit, notify=self._notice
            )
        return self.station._line

    def _notice(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        with self._lock:
            watchers = {
                conn for group in self._groups.values() if not group.done for conn in group.subscribers
            }
            watchers |= {conn for conn in self._connections if conn.follows}
        for conn in watchers:
            conn.push({"notice": text})

    def _settled(self) -> None:
        """Wait (bounded) until the labels of ended units are printed and the MES took their records, as a
        command did before it exited; what stays queued is said (the service keeps sending it)."""
        line = self.station._line
        if line is None:
            return
        line.wait_printed(self.config.label.timeout_s * 2 + 1)
        if not line.mes.wait_delivered(self.config.mes.timeout_s):
            self._notice(
                f"{line.mes.pending()} MES record(s) kept in {self.home.root / 'mes'}; the station service "
                "keeps sending them"
            )

    def _finish_unit_group(self, group: Group) -> None:
        self._settled()
        with self._lock:
            group.done = True
            watchers = set(group.subscribers)
        for conn in watchers:
            conn.push({"done": group.id})

    def _config_stamp(self) -> tuple[int, int] | None:
        try:
            info = self.home.config_file.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def _fresh_config(self) -> None:
        """station.toml edited since the service read it: read it again (and restart the idle engine with it);
        while units run, they and new ones keep the settings they started with until the engine is idle."""
        from station.config import load_config
        from station.engine import Scheduler

        stamp = self._config_stamp()
        if stamp == self._config_seen:
            return
        with self._lock:
            if self.scheduler is not None and self.scheduler.busy:
                return
            config = load_config(self.home.config_file)
            self._config_seen = stamp
            self.config = self.station.config = config
            if self.scheduler is not None:
                self.scheduler.close()
                line = self.station._line
                if line is not None:
                    line.close()
                    self.station._line = None
                self.scheduler = Scheduler(
                    home=self.home, config=config, ca=self.ca, observer=self._on_event, line=self._line()
                )
                self.scheduler.start()
        print("station service: station.toml changed; read it again", file=sys.stderr, flush=True)

    def _engine(self) -> Any:
        self._fresh_config()
        if self.scheduler is None:
            raise CaLocked(self._ca_kind())
        if not self.scheduler.alive:
            why = f": {self.scheduler.failure}" if self.scheduler.failure else ""
            raise StationError(f"the station's engine has stopped{why} — restart the station service")
        return self.scheduler

    # -- events from the engine thread (keep short) ------------------------------------------------------

    def _on_event(self, event: FlowEvent) -> None:
        message = {"event": event_record(event)}
        with self._lock:
            group = self._job_group.get(event.job)
            watchers = set(group.subscribers) if group else set()
            watchers |= {conn for conn in self._connections if conn.follows}
            if event.kind == "unit_finished":
                self._running_jobs.discard(event.job)
                self._last_event.pop(event.job, None)
                if group is not None and event.result is not None:
                    group.outcomes[event.job] = message["event"]["result"]
                    if group.id.startswith("unit-"):
                        threading.Thread(
                            target=self._finish_unit_group, args=(group,), name="service-settle", daemon=True
                        ).start()
            else:
                self._running_jobs.add(event.job)
                if event.kind != "output":
                    self._last_event[event.job] = event
            if event.kind == "unit_started" and event.unit_id is not None and group is not None:
                self._records.put((event.unit_id, group.caller, group.request_id))
        for conn in watchers:
            conn.push(message)

    def _record_loop(self) -> None:
        while True:
            item = self._records.get()
            if item is None:
                return
            unit_id, caller, request_id = item
            try:
                self.records.record_unit_account(unit_id, caller, request_id=request_id)
            except Exception as exc:  # noqa: BLE001 - said, never lost silently
                print(
                    f"station service: could not record the account of unit {unit_id}: {exc}",
                    file=sys.stderr,
                    flush=True,
                )

    # -- requests --------------------------------------------------------------------------------------

    def _whoami(self, conn: Connection, args: dict[str, Any]) -> Any:
        return {
            "account": conn.caller.account,
            "uid": conn.caller.uid,
            "pid": conn.caller.pid,
            "roles": sorted(role.value for role in conn.roles),
            "service_account": account_name(self.uid),
            "production": self.config.production,
            "ca_unlocked": self.scheduler is not None,
            "home": str(self.home.root),
        }

    def _sign_in(self, conn: Connection, args: dict[str, Any]) -> Any:
        """A person signs in at a kiosk window with their own credential, checked here (station.people: the
        lockout is kept in the store and outlives restarts).  The answer is their time-limited session; the
        secret is never recorded (service_requests keeps the name only)."""

        name = str(args.get("name") or "").strip()
        secret = args.get("secret")
        if not name or not isinstance(secret, str):
            return {"signed_in": conn.caller.account, "how": "os-account"}
        people = self._people()
        session = people.verify(name, secret, account=conn.caller.account)
        token = self.sessions.open(session, uid=conn.caller.uid)
        return {
            "signed_in": session.person,
            "how": "person",
            "role": session.role.value,
            "expires_at": session.expires_at,
            "account": conn.caller.account,
            "session": token,
        }

    def _people(self) -> Any:
        from station.people import People

        return People(self.home, self.station.audit, settings=self.config.people)

    def _sign_out(self, conn: Connection, args: dict[str, Any]) -> Any:
        signed = self.sessions.close(str(args.get("_session_token") or ""), uid=conn.caller.uid)
        if signed is not None:
            self._people().sign_out(signed)
        return {"signed_out": signed.person if signed else None}

    def _actor(self, conn: Connection, args: dict[str, Any]) -> Any:
        """Who acts: the person signed in at this kiosk (their role), else the OS account (its groups)."""
        from station.people import Actor

        signed = args.get("_signed_in")
        if signed is not None:
            return Actor.for_person(signed, account=conn.caller.account)
        return Actor(
            name=conn.caller.account,
            account=conn.caller.account,
            administrator=allowed(conn.roles, Role.ADMIN),
        )

    def _people_change(self, conn: Connection, args: dict[str, Any]) -> Any:
        """A person's credential changed: with their old one, or by an administrator (an OS account in
        welma-admin, or an administrator signed in at this kiosk)."""
        name = str(args.get("name") or "").strip()
        new = args.get("new_secret")
        old = args.get("old_secret")
        if not name or not isinstance(new, str) or (old is not None and not isinstance(old, str)):
            raise StationError("a credential change needs the person's name and the new credential (text)")
        person = self._people().change(name, new, by=self._actor(conn, args), old_secret=old)
        return {"person": person.name, "kind": person.kind.value}

    def _ca_unlock(self, conn: Connection, args: dict[str, Any]) -> Any:
        secret = args.get("secret")
        if secret is not None and not isinstance(secret, str):
            raise StationError("the CA secret must be text")
        self.unlock(secret)
        return {"ca_unlocked": True}

    def _unit_job(self, conn: Connection, args: dict[str, Any]) -> Any:
        from station.engine import UnitJob, choose_profile, known_fixtures
        from station.profiles import load_profile

        fixture = known_fixtures(self.home, self.config).get(args.get("fixture") or "")
        profile = load_profile(
            choose_profile(self.config, fixture, explicit=args.get("profile")), self.home.profiles_dir
        )
        serial = str(args["serial"])
        profile.validate_serial(serial)  # before anything else: nothing touches a board with a bad serial
        return UnitJob(
            serial=serial,
            device=str(args["device"]),
            profile=profile,
            operator=str(args.get("operator") or conn.caller.account),
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

    def _provision(self, conn: Connection, args: dict[str, Any]) -> Any:
        self._fresh_config()
        job = self._unit_job(conn, args)
        engine = self._engine()
        group = Group(
            id=f"unit-{time.monotonic_ns()}", caller=conn.caller, request_id=args.get("_request_id")
        )
        group.subscribers.add(conn)
        with self._lock:
            number = engine.submit(job)
            group.jobs[number] = BatchJob(job.serial, job.device, job.fixture)
            self._job_group[number] = group
            self._groups[group.id] = group
        return {"job": number, "group": group.id}

    def _batch(self, conn: Connection, args: dict[str, Any]) -> Any:
        from station.engine import UnitJob, choose_profile, known_fixtures
        from station.profiles import DeviceProfile, load_profile

        self._fresh_config()
        fixtures = known_fixtures(self.home, self.config)
        jobs = read_manifest_text(
            str(args["manifest"]),
            source=str(args.get("manifest_name") or "manifest"),
            fixtures={name: f.device for name, f in fixtures.items()},
        )
        profiles: dict[str, DeviceProfile] = {}

        def profile_for(job: BatchJob) -> DeviceProfile:
            name = choose_profile(self.config, fixtures.get(job.fixture or ""), explicit=args.get("profile"))
            if name not in profiles:
                profiles[name] = load_profile(name, self.home.profiles_dir)
            return profiles[name]

        for job in jobs:
            profile_for(job)
        engine = self._engine()
        devices = len({job.device for job in jobs})
        slots = int(args.get("jobs") or devices)
        if slots < 1:
            raise StationError("--jobs must be at least 1")
        batch_id = str(args.get("batch_id") or new_batch_id())
        operator = str(args.get("operator") or conn.caller.account)
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
        with self._lock:
            self._groups[group.id] = group
        runner = threading.Thread(
            target=self._run_batch,
            args=(engine, group, list(zip(jobs, units, strict=True)), slots),
            name=f"service-batch-{batch_id}",
            daemon=True,
        )
        with self._lock:
            self._batches.append(runner)
        runner.start()
        return {
            "batch_id": batch_id,
            "boards": len(jobs),
            "fixtures": devices,
            "slots": slots,
            "group": group.id,
        }

    def _run_batch(self, engine: Any, group: Group, pending: list[tuple[BatchJob, Any]], slots: int) -> None:
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
                with self._lock:
                    number = engine.submit(unit)
                    group.jobs[number] = job
                    self._job_group[number] = group
                order.append(number)
                listed[number] = job
                in_flight[number] = job.device
                busy.add(job.device)
            if in_flight:
                engine.wait(list(in_flight), timeout_s=0.2)
            if not engine.alive:
                break
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
        self._settled()
        message = {
            "batch_done": {"batch_id": group.id, "outcomes": outcomes, "wall_s": time.monotonic() - began}
        }
        with self._lock:
            group.done = True
            watchers = set(group.subscribers)
        for conn in watchers:
            conn.push(message)

    def _abort(self, conn: Connection, args: dict[str, Any]) -> Any:
        engine = self._engine()
        stopped: list[int] = []
        with self._lock:
            if args.get("group") in self._groups:
                group = self._groups[args["group"]]
                group.cancelled = True
                stopped = [n for n in group.jobs if engine.outcome(n) is None]
            for number in args.get("jobs") or []:
                if int(number) in self._job_group:
                    stopped.append(int(number))
            serial = args.get("serial")
            if serial:
                stopped += [
                    n
                    for n in self._running_jobs
                    if self._last_event.get(n) is not None and self._last_event[n].serial == serial
                ]
        if serial and not stopped:
            raise StationError(
                f"no unit of serial {serial} is running in the station service — see station units"
            )
        for number in set(stopped):
            engine.cancel(number)
        return {"aborted": sorted(set(stopped))}

    def _units(self, conn: Connection, args: dict[str, Any]) -> Any:
        from station.audit import UnitFilter
        from station.cli.units import format_table

        units = self.station.audit.units_page(
            limit=int(args.get("limit") or 50),
            filters=UnitFilter(
                serial_prefix=args.get("serial"), result=args.get("result"), order=args.get("order")
            ),
        )
        return {"text": format_table(units) if units else "", "count": len(units)}

    def _follow(self, conn: Connection, args: dict[str, Any]) -> Any:
        with self._lock:
            conn.follows = True
            running = [
                event_record(self._last_event[n]) for n in sorted(self._running_jobs) if n in self._last_event
            ]
        return {"running": running}

    def _revoke(self, conn: Connection, args: dict[str, Any]) -> Any:
        serial = str(args.get("serial") or "").strip()
        reason = str(args.get("reason") or "").strip()
        if not reason:
            raise StationError("--reason is empty — say why the certificate is revoked (e.g. keyCompromise).")
        typed = str(args.get("by") or "").strip()
        if args.get("_signed_in") is not None and not typed:
            typed = args["_signed_in"].person
        # Who revokes is the OS account the kernel named; a typed name is kept beside it, never instead.
        by = (
            conn.caller.account
            if not typed or typed == conn.caller.account
            else f"{conn.caller.account} (for {typed})"
        )
        record = self.station.audit.revoke(serial=serial, reason=reason, by=by)
        return {
            "serial_hex": record.serial_hex,
            "unit_id": record.unit_id,
            "subject": record.subject,
            "by": by,
        }

    def _crl(self, conn: Connection, args: dict[str, Any]) -> Any:
        """A CRL signed with the unlocked CA, from a log that verifies; the client writes and publishes it."""
        from station.cli.ca import revoked_from_audit
        from station.config import load_ca_settings

        self._engine()  # the CA is unlocked (else: say how to unlock it)
        settings = load_ca_settings(self.home.config_file)
        days = int(args.get("next_update_days") or settings.crl_next_update_days)
        pem = self.ca.crl(revoked_from_audit(self.home), next_update_days=days)
        return {
            "pem": pem.decode("ascii"),
            "publish": settings.crl_publish,
            "every": settings.crl_publish_every_minutes,
        }

    def _audit_verify(self, conn: Connection, args: dict[str, Any]) -> Any:
        """`station audit verify` made here (the service owns the log); the client prints what it says."""
        from station.cli.audit import verify_lines

        lines, status = verify_lines(self.home, self.station.audit)
        return {"lines": lines, "status": status}

    def _audit_checkpoint(self, conn: Connection, args: dict[str, Any]) -> Any:
        """`station audit checkpoint`: the head of a log that verifies, signed with the unlocked CA."""
        self._engine()  # the CA is unlocked (else: say how to unlock it)
        report = self.station.audit.verify()
        if not report.ok:
            raise StationError(
                f"The audit log does not verify ({report.problem}) — refusing to sign it; report it "
                "to quality assurance."
            )
        seq = self.station.audit.checkpoint()
        return {"seq": seq, "subject": self.ca.certificate.subject.rfc4514_string()}

    def _labels(self, conn: Connection, args: dict[str, Any]) -> Any:
        """`station label print`: the board's label printed (or reprinted) by the service, recorded by whom."""
        from station.line.labels import LabelDesk

        self._fresh_config()
        serial = str(args.get("serial") or "").strip()
        unit = self.station.audit.find_unit(serial)
        if unit is None:
            raise StationError(
                f"no unit of board {serial} is in the audit log — check the serial (station units)"
            )
        typed = str(args.get("by") or "").strip()
        signed = args.get("_signed_in")
        by = typed or (signed.person if signed is not None else conn.caller.account)
        desk = LabelDesk(config=self.config, audit=self.station.audit)
        outcome = desk.print_unit(unit.id, by=by, reprint=bool(self.station.audit.label_prints(unit.id)))
        return {"message": outcome.message, "printed": outcome.printed}

    def _fixtures_list(self, conn: Connection, args: dict[str, Any]) -> Any:
        """`station fixtures list`: the lines it prints, made from the home the service owns."""
        from station.cli.fixtures import fixture_lines

        self._fresh_config()
        return {"lines": fixture_lines(self.station)}

    def _fixtures(self, conn: Connection, args: dict[str, Any]) -> Any:
        """`station fixtures pin`: ``fetch`` reads the key the fixture's board answers with; ``pin`` writes it
        (only if the board still answers with the key the administrator confirmed) and records it."""
        from station.cli.fixtures import fixture_key, pin_fixture_key

        self._fresh_config()
        name = str(args.get("name") or "")
        known, key_type, fingerprint = fixture_key(self.station, name)
        if args.get("action") == "fetch":
            return {
                "device": known.fixture.device,
                "pinned": known.fixture.host_key,
                "key_type": key_type,
                "fingerprint": fingerprint,
                "file": str(known.file),
            }
        if args.get("action") != "pin":
            raise StationError("a fixtures request is fetch or pin")
        if args.get("fingerprint") != fingerprint:
            raise StationError(
                f"the board now shows {fingerprint}, not the key you confirmed — nothing was pinned; "
                "check the fixture's cabling and run the command again"
            )
        typed = str(args.get("by") or "").strip()
        signed = args.get("_signed_in")
        by = typed or (signed.person if signed is not None else conn.caller.account)
        return {"message": pin_fixture_key(self.station, known, key_type, fingerprint, by=by)}

    def _backup(self, conn: Connection, args: dict[str, Any]) -> Any:
        """A consistent, verified copy of the audit log made here and sent in chunks: the client writes its file
        itself, as its own user, mode 0640."""
        import shutil
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="backup-"))
        try:
            written = self.station.audit.backup(scratch / "audit-backup.db")
            data = written.path.read_bytes()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return _file_answer(
            data,
            {"events": written.report.events, "ok": written.report.ok, "problem": written.report.problem},
        )

    def _admin_set_pin(self, conn: Connection, args: dict[str, Any]) -> Any:
        """`station admin set-pin` for an administrator: the PIN is set here (the home is the service's)."""
        from station.admin import pin_is_set, set_pin
        from station.audit.people import record_people_event
        from station.people import PeopleAction

        self._fresh_config()
        if self.config.production:
            raise StationError(
                "this station is in production mode, which refuses the shared admin PIN (a demo-mode option) — enrol "
                "each quality lead and administrator with their own credential: station people add NAME --role "
                "quality|admin"
            )
        pin = args.get("pin")
        if not isinstance(pin, str):
            raise StationError("the new admin PIN is needed")
        replacing = pin_is_set(self.home)
        set_pin(self.home, pin)
        actor = self._actor(conn, args)
        record_people_event(
            self.station.audit,
            action=PeopleAction.ADMIN_PIN_SET.value,
            person="",
            role=Role.ADMIN.value,
            by=actor.name,
            account=actor.account,
            detail="by an administrator account" if replacing else "first PIN",
        )
        return {"replaced": replacing, "path": str(self.home.root / "admin.pin")}

    def _production_mode(self, conn: Connection, args: dict[str, Any]) -> Any:
        """Production mode read, or turned on/off in station.toml (the service reads the file again)."""
        from station.station_settings import set_production

        self._fresh_config()
        was = self.config.production
        wanted = args.get("on")
        if wanted is None:
            return {"production": was, "changed": False}
        set_production(self.home.config_file, bool(wanted))
        self._fresh_config()
        return {"production": self.config.production, "changed": was != self.config.production}

    def _export(self, conn: Connection, args: dict[str, Any]) -> Any:
        """An export made here (the service reads the audit log) and sent to the client in chunks: the client
        writes its file itself, as its own user (mode 0640) — the service writes no file where a client says."""
        import shutil
        import tempfile

        from station.report import export_to_file
        from station.service.audit_wire import filter_from_args

        fmt = str(args.get("format"))
        # Every filter of the audit tab, checked (the command line sends the same keys).
        filters = filter_from_args(args)
        scratch = Path(
            tempfile.mkdtemp(
                prefix="export-",
                dir=self.socket_path.parent
                if self.socket_path.parent.is_relative_to(self.home.root)
                else None,
            )
        )
        try:
            written = export_to_file(
                self.station.audit,
                scratch / f"export.{fmt}",
                fmt=fmt,
                filters=filters,
                station=self.config.name,
                include_steps=bool(args.get("steps")),
            )
            data = written.path.read_bytes()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return _file_answer(data, {"units": written.units, "pages": written.pages})

    # -- the socket --------------------------------------------------------------------------------------

    def dispatch(self, conn: Connection, request: dict[str, Any]) -> dict[str, Any]:
        ident = request.get("id")
        name = request.get("op")
        args = request.get("args") or {}
        if not isinstance(name, str) or not isinstance(args, dict):
            return {"id": ident, "ok": False, "error": "a request needs an op (text) and args (an object)"}
        # Keys starting with "_" are the service's own (who signed in, the request's record): never a client's.
        args = {key: value for key, value in args.items() if not str(key).startswith("_")}
        if name == "authorize":
            name = str(args.get("op"))
            check_only = True
        else:
            check_only = False
        op = OPS.get(name)
        if op is None or (not check_only and name not in self._handlers):
            return {"id": ident, "ok": False, "error": f"the station service has no request {name!r}"}
        token = args.pop("session", None)
        detail = {key: value for key, value in args.items() if key not in SECRET_ARGS and key != "manifest"}
        if check_only:
            detail["checked_only"] = True
        roles = conn.roles
        if token is not None:
            # A kiosk window's signed-in person: their role joins the OS account's for this request; both are
            # recorded (the account that asked, the person who signed in).
            try:
                signed = self.sessions.check(str(token), uid=conn.caller.uid, people=self._people())
            except (SessionError, StationError) as exc:
                self._record(conn, op, allowed_=False, detail={**detail, "session": "refused"})
                return {"id": ident, "ok": False, "code": "session", "error": str(exc)}
            roles = roles | {signed.role}
            detail["signed_in"] = signed.person
            args["_signed_in"] = signed
            args["_session_token"] = str(token)
        if op.role is not None and not allowed(roles, op.role):
            self._record(conn, op, allowed_=False, detail=detail)
            who = conn.caller.account + (
                f" (signed in: {detail['signed_in']})" if "signed_in" in detail else ""
            )
            return {
                "id": ident,
                "ok": False,
                "code": "refused",
                "error": refusal(op, who),
                "role": op.role.value,
            }
        if op.recorded:
            args["_request_id"] = self._record(conn, op, allowed_=True, detail=detail)
        if check_only:
            return {"id": ident, "ok": True, "result": {"allowed": True}}
        try:
            result = self._handlers[name](conn, args)
        except CaLocked as exc:
            return {"id": ident, "ok": False, "code": "ca_locked", "error": str(exc), "ca": exc.kind}
        except StationError as exc:
            return {"id": ident, "ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the service keeps serving; the trace goes to its log
            traceback.print_exc()
            return {
                "id": ident,
                "ok": False,
                "error": f"the station service failed on {name}: {exc!r} — see its log",
            }
        if isinstance(result, Followed):
            for message in result.followups:
                conn.push(message)  # before the answer: the client keeps them until it has the answer
            return {"id": ident, "ok": True, "result": result.result, "followups": len(result.followups)}
        return {"id": ident, "ok": True, "result": result}

    def _record(self, conn: Connection, op: Op, *, allowed_: bool, detail: dict[str, Any]) -> int | None:
        try:
            return self.records.record_request(
                conn.caller,
                op=op.name,
                allowed=allowed_,
                detail=detail,
                role_needed=op.role.value if op.role else None,
            )
        except StationError as exc:
            print(f"station service: could not record a request: {exc}", file=sys.stderr, flush=True)
            return None

    def _serve_connection(self, sock: socket.socket) -> None:
        try:
            pid, uid, gid = frames.peer_credentials(sock)
        except OSError:
            sock.close()
            return
        caller = Caller(pid=pid, uid=uid, gid=gid, account=account_name(uid))
        roles = roles_of(uid, gid)
        if uid == self.uid:
            roles = frozenset(Role)  # the service's own account owns the home: it may do anything anyway
        conn = Connection(sock, caller, roles)
        with self._lock:
            self._connections.add(conn)
        try:
            while not conn.closed.is_set() and not self._stop.is_set():
                try:
                    request = frames.receive(sock, wait_s=POLL_S)
                except TimeoutError:
                    continue
                except frames.PeerGone:
                    break
                except frames.FrameError as exc:
                    conn.push({"ok": False, "error": f"bad frame: {exc}"})
                    break
                conn.push(self.dispatch(conn, request))
        finally:
            with self._lock:
                self._connections.discard(conn)
                for group in self._groups.values():
                    group.subscribers.discard(conn)  # its units go on: they belong to the service
            # Let the writer send what is queued (a last answer), bounded, then close.
            end = time.monotonic() + 2
            while not conn._queue.empty() and not conn.closed.is_set() and time.monotonic() < end:
                time.sleep(0.01)
            conn.close()
            sock.close()

    def _idle(self) -> bool:
        with self._lock:
            if self._connections:
                return False
            self._batches = [thread for thread in self._batches if thread.is_alive()]
            if self._batches:
                return False
        return self.scheduler is None or not self.scheduler.busy

    def listen(self) -> None:
        path = self.socket_path
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True)
            path.parent.chmod(0o755)  # reachable: who may do what is decided per request (a home's run dir
            # is still behind the home's own 0700)
        lock_path = path.with_name(path.name + ".lock")
        self._lock_file = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServiceRunning(f"a station service already serves {path}") from None
        if path.exists() or path.is_symlink():
            path.unlink()  # a stale socket of a service that died (we hold the lock: nobody serves it)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        # Anyone may connect: who may do what is decided per request, by the caller's OS groups.
        os.chmod(path, 0o666)
        listener.listen(64)
        listener.settimeout(POLL_S)
        self._listener = listener

    def serve_forever(self) -> None:
        assert self._listener is not None
        idle_since: float | None = None
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                if self.exit_when_idle:
                    if self._idle():
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= IDLE_LINGER_S:
                            print(
                                "station service: idle, ending (it was started for one command)",
                                file=sys.stderr,
                                flush=True,
                            )
                            break
                    else:
                        idle_since = None
                continue
            idle_since = None
            threading.Thread(
                target=self._serve_connection, args=(sock,), name="service-connection", daemon=True
            ).start()
        self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._listener is not None:
            try:
                self.socket_path.unlink()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        if self.scheduler is not None:
            self.scheduler.close()  # what still runs ends failed and resumable, recorded
        self._records.put(None)
        self._recorder.join(10)
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close()
        if self.ca is not None:
            self.ca.close()
        self.station.close()
        if self._lock_file is not None:
            os.close(self._lock_file)


@dataclass
class Followed:
    """An answer followed by more messages (an export's chunks)."""

    result: Any
    followups: list[dict[str, Any]]


def _file_answer(data: bytes, result: dict[str, Any]) -> Followed:
    """A file's content as an answer (size, digest) followed by its chunks; the client writes the file."""
    import base64
    import hashlib

    chunks = [data[at : at + frames.CHUNK_BYTES] for at in range(0, len(data), frames.CHUNK_BYTES)] or [b""]
    followups = [
        {"chunk": base64.b64encode(chunk).decode("ascii"), "index": index}
        for index, chunk in enumerate(chunks)
    ]
    return Followed(
        {**result, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": len(chunks)},
        followups,
    )


class CaLocked(StationError):
    def __init__(self, kind: dict[str, Any]) -> None:
        self.kind = kind
        what = (
            f"its key is in token {kind['label']!r}"
            if kind["kind"] == "token"
            else "its key file is encrypted"
        )
        super().__init__(
            f"the station's CA is locked ({what}): an administrator unlocks it with `station ca "
            "unlock` (or give the service a credential file), then start the board again"
        )


class ServiceRunning(StationError):
    pass


def serve(
    home: StationHome,
    socket_path: Path,
    *,
    exit_when_idle: bool = False,
    credential: Path | None = None,
    log: Path | None = None,
) -> int:
    """Run the service until SIGTERM/SIGINT (or, started for one command, until idle).  With ``log``, its output
    goes there once it serves (before that, a start-up error goes to whoever started it)."""
    for problem in harden_process():
        print(f"station service: {problem}", file=sys.stderr, flush=True)
    # A secret in the environment is never used by the service, and no child of it (openssl, the fork server)
    # inherits it: the CA is unlocked from a credential file, a token's pin_file or `station ca unlock`.
    from station.engine.scheduler import _secret

    for name in [name for name in os.environ if _secret(name)]:
        del os.environ[name]
        print(
            f"station service: {name} in the environment is ignored (removed): unlock the CA with a credential "
            "file or `station ca unlock`",
            file=sys.stderr,
            flush=True,
        )
    service = StationService(home, socket_path, exit_when_idle=exit_when_idle, credential=credential)
    try:
        service.listen()
    except ServiceRunning:
        service.close()
        raise
    if log is not None:
        _redirect_output(log)
    signal.signal(signal.SIGTERM, lambda signum, frame: service.stop())
    signal.signal(signal.SIGINT, lambda signum, frame: service.stop())
    print(
        f"station service: serving {home.root} on {socket_path} as {account_name(os.geteuid())} "
        f"(pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    service.serve_forever()
    return 0


def _redirect_output(log: Path) -> None:
    """stdout and stderr to ``log`` (appended; /dev/null when it cannot be opened, e.g. a full disk)."""
    try:
        descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        descriptor = os.open(os.devnull, os.O_WRONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
