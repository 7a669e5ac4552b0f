"""A real PostgreSQL server for the fleet tests: Debian's initdb + pg_ctl in a temporary directory, on a free
port, as a non-root system user (PostgreSQL refuses root), stopped at the end of the session.

``pg_server`` is one cluster per test session; ``fleet_db`` gives each test its own database in it (and the
administrator's DSN and pgpass to reach it). Tests that stop or pause the server restart or resume it in a
``finally``, through the helper's methods.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from station.fleet.cluster import PrivateCluster, ensure_os_user


@dataclass
class PgServer:
    cluster: PrivateCluster
    admin_pgpass: Path

    def stop(self) -> None:
        self.cluster.stop(mode="immediate")

    def start(self) -> None:
        self.cluster.start()

    def pause(self) -> int:
        """SIGSTOP the postmaster, then every backend: the server accepts TCP but answers nothing.

        The postmaster first, so that no new backend is forked meanwhile; a backend that ends between listing and
        signalling is simply gone.
        """
        root = self.cluster.pid()
        if root is None:
            raise AssertionError("the test PostgreSQL is not running")
        os.kill(root, signal.SIGSTOP)
        stopped = 1
        for pid in self._pids()[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped += 1
        return stopped

    def resume(self) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _pids(self) -> list[int]:
        """The postmaster and its children (read from /proc: only the processes of this cluster)."""
        root = self.cluster.pid()
        if root is None:
            return []
        found = [root]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == root:
                found.append(int(entry.name))
        return found


@dataclass
class FleetDb:
    server: PgServer
    name: str

    @property
    def admin_dsn(self) -> str:
        return self.server.cluster.admin_dsn(self.name)

    @property
    def admin_pgpass(self) -> Path:
        return self.server.admin_pgpass

    def admin(self):  # type: ignore[no-untyped-def]
        from station.fleet.connection import connect

        return connect(self.admin_dsn, passfile=self.admin_pgpass, statement_timeout_s=120)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    ensure_os_user()
    directory = Path(tempfile.mkdtemp(prefix="welma-fleet-pg-", dir="/tmp"))
    # The temp dir itself must be enterable by the server's user.
    directory.chmod(0o711)
    try:
        cluster = PrivateCluster.create(directory / "cluster")
        pgpass = cluster.write_admin_pgpass(directory / "admin.pgpass")
        cluster.start()
        try:
            yield PgServer(cluster, pgpass)
        finally:
            PgServer(cluster, pgpass).resume()
            cluster.stop(mode="immediate")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


_numbers = itertools.count(1)


@pytest.fixture
def fleet_db(pg_server: PgServer) -> Iterator[FleetDb]:
    name = f"fleet_t{os.getpid()}_{next(_numbers)}"
    pg_server.cluster.create_database(name, passfile=pg_server.admin_pgpass)
    yield FleetDb(pg_server, name)
