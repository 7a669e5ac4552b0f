"""A client of the station service: find its socket, connect (or start a per-user one), ask, follow events.

Where the socket is:

* ``--socket PATH`` or ``$STATION_SOCKET`` when given;
* the system service's ``/run/welma-station/station.sock`` (systemd ``RuntimeDirectory=welma-station``) when it
  exists and no home was named (no ``--home``, no ``$STATION_HOME``);
* else the per-user socket of the home: ``HOME/run/station.sock`` (or, for a home whose path is too long for
  a Unix socket, ``/tmp/welma-station-UID/<hash>.sock``).

If nothing answers, outside production mode the CLI starts a service for the current user on the same home
(and says so on stderr); it ends by itself once idle.  In production mode it refuses and says how to start
the system service.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from station.errors import StationError
from station.home import StationHome
from station.service import frames

SYSTEM_SOCKET = Path("/run/welma-station/station.sock")
SOCKET_ENV = "STATION_SOCKET"
# The longest path a Unix socket address holds (108 bytes with the terminating NUL).
_MAX_SOCKET_PATH = 100
# How long a service started for a command may take to answer (it imports the station, opens the audit log;
# tens of seconds on a loaded machine).
START_DEADLINE_S = 60.0
# How long one request may take to be answered (a revoke, a page of units; not a unit itself).
CALL_DEADLINE_S = 120.0
# Words in an environment variable's name that keep it from a started service.
_SECRET_WORDS = ("PASSPHRASE", "PIN", "PASSWORD", "SECRET", "TOKEN", "KEY")


class ServiceRefused(StationError):
    """The service refused the request for the caller's role (the message names the role needed)."""


class CaLockedError(StationError):
    def __init__(self, message: str, kind: dict[str, Any]) -> None:
        super().__init__(message)
        self.kind = kind


class ServiceUnavailable(StationError):
    pass


def home_socket(home: StationHome) -> Path:
    """The per-user service's socket of a home."""
    path = home.root.resolve() / "run" / "station.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(home.root.resolve()).encode()).hexdigest()[:16]
    return Path(f"/tmp/welma-station-{os.geteuid()}") / f"{digest}.sock"


def find_socket(home_arg: str | None, socket_arg: str | None = None) -> tuple[Path, bool]:
    """(socket path, whether it is the system service's) for a command's --home / --socket."""
    explicit = socket_arg or os.environ.get(SOCKET_ENV)
    if explicit:
        return Path(explicit), True
    if home_arg is None and not os.environ.get("STATION_HOME") and SYSTEM_SOCKET.exists():
        return SYSTEM_SOCKET, True
    return home_socket(StationHome.resolve(home_arg)), False


class ServiceClient:
    def __init__(self, sock: socket.socket, path: Path) -> None:
        self.sock = sock
        self.path = path
        self._ids = itertools.count(1)
        self._pending: collections.deque[dict[str, Any]] = collections.deque()

    @classmethod
    def connect(cls, path: Path, *, deadline_s: float = frames.CONNECT_DEADLINE_S) -> ServiceClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(deadline_s)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return cls(sock, path)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(
        self, op: str, args: dict[str, Any] | None = None, *, deadline_s: float = CALL_DEADLINE_S
    ) -> Any:
        """Send one request and wait (bounded) for its answer; events that come meanwhile are kept for
        :meth:`next_message`."""
        ident = next(self._ids)
        frames.send(self.sock, {"id": ident, "op": op, "args": args or {}})
        end = time.monotonic() + deadline_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise StationError(
                    f"the station service did not answer {op} within {deadline_s:g} s — check "
                    "that it runs (systemctl status welma-station) and try again"
                )
            try:
                message = frames.receive(self.sock, wait_s=left)
            except TimeoutError:
                continue
            except frames.PeerGone:
                raise ServiceUnavailable(
                    "the station service closed the connection — it may have stopped; run the command again"
                ) from None
            if message.get("id") != ident:
                self._pending.append(message)
                continue
            if message.get("ok"):
                return message.get("result")
            error = str(message.get("error") or "the station service refused the request")
            if message.get("code") == "refused":
                raise ServiceRefused(error)
            if message.get("code") == "ca_locked":
                raise CaLockedError(error, dict(message.get("ca") or {}))
            raise StationError(error)

    def next_message(self, wait_s: float | None) -> dict[str, Any] | None:
        """The next event (or other unrequested message); None when none came within ``wait_s``."""
        if self._pending:
            return self._pending.popleft()
        try:
            return frames.receive(self.sock, wait_s=wait_s)
        except TimeoutError:
            return None
        except frames.PeerGone:
            raise ServiceUnavailable(
                "the station service closed the connection — it may have stopped. Units "
                "it ran are in `station units`; a failed one resumes with --resume"
            ) from None


def _service_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not any(word in name.upper() for word in _SECRET_WORDS)
    }


def _production(home: StationHome) -> bool:
    from station.config import load_config

    try:
        if not os.access(home.root, os.R_OK | os.X_OK) and home.root.exists():
            return True  # a home this user cannot read is a line PC's: never start a service on it
        # A broken station.toml is said here, with its file and line, before any service starts.
        return load_config(home.config_file).production
    except PermissionError:
        return True


def start_service(home: StationHome, path: Path) -> subprocess.Popen[bytes]:
    """A per-user service on ``home`` for this command (and any other while it runs); it ends when idle.  Until
    it serves, its stderr comes to this command (a start-up error is said here); then it writes to its log."""
    home.create()
    # (In the bundle, sys.executable is the bundle's program, which takes `-m station` too.)
    command = [sys.executable, "-m", "station"]
    command += [
        "--home",
        str(home.root),
        "serve",
        "--socket",
        str(path),
        "--exit-when-idle",
        "--log",
        str(home.log_dir / "service.log"),
    ]
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_service_environment(),
        start_new_session=True,
    )


def _start_error(process: subprocess.Popen[bytes]) -> str:
    """What a service that could not start said (its ``error: …`` lines), bounded."""
    assert process.stderr is not None
    said = process.stderr.read(64 * 1024).decode("utf-8", "replace")
    errors = [line.removeprefix("error: ") for line in said.splitlines() if line.startswith("error: ")]
    return " ".join(errors) or said.strip()[-2000:] or f"it ended with status {process.returncode}"


def connect(
    home_arg: str | None, socket_arg: str | None = None, *, start: bool = True
) -> ServiceClient | None:
    """A connection to the station service for this home; starts a per-user one when ``start`` and none answers
    (outside production mode).  None when none answers and ``start`` is False."""
    path, system = find_socket(home_arg, socket_arg)
    try:
        return ServiceClient.connect(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    if not start:
        return None
    home = StationHome.resolve(home_arg)
    if system or _production(home):
        raise ServiceUnavailable(
            f"no station service answers on {path} ({reason}). On a line PC the station runs as a system service: "
            "ask an administrator to run `systemctl start welma-station` (and `station ca unlock`), then try again."
        )
    process = start_service(home, path)
    print(
        f"station: no station service was running for {home.root}; started one for "
        f"{_account()} (pid {process.pid}, socket {path}); it ends by itself when idle. "
        "On a line PC, run the welma-station system service instead (README, administrator guide).",
        file=sys.stderr,
        flush=True,
    )
    end = time.monotonic() + START_DEADLINE_S
    try:
        while True:
            try:
                return ServiceClient.connect(path)
            except OSError as exc:
                if process.poll() is not None and process.returncode != 0:
                    raise ServiceUnavailable(_start_error(process)) from exc
                # (status 0: another command's service won the socket and this one ended: keep trying it)
                if time.monotonic() > end:
                    raise ServiceUnavailable(
                        f"the station service started for {home.root} did not answer on "
                        f"{path} within {START_DEADLINE_S:g} s"
                    ) from exc
                time.sleep(0.05)
    finally:
        if process.stderr is not None:
            process.stderr.close()
        reap_when_ended(process)


def reap_when_ended(process: subprocess.Popen[bytes]) -> None:
    """Collect a started service's exit status when it ends (idle), so it does not stay a zombie under the
    window or command that started it until that one exits."""
    if process.poll() is None:
        threading.Thread(target=process.wait, name="station-service-reaper", daemon=True).start()


def _account() -> str:
    from station.roles import account_name

    return account_name(os.geteuid())
