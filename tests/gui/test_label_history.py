"""The label prints beside the audit tab's "Reprint label", read through the station service (``label_prints``)
on the window's task pool: "reading the label history…" while the read is under way (the GUI thread goes on),
an answer for a unit no longer shown dropped, the history read again after a reprint, and a service that does
not answer said plainly.  The window's own reads are real (a real service on the test's home, a real label
printer server); the test only holds a read back (a gate) to see what the window shows meanwhile."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QTimer

from station.audit import AuditLog, Unit
from tests.gui.conftest import home_audit
from tests.helpers.audit import make_certificate, start
from tests.helpers.line_servers import FakeZplPrinter
from tests.helpers.technician import sign_in
from ui.line import ReprintButton

pytestmark = pytest.mark.gui

WAIT_MS = 10_000
OLDER, NEWER = "202600000000011", "202600000000012"


def passed_unit(audit: AuditLog, serial: str, station: str) -> Unit:
    unit = start(audit, serial, station=station)
    audit.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{serial}"))
    audit.finish_unit(unit.id, result="passed")
    return audit.unit(unit.id)


class Gates:
    """Holds the window's label-history reads back, per unit, until the test lets them through (each read is
    then the window's own call to the service)."""

    def __init__(self, read: Any) -> None:
        self.read = read
        self.open: dict[int, threading.Event] = {}
        self.done: list[int] = []
        self.held_too_long: list[int] = []

    def gate(self, unit_id: int) -> threading.Event:
        return self.open.setdefault(unit_id, threading.Event())

    def __call__(self, unit_id: int) -> Any:
        # Bounded: a GUI thread that waited for this read would never let it through — the test then fails.
        if not self.gate(unit_id).wait(WAIT_MS / 1000):
            self.held_too_long.append(unit_id)
        try:
            return self.read(unit_id)
        finally:
            self.done.append(unit_id)

    def release_all(self) -> None:
        for event in self.open.values():
            event.set()


def test_the_tooltip_reads_the_history_through_the_service_off_the_gui_thread(
    qtbot: Any,
    sim_home: Any,
    station_ca: Any,
    fixtures_file: Path,
    open_window: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    printer = FakeZplPrinter()
    gates: Gates | None = None
    restore: list[Any] = []
    try:
        sim_home.config_file.write_text(
            f'[label]\nprinter = "{printer.url}"\ntimeout_s = 2\n', encoding="utf-8"
        )
        window = open_window(sim_home, station_ca, fixtures_file)
        audit = home_audit(window)
        station = window.session.config.name
        older = passed_unit(audit, OLDER, station)
        newer = passed_unit(audit, NEWER, station)
        audit.record_label_print(
            newer.id, by="ann", printer=printer.url, reprint=False, printed=False, message="out of labels"
        )
        client = window.session.client
        gates = Gates(client.label_prints)
        monkeypatch.setattr(client, "label_prints", gates)  # before the audit tab builds its button
        assert not hasattr(
            window.session, "audit"
        )  # the window opens nothing in the home: no audit log of its own
        sign_in(qtbot, window, "alice")
        qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
        qtbot.waitUntil(
            lambda: window.audit_view is not None and window.audit_view.model.rowCount() == 2, timeout=WAIT_MS
        )
        view = window.audit_view
        button = view.findChild(ReprintButton)
        assert button is not None

        # The older unit: its read is held back; the tooltip says so and the GUI thread goes on meanwhile.
        view.table.selectRow(1)
        assert button.unit is not None and button.unit.id == older.id
        assert button.toolTip() == f"Labels of {OLDER}: reading the label history…" and button.reading
        ticked: list[bool] = []
        QTimer.singleShot(50, lambda: ticked.append(True))
        qtbot.waitUntil(lambda: ticked == [True], timeout=WAIT_MS)  # the event loop runs while the read waits
        assert older.id not in gates.done

        # The newer unit shown before the older one's answer came: only the newer one's history is shown.
        view.table.selectRow(0)
        assert button.toolTip() == f"Labels of {NEWER}: reading the label history…"
        gates.gate(newer.id).set()
        qtbot.waitUntil(
            lambda: "print by ann: not printed (out of labels)" in button.toolTip(), timeout=WAIT_MS
        )
        assert button.toolTip().startswith(f"Labels of {NEWER}:\n") and not button.reading
        gates.gate(older.id).set()  # the older unit's answer arrives late: dropped
        qtbot.waitUntil(lambda: older.id in gates.done, timeout=WAIT_MS)
        qtbot.wait(200)  # its answer reaches the GUI thread (queued), and is ignored there
        assert button.toolTip().startswith(f"Labels of {NEWER}:\n") and OLDER not in button.toolTip()

        # A reprint: the service prints and records it; the tooltip reads the history again and shows it.
        qtbot.waitUntil(button.isEnabled, timeout=WAIT_MS)
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "reprint by alice: printed" in button.toolTip(), timeout=WAIT_MS)
        assert "print by ann: not printed" in button.toolTip() and len(printer.jobs(expect=1)) == 1
        assert [p.by for p in audit.label_prints(newer.id)] == ["ann", "alice"]

        # The older unit again, read at once now: never printed.
        view.table.selectRow(1)
        qtbot.waitUntil(lambda: f"No label printed yet for {OLDER}" in button.toolTip(), timeout=WAIT_MS)

        # A service that does not answer (the window pointed at a socket nobody listens on): said plainly.
        restore.append((client, client.path))
        client.path = tmp_path / "nobody.sock"
        view.table.selectRow(0)
        qtbot.waitUntil(lambda: "could not be read" in button.toolTip(), timeout=WAIT_MS)
        said = " ".join(button.toolTip().split())  # (a long line of the tooltip is folded)
        assert said.startswith(
            f"Labels of {NEWER}: the label history could not be read — the station service"
        )
        assert (
            "does not answer" in said
            and "systemctl start welma-station" in said
            and "Reprint still prints" in said
        )
        assert not gates.held_too_long
    finally:
        for each, path in restore:
            each.path = path
        if gates is not None:
            gates.release_all()
        printer.close()
