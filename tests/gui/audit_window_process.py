"""The window's audit tab in a process of its own, run as another OS account by tests/gui/test_audit_service.py:
``python -m tests.gui.audit_window_process MODE HOME OUT`` (MODE: quality, technician or kiosk) opens the audit
view offscreen on the station service at $STATION_SOCKET — never on HOME, which this account cannot read — pages,
filters, opens a unit and exports as the mode allows, and prints what it saw as one JSON object.

For ``kiosk`` a person's name and credential come on stdin (``{"name": …, "secret": …}``; never argv): the
account signs them in through the service, and the session token goes with every read."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from PySide6.QtWidgets import QApplication  # noqa: E402

from station.audit import UnitFilter  # noqa: E402
from station.config import OutputSettings, StationConfig  # noqa: E402
from station.errors import StationError  # noqa: E402
from station.home import StationHome  # noqa: E402
from station.service.client import ServiceClient  # noqa: E402
from ui.audit_view import AuditView  # noqa: E402
from ui.bridge import StationClient, window_audit_reader  # noqa: E402

WAIT_S = 90.0


def settle(app: QApplication, view: AuditView) -> None:
    end = time.monotonic() + WAIT_S
    app.processEvents()
    while view.busy():
        if time.monotonic() > end:
            raise AssertionError("the audit view's jobs did not finish")
        app.processEvents()
        time.sleep(0.01)
    app.processEvents()


def file_facts(path: Path) -> dict[str, Any]:
    info = path.stat()
    return {
        "mode": oct(stat.S_IMODE(info.st_mode)),
        "uid": info.st_uid,
        "head": path.read_bytes()[:5].decode("latin-1"),
    }


def main(argv: list[str]) -> int:
    mode, home_arg, out_arg = argv
    app = QApplication([sys.argv[0]])
    home, out = StationHome(Path(home_arg)), Path(out_arg)
    facts: dict[str, Any] = {"uid": os.getuid()}
    try:
        home.audit_db.open("rb").close()
        facts["audit_db"] = "opened"
    except OSError as exc:
        facts["audit_db"] = exc.strerror
    token: str | None = None
    if mode == "kiosk":
        person = json.loads(sys.stdin.read())
        with ServiceClient.connect(Path(os.environ["STATION_SOCKET"])) as client:
            token = client.call("sign_in", {"name": person["name"], "secret": person["secret"]})["session"]
    # The window cannot read the home's station.toml: its own guess of the station's name; the service's counts.
    config = StationConfig(name="window-guess", output=OutputSettings(folder=str(out)))
    station = StationClient(
        Path(os.environ["STATION_SOCKET"]), str(home.root)
    )  # as the window's session holds it
    reader = window_audit_reader(station, session=lambda: token)
    role = "technician" if mode == "technician" else "quality_lead"
    view = AuditView(reader, role=role, station=config.name, user="at the window", config=config, home=home)
    view.resize(1280, 760)
    view.show()
    settle(app, view)
    model = view.model
    facts["first_rows"] = model.rowCount()
    facts["count_label"] = view.count_label.text()
    facts["message"] = view.message.text()
    while model.canFetchMore():
        model.fetchMore()
        settle(app, view)
    units = [unit for row in range(model.rowCount()) if (unit := model.unit_at(row)) is not None]
    facts["rows"] = len(units)
    facts["stations"] = sorted({unit.station for unit in units})
    facts["ids"] = [unit.id for unit in units]

    view.result_combo.setCurrentText("failed")
    settle(app, view)
    facts["failed_ids"] = [unit.id for row in range(model.rowCount()) if (unit := model.unit_at(row))]
    facts["failed_count_label"] = view.count_label.text()
    view.select_row(0)
    settle(app, view)
    facts["summary"] = view.unit_summary.text()
    facts["steps"] = view.steps_tree.topLevelItemCount()
    facts["certificate_status"] = view.certificate_status.text()

    if role == "quality_lead":
        assert view.export("csv", out / "failed.csv")
        settle(app, view)
        facts["csv_message"] = view.message.text()
        facts["csv"] = file_facts(out / "failed.csv")
        facts["csv_lines"] = (out / "failed.csv").read_text(encoding="utf-8-sig").count("\n")
        view.clear_filters()
        settle(app, view)
        assert view.export("pdf", out / "all.pdf")
        settle(app, view)
        facts["pdf_message"] = view.message.text()
        facts["pdf"] = file_facts(out / "all.pdf")
        facts["home_export_started"] = view.export("csv", home.root / "into-home.csv")
        settle(app, view)
        facts["home_export_message"] = view.message.text()
    else:
        facts["export_started"] = view.export("csv", out / "never.csv")
        for name, read in (
            ("count_whole_log", lambda: reader.count_units(UnitFilter())),
            ("old_unit", lambda: reader.unit_detail(1, recent=True)),
            (
                "other_station",
                lambda: reader.units_page(
                    offset=0, limit=5, filters=UnitFilter(station="line-2"), recent=True
                ),
            ),
        ):
            try:
                read()
                facts[name] = "allowed"
            except StationError as exc:
                facts[name] = f"{type(exc).__name__}: {exc}"
    view.shutdown()
    print(json.dumps(facts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
