"""``station fleet demo``: a private PostgreSQL cluster for one station home, for demos and training.

Its settings (port, data directory) and the administrator's pgpass live in HOME/fleet-demo/. The data directory is
HOME/fleet-demo/cluster — except when the station runs as root: PostgreSQL refuses root, so the server runs as the
system user ``welma-pg``, which cannot enter a private (0700, root-owned) station home; its data then lives in
/var/lib/welma-station/fleet-demo-<id>/ (owned by that user) and HOME/fleet-demo/cluster.json says where.

The demo also gives the OS account that runs it a quality lead's own login (``grant-quality``, the role of
:func:`station.fleet.quality.role_for_account`), its password in HOME/fleet-demo/quality.pgpass (0600): the
window of that account, which can read the home in a demo, reads the whole fleet with it — never with the
station's login.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from station.errors import StationError
from station.fleet.cluster import PrivateCluster, ensure_os_user, free_tcp_port
from station.home import StationHome

DEMO_DATABASE = "fleet"
ROOT_DEMO_BASE = Path("/var/lib/welma-station")


def demo_dir(home: StationHome) -> Path:
    return home.root / "fleet-demo"


def demo_quality_pgpass(home: StationHome) -> Path:
    """The demo account's quality-lead password (a pgpass file, 0600), for its window's Whole fleet scope."""
    return demo_dir(home) / "quality.pgpass"


def _cluster_dir(home: StationHome) -> Path:
    if os.geteuid() != 0:
        return demo_dir(home) / "cluster"
    ident = hashlib.sha256(str(home.root).encode()).hexdigest()[:12]
    return ROOT_DEMO_BASE / f"fleet-demo-{ident}"


def _load(home: StationHome) -> PrivateCluster | None:
    state = demo_dir(home) / "cluster.json"
    if not state.exists():
        return None
    data = json.loads(state.read_text())
    return PrivateCluster(
        directory=Path(data["directory"]), port=int(data["port"]), admin_password="", os_user=ensure_os_user()
    )


def start_demo(home: StationHome, *, line: str = "demo") -> str:
    from station.cli.fleet import register_here

    directory = demo_dir(home)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cluster = _load(home)
    passfile = directory / "admin.pgpass"
    if cluster is None:
        target = _cluster_dir(home)
        if target.parent == ROOT_DEMO_BASE:
            ROOT_DEMO_BASE.mkdir(parents=True, exist_ok=True)
            ROOT_DEMO_BASE.chmod(0o755)  # the server's user must enter it (the station's umask is 077)
        cluster = PrivateCluster.create(target, port=free_tcp_port())
        cluster.write_admin_pgpass(passfile)
        (directory / "cluster.json").write_text(json.dumps({"directory": str(target), "port": cluster.port}))
    if not cluster.running():
        cluster.start()
    cluster.create_database(DEMO_DATABASE, passfile=passfile)
    fleet = register_here(
        home,
        admin_dsn=cluster.admin_dsn(DEMO_DATABASE),
        admin_passfile=passfile,
        station_name=None,
        line=line,
        offline=None,
        replace=True,
    )
    quality = _grant_demo_quality(home, cluster, passfile)
    return (
        f"demo fleet running: PostgreSQL on 127.0.0.1:{cluster.port}, data in {cluster.data_dir}; station "
        f"{fleet.station_name} forwards to it; {quality}. Stop it with `station fleet demo --stop` (the station "
        f"then keeps its backlog until the demo fleet runs again)."
    )


def _grant_demo_quality(home: StationHome, cluster: PrivateCluster, admin_passfile: Path) -> str:
    """``grant-quality`` for the account running the demo, a new random password in the demo's quality.pgpass."""
    from station.files import write_file_atomically
    from station.fleet.connection import connect
    from station.fleet.quality import current_account, grant_quality, role_for_account

    role = role_for_account(current_account())
    password = secrets.token_urlsafe(24)  # letters, digits, - and _: nothing pgpass would need escaped
    try:
        with connect(
            cluster.admin_dsn(DEMO_DATABASE), passfile=admin_passfile, statement_timeout_s=60
        ) as conn:
            grant_quality(conn, role, password)
    except StationError as exc:
        return f"no quality-lead login for the window ({exc})"
    path = demo_quality_pgpass(home)
    line = f"*:{cluster.port}:{DEMO_DATABASE}:{role}:{password}\n"
    write_file_atomically(path, line.encode(), mode=0o600, replace=True)
    return f"the window's Whole fleet scope reads as quality lead {role} (password in {path})"


def stop_demo(home: StationHome) -> str:
    cluster = _load(home)
    if cluster is None or not cluster.running():
        return "no demo fleet is running for this station home"
    cluster.stop()
    return f"demo fleet stopped (data kept in {cluster.data_dir})"


def demo_cluster(home: StationHome) -> PrivateCluster | None:
    return _load(home)
