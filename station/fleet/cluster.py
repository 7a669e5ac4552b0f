"""A private PostgreSQL cluster in a directory, started and stopped by the station: for ``station fleet demo``,
training and the tests. Production stations connect to the plant's real server instead (README, "Fleet").

Debian's server programs (``initdb``, ``pg_ctl``) come from the ``postgresql`` package. PostgreSQL refuses to run
as root: when the station runs as root, the cluster runs as the system user :data:`OS_USER`, created (``useradd
--system``) when missing, and its data directory is owned by that user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from station.errors import StationError

PG_BIN_DIRS = (
    Path("/usr/lib/postgresql/15/bin"),
    Path("/usr/lib/postgresql/16/bin"),
    Path("/usr/lib/postgresql/17/bin"),
)
OS_USER = "welma-pg"
ADMIN_USER = "welma_admin"
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
INITDB_TIMEOUT_S = 120


def pg_bin() -> Path:
    for directory in PG_BIN_DIRS:
        if (directory / "pg_ctl").exists():
            return directory
    raise StationError(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed — install Debian's postgresql package "
        "(apt-get install postgresql), then try again."
    )


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ensure_os_user() -> str | None:
    """The OS user the server runs as: None when we are not root (it runs as us)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                OS_USER,
            ],
            check=True,
            timeout=30,
            capture_output=True,
        )
    return OS_USER


@dataclass
class PrivateCluster:
    """One PostgreSQL cluster: data in ``directory/data``, listening on 127.0.0.1:``port``."""

    directory: Path
    port: int
    admin_password: str
    os_user: str | None

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @classmethod
    def create(cls, directory: Path, *, port: int | None = None) -> PrivateCluster:
        """initdb a new cluster in ``directory`` (which must not hold one yet)."""
        bin_dir = pg_bin()
        os_user = ensure_os_user()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cluster = cls(
            directory=directory,
            port=port or free_tcp_port(),
            admin_password=secrets.token_urlsafe(24),
            os_user=os_user,
        )
        cluster._own(directory)
        pwfile = directory / "initdb.pw"
        pwfile.write_text(cluster.admin_password + "\n")
        pwfile.chmod(0o600)
        cluster._own(pwfile)
        try:
            cluster._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(cluster.data_dir),
                    "-U",
                    ADMIN_USER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                timeout=INITDB_TIMEOUT_S,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (cluster.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\n# welma station private cluster\nport = {cluster.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{cluster.data_dir}'\nfsync = on\nmax_connections = 100\n"
            )
        return cluster

    def _own(self, path: Path) -> None:
        if self.os_user is not None:
            shutil.chown(path, user=self.os_user, group=self.os_user)

    def _run(self, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        if self.os_user is not None:
            argv = ["runuser", "-u", self.os_user, "--", *argv]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        if result.returncode != 0:
            raise StationError(
                f"{Path(argv[-1] if self.os_user is None else argv[4]).name} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-800:]}"
            )
        return result

    def start(self) -> None:
        self._run(
            [
                str(pg_bin() / "pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
            ],
            timeout=START_TIMEOUT_S + 10,
        )

    def stop(self, *, mode: str = "fast") -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._run(
            [
                str(pg_bin() / "pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(STOP_TIMEOUT_S),
            ],
            timeout=STOP_TIMEOUT_S + 10,
        )

    def running(self) -> bool:
        return self.pid() is not None

    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{ADMIN_USER}@127.0.0.1:{self.port}/{database}"

    def write_admin_pgpass(self, path: Path) -> Path:
        from station.fleet.schema import write_pgpass

        write_pgpass(
            path,
            host="127.0.0.1",
            port=self.port,
            database="*",
            role=ADMIN_USER,
            password=self.admin_password,
        )
        return path

    def create_database(self, name: str, *, passfile: Path) -> None:
        from psycopg import sql

        from station.fleet.connection import connect

        with connect(self.admin_dsn(), passfile=passfile) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise StationError(f"the private PostgreSQL cluster on port {self.port} did not come up")
