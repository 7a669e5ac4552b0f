"""Stations registered in a test fleet database: a station home with its CA, registered through the same code as
``station fleet init``, and synthetic units written through the real AuditLog (for tests that need no board)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.audit import AuditLog
from station.config import FleetConfig, load_config
from station.home import StationHome
from station.pki import CertificateAuthority
from station.sim.farm import Farm, SimDevice
from tests.helpers.farm import TEST_BOOT_DELAY_S, free_port
from tests.helpers.postgres import FleetDb

PASSPHRASE = "fleet test passphrase"


@dataclass
class TestStation:
    home: StationHome
    fleet: FleetConfig

    def audit(self) -> AuditLog:
        return AuditLog(self.home.audit_db)


def make_station(
    root: Path, db: FleetDb, name: str, *, line: str = "L1", offline: str | None = None, ca: bool = True
) -> TestStation:
    from station.cli.fleet import register_here

    home = StationHome(root / name).create()
    if ca:
        CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
    home.config_file.write_text(f'[station]\nname = "{name}"\n')
    with contextlib.redirect_stdout(io.StringIO()):
        register_here(
            home,
            admin_dsn=db.admin_dsn,
            admin_passfile=db.admin_pgpass,
            station_name=name,
            line=line,
            offline=offline,
            replace=False,
        )
    fleet = load_config(home.config_file).fleet
    assert fleet is not None
    return TestStation(home, fleet)


def provision_synthetic(
    audit: AuditLog,
    serial: str,
    *,
    station: str,
    result: str = "passed",
    host_key: str | None = None,
    guard_text: str = "ok",
) -> int:
    """A unit as the flow records it, without a board: started, steps, (certificate), finished."""
    from tests.helpers.audit import make_certificate

    now = datetime.now(UTC)
    unit = audit.start_unit(
        serial=serial,
        profile="welma-optee",
        device="ssh://root@127.0.0.2:2222",
        operator="ann",
        station=station,
    )
    audit.pin_host_key(unit.id, key_type="ssh-ed25519", fingerprint=host_key or f"SHA256:{station}:{serial}")
    audit.record_step(unit.id, step="identify", attempt=1, outcome="passed", started_at=now, ended_at=now)
    audit.record_step(
        unit.id, step="guard", attempt=1, outcome="passed", started_at=now, ended_at=now, excerpt=guard_text
    )
    if result == "passed":
        audit.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{serial}"))
        audit.finish_unit(unit.id, result="passed")
    else:
        audit.finish_unit(unit.id, result=result, failed_step="keygen", message="keygen failed")
    return unit.id


# -- stations as separate processes, each with its own simulated farm -------------------------------------

ENV = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE)


def station_cli(station: TestStation, *args: str) -> list[str]:
    """The `station` command line of ``station`` (run it with :data:`ENV`)."""
    return [sys.executable, "-m", "station", "--home", str(station.home.root), *args]


def start_farm(stack: ExitStack, station: TestStation, count: int, **options: Any) -> list[SimDevice]:
    """Boot ``count`` boards in the station's own home; ``stack`` stops them."""
    farm = Farm(station.home)
    stack.callback(farm.down)
    return farm.up(count, boot_delay=TEST_BOOT_DELAY_S, port=free_port(count), **options)


def central(db: FleetDb, query: str, *params: Any) -> list[Any]:
    """Rows of ``query`` on the fleet database, as its administrator."""
    with db.admin() as conn:
        return conn.execute(query, list(params)).fetchall()


def sync(station: TestStation) -> None:
    """`station fleet sync`: the station's backlog forwarded to the fleet now."""
    run = subprocess.run(station_cli(station, "fleet", "sync"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
