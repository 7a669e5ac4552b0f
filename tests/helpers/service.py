"""A real station service for tests: `station serve` started by the test (optionally as another OS account),
waited for on its socket, and always stopped (SIGTERM, then SIGKILL) at the end."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from station.home import StationHome

START_S = 90.0
STOP_S = 30.0


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _reachable(path: Path) -> bool:
    """Whether any account can reach and run ``path`` (every directory above it has o+x)."""
    return all(os.stat(parent).st_mode & 0o001 for parent in path.parents) and bool(
        os.stat(path).st_mode & 0o001
    )


def account_python() -> tuple[list[str], dict[str, str]]:
    """How another OS account runs this station: (argv prefix, environment to add).

    The venv's interpreter when others can reach it; else (a pyenv interpreter under /root, 0700) the system
    interpreter of the same version with the venv's packages and this checkout on PYTHONPATH — nothing on the
    machine is made more open for the test.
    """
    real = Path(os.path.realpath(sys.executable))
    if _reachable(real):
        return [sys.executable, "-m", "station"], {}
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        raise AssertionError(f"{real} is not reachable by other accounts and there is no {system}")
    import station

    checkout = Path(station.__file__).resolve().parents[1]
    site = next(Path(entry) for entry in sys.path if entry.endswith("site-packages") and Path(entry).is_dir())
    return [str(system), "-m", "station"], {"PYTHONPATH": f"{checkout}:{site}", "PYTHONNOUSERSITE": "1"}


def serve_command(home: StationHome, socket_path: Path, *, credential: Path | None = None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "station",
        "--home",
        str(home.root),
        "serve",
        "--socket",
        str(socket_path),
    ]
    if credential is not None:
        command += ["--credential", str(credential)]
    return command


@contextlib.contextmanager
def running_service(
    home: StationHome,
    socket_path: Path,
    *,
    credential: Path | None = None,
    user: str | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`station serve` on ``home`` at ``socket_path``; as ``user`` (runuser) when given."""
    command = serve_command(home, socket_path, credential=credential)
    full_env = {name: value for name, value in os.environ.items() if "PASSPHRASE" not in name}
    if user is not None:
        prefix, extra = account_python()
        command = ["runuser", "-u", user, "--", *prefix, *command[3:]]
        full_env.update(extra)
    full_env.update(env or {})
    log = log or home.root.parent / "service.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=full_env,
            cwd="/",
            start_new_session=True,
        )
    try:
        end = time.monotonic() + START_S
        while not _answers(socket_path):
            if process.poll() is not None:
                raise AssertionError(f"station serve ended ({process.returncode}):\n{log.read_text()}")
            if time.monotonic() > end:
                raise AssertionError(f"station serve did not answer within {START_S:g} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def service_pid(socket_path: Path) -> int | None:
    """The pid of the process serving ``socket_path`` (from /proc: who holds the socket's lock file)."""
    lock = str(socket_path) + ".lock"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == lock:
                    return int(entry.name)
        except OSError:
            continue
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} → {done.returncode}: {done.stderr}")
    return done


@contextlib.contextmanager
def os_accounts(prefix: str, roles: dict[str, Any]) -> Iterator[dict[str, str]]:
    """Real OS accounts (``useradd``), one per key of ``roles``, each in the OS group of its role (None: in none);
    the welma-* groups made when missing.  Yields key → account name; all removed at the end, also on failure."""
    from station.roles import Role

    tag = secrets.token_hex(3)
    groups: list[str] = []
    users: list[str] = []
    try:
        for role in Role:
            if _run("getent", "group", role.value, check=False).returncode != 0:
                _run("groupadd", role.value)
                groups.append(role.value)
        names = {key: f"{prefix}{index}{tag}" for index, key in enumerate(roles)}
        for key, role in roles.items():
            group = ("-G", role.value) if role is not None else ()
            _run("useradd", "-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin", *group, names[key])
            users.append(names[key])
        yield names
    finally:
        for name in users:
            _run("userdel", name, check=False)
        for group in groups:
            _run("groupdel", group, check=False)


def as_account(
    user: str,
    socket_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    cwd: str = "/",
) -> subprocess.CompletedProcess[str]:
    """`station ARGS…` run by ``user`` (runuser, a clean environment), reaching the service at ``socket_path``."""
    prefix, extra = account_python()
    clean = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "STATION_SOCKET": str(socket_path),
        "LANG": "C.UTF-8",
        **extra,
        **(env or {}),
    }
    return subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in clean.items()), *prefix, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
