"""`python -m tests.gui.fleet_pictures`: pictures of the quality lead's "Whole fleet" scope — the units paged in,
and the yield and key-generation chart by line and station — over a private PostgreSQL started here and stopped
after, three stations on two lines with synthetic units written through the real AuditLog and forwarded.

    xvfb-run -a -s "-screen 0 1280x800x24" env QT_QPA_PLATFORM=xcb .venv/bin/python -m tests.gui.fleet_pictures
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PySide6.QtWidgets import QApplication

from bench.demo_station import ensure_display, pause
from station.fleet.cluster import PrivateCluster, ensure_os_user
from station.fleet.forwarder import Forwarder
from station.service.audit_reader import LocalAuditReader
from tests.helpers.fleet import make_station
from tests.helpers.postgres import FleetDb, PgServer
from ui.audit_view import AuditView
from ui.fleet_view import ScopedAuditView

STATIONS = (("line1-pc1", "L1", 0.04), ("line1-pc2", "L1", 0.10), ("line2-pc1", "L2", 0.25))
UNITS_PER_STATION = 60
FAILING_STEPS = ("keygen", "check_csr", "push", "tls_proof")


def _fill(station, name: str, failure_rate: float, rng: random.Random, first: int) -> None:  # type: ignore[no-untyped-def]
    start = datetime.now(UTC) - timedelta(hours=6)
    with station.audit() as audit:
        for index in range(UNITS_PER_STATION):
            serial = f"2026{first + index:011d}"
            began = start + timedelta(minutes=5 * index)
            unit = audit.start_unit(
                serial=serial,
                profile="welma-optee",
                device="ssh://root@127.0.0.2:2222",
                operator=rng.choice(("ann", "bo", "chen")),
                station=name,
            )
            keygen = rng.gauss(34 if name != "line2-pc1" else 41, 4)
            failed = rng.random() < failure_rate
            step = rng.choice(FAILING_STEPS) if failed else None
            if step == "keygen":
                audit.record_step(
                    unit.id,
                    step="keygen",
                    attempt=1,
                    outcome="failed",
                    started_at=began,
                    ended_at=began + timedelta(seconds=90),
                    message="token did not answer",
                )
            else:
                audit.record_step(
                    unit.id,
                    step="keygen",
                    attempt=1,
                    outcome="passed",
                    started_at=began,
                    ended_at=began + timedelta(seconds=keygen),
                )
            if step is not None and step != "keygen":
                audit.record_step(
                    unit.id,
                    step=step,
                    attempt=1,
                    outcome="failed",
                    started_at=began,
                    ended_at=began + timedelta(seconds=keygen + 5),
                    message=f"{step} failed",
                )
            if step is None:
                audit.finish_unit(unit.id, result="passed")
            else:
                audit.finish_unit(unit.id, result="failed", failed_step=step, message=f"{step} failed")
        while Forwarder(station.fleet, audit).send_once():
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("assets/screenshots"))
    args = parser.parse_args()
    ensure_display()
    ensure_os_user()
    app = QApplication.instance() or QApplication([])
    directory = Path(tempfile.mkdtemp(prefix="welma-fleet-pictures-", dir="/tmp"))
    directory.chmod(0o711)
    cluster = PrivateCluster.create(directory / "cluster")
    pgpass = cluster.write_admin_pgpass(directory / "admin.pgpass")
    cluster.start()
    try:
        cluster.create_database("fleet", passfile=pgpass)
        db = FleetDb(PgServer(cluster, pgpass), "fleet")
        rng = random.Random(15)
        stations = []
        for number, (name, line, failure_rate) in enumerate(STATIONS):
            station = make_station(directory / "homes", db, name, line=line)
            _fill(station, name, failure_rate, rng, first=number * UNITS_PER_STATION + 1)
            stations.append(station)
        with stations[0].audit() as audit:
            local = AuditView(
                LocalAuditReader(audit, station="line1-pc1"), role="quality_lead", station="line1-pc1"
            )
            scoped = ScopedAuditView(local, stations[0].fleet)
            scoped.resize(1280, 800)
            scoped.show()
            scoped.scope.setCurrentIndex(1)
            view = scoped.fleet_view
            assert view is not None
            for _ in range(100):
                pause(0.1)
                if "units across the fleet" in view.message.text() and not view.model.loading:
                    break
            args.out.mkdir(parents=True, exist_ok=True)
            for tab, name in ((view.table, "fleet"), (view.yield_chart, "fleet-yield")):
                view.tabs.setCurrentWidget(tab)
                pause(0.4)
                path = args.out / f"{name}.png"
                scoped.grab().save(str(path))
                print(f"wrote {path}")
            view._group_clicked(view.groups.topLevelItem(2), 0)  # line L2 alone
            for _ in range(100):
                pause(0.1)
                if view.yield_chart.summary is not None:
                    break
            pause(0.4)
            path = args.out / "fleet-yield-line.png"
            scoped.grab().save(str(path))
            print(f"wrote {path}")
            failed = next(
                view.model.unit_at(row)
                for row in range(view.model.rowCount())
                if view.model.unit_at(row)["state"] == "failed"
            )  # a board of line L2 that failed
            view.line_filter.setText("")
            view.serial_filter.setText(failed["serial"])
            view.trace()
            for _ in range(100):
                pause(0.1)
                if "attempt(s) on" in view.message.text():
                    break
            pause(0.4)
            path = args.out / "fleet-trace.png"
            scoped.grab().save(str(path))
            print(f"wrote {path}")
            scoped.shutdown()
            local.shutdown()
        app.processEvents()
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
