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
from pathlib import Path
from typing import Any

from station.audit.service import Caller, ServiceRecords
from station.cli.events import event_record
from station.errors import StationError
from station.flow import FlowEvent
from station.home import StationHome
from station.roles import Role, account_name, allowed, roles_of
from station.service import (
    admin_ops,
    audit_reads,
    ca_ops,
    frames,
    people_ops,
    profile_ops,
    quality_ops,
    unit_ops,
    window_ops,
)

# Connection, Group, Followed and the file answer lived here before the request modules moved out: still
# importable from here (explicit re-exports) for modules written against this one.
from station.service.connection import CaLocked as CaLocked
from station.service.connection import Connection as Connection
from station.service.connection import Followed as Followed
from station.service.connection import Group as Group
from station.service.connection import file_answer as file_answer
from station.service.hardening import harden_process
from station.service.ops import CONTENT_ARGS, OPS, SECRET_ARGS, Op, refusal
from station.service.sessions import SessionError, Sessions

# (its name before the request modules moved out of this one)
_file_answer = file_answer

# An auto-started (per-user, demo) service ends this long after its last client left and its last unit ended.
IDLE_LINGER_S = 1.0
# How long the service waits for a client's next request before it checks on itself again.
POLL_S = 0.5
# The credential file (systemd LoadCredential=ca-passphrase:…) holding the CA passphrase or token PIN.
CREDENTIAL_NAME = "ca-passphrase"
SERVICE_LOG = "service.log"


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
            "ca_unlock": self._ca_unlock,
        }
        # Each group of requests in its own module (station.service.*_ops): op name → handler.
        self._handlers.update(people_ops.handlers(self))
        self._handlers.update(unit_ops.handlers(self))
        self._handlers.update(quality_ops.handlers(self))
        self._handlers.update(admin_ops.handlers(self))
        self._handlers.update(ca_ops.handlers(self))
        self._handlers.update(profile_ops.handlers(self))
        self._handlers.update(audit_reads.handlers(self))
        self._handlers.update(window_ops.handlers(self))
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

    def _people(self) -> Any:
        from station.people import People

        return People(self.home, self.station.audit, settings=self.config.people)

    def _actor(self, conn: Connection, args: dict[str, Any]) -> Any:
        """Who acts (the person signed in at this kiosk, else the OS account): for any request module."""
        return people_ops.actor(self, conn, args)

    def _ca_unlock(self, conn: Connection, args: dict[str, Any]) -> Any:
        secret = args.get("secret")
        if secret is not None and not isinstance(secret, str):
            raise StationError("the CA secret must be text")
        self.unlock(secret)
        return {"ca_unlocked": True}

    # long: one request's path in order — parse, session, role, record, handle, answer — read top to bottom
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
        for key in CONTENT_ARGS & detail.keys():
            detail[key] = _content_digest(detail[key])
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


def _content_digest(value: Any) -> str:
    """A file's content sent in a request, as it is recorded: its size and SHA-256, not the whole file."""
    import hashlib

    data = str(value).encode("utf-8")
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"


class ServiceRunning(StationError):
    pass


# The window first: under the kernel's autogroup scheduling (one CPU group per session) the service's session —
# the service, its fork server and every unit's worker — weighs a third of the window's (autogroup nice 5)
# when both want a CPU; alone, it has every core.  At a 64-slot batch's start (64 forks, 64 SSH handshakes)
# the window's thread otherwise waited up to 150 ms for a core.  Measured, bench.gui_batch_stall --slots 64,
# six rounds alternated: longest stall 24–49 ms at nice 5 against 39–125 ms (five of six over 50) at 0, the
# batch no slower.  STATION_SERVICE_AUTOGROUP_NICE sets it (0–19; 0: the same weight as the window).
AUTOGROUP_NICE_ENV = "STATION_SERVICE_AUTOGROUP_NICE"
AUTOGROUP_NICE = 5


def weigh_below_the_window() -> str | None:
    """Lower this session's autogroup weight (any process may lower its own); a problem, said, or None."""
    chosen = os.environ.get(AUTOGROUP_NICE_ENV, str(AUTOGROUP_NICE)).strip()
    if not chosen.isdigit() or not 0 <= int(chosen) <= 19:
        return f"{AUTOGROUP_NICE_ENV}={chosen!r} is not a niceness from 0 to 19: the service keeps its weight"
    from station.engine.spawning import lower_own_autogroup

    lower_own_autogroup(int(chosen))
    return None


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
    weighing = weigh_below_the_window()
    if weighing:
        print(f"station service: {weighing}", file=sys.stderr, flush=True)
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
