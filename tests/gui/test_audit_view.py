"""The audit view: a quality lead browses, filters, opens a unit, exports and revokes; a technician only looks.

A real audit log in tmp_path read through the in-process reader (the same protocol and technician scope as the
station service's; tests/integration/test_audit_service.py drives the view through a real service), the real view
offscreen. Background jobs (pages, unit details, counting, yield, certificate text, exports, revocations) are
awaited with qtbot.waitUntil, never with sleeps.
"""

from __future__ import annotations

import os

# tests/gui/conftest.py sets this too; it must be set before PySide6 is imported in any case.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import csv  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication  # noqa: E402

import ui.audit_view as audit_view_module  # noqa: E402
from station.audit import AuditLog, Unit  # noqa: E402
from station.config import OutputSettings, StationConfig  # noqa: E402
from station.home import StationHome  # noqa: E402
from station.service.audit_reader import LocalAuditReader  # noqa: E402
from tests.helpers.audit import Clock, make_certificate, start  # noqa: E402
from ui.audit_model import AuditTableModel  # noqa: E402
from ui.audit_view import TECHNICIAN_ROWS, AuditView  # noqa: E402
from ui.bridge import TaskPool  # noqa: E402

pytestmark = pytest.mark.gui

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
JOB_TIMEOUT_MS = 20_000
EXCERPT = "pkcs11-tool: C_GenerateKeyPair failed: CKR_DEVICE_ERROR\nslot 0 busy"


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    """75 units (every 10th at line-2, the rest at line-1): every 5th failed at keygen, every other 7th still
    running, the rest passed.

    Passed units have a certificate and a pinned host key; batches B-1 (units 1–40) and B-2 (41–75).
    """
    clock = Clock(T0)
    with AuditLog(tmp_path / "audit.db", clock=clock) as log:
        for n in range(1, 76):
            unit = start(
                log,
                f"20260000000{n:04d}",
                batch="B-1" if n <= 40 else "B-2",
                station="line-2" if n % 10 == 0 else "line-1",
                operator="ann" if n % 2 else "bob",
                fixture=f"slot-{n % 4 + 1}",
            )
            log.pin_host_key(unit.id, key_type="ssh-ed25519", fingerprint=f"SHA256:hostkey{n:04d}")
            began = clock()
            clock.advance(seconds=12 + n % 5)
            if n % 5 == 0:
                log.record_step(
                    unit.id,
                    step="keygen",
                    attempt=1,
                    outcome="failed",
                    started_at=began,
                    ended_at=clock(),
                    excerpt=EXCERPT,
                    message="token busy",
                )
                log.finish_unit(unit.id, result="failed", failed_step="keygen", message="token busy")
            else:
                log.record_step(
                    unit.id,
                    step="keygen",
                    attempt=1,
                    outcome="passed",
                    started_at=began,
                    ended_at=clock(),
                    excerpt="key0 generated",
                )
                if n % 7:
                    log.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{n}"))
                    log.finish_unit(unit.id, result="passed")
            clock.advance(minutes=1)
        yield log


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """The output folder exports and certificates go to (the home is beside it, never it)."""
    return tmp_path / "out"


@pytest.fixture
def open_view(qtbot: Any, audit: AuditLog, tmp_path: Path, out: Path) -> Iterator[Any]:
    views: list[AuditView] = []

    def open_(role: str = "quality_lead", station: str = "line-1", **kwargs: Any) -> AuditView:
        view = AuditView(
            LocalAuditReader(audit, station=station),
            role=role,
            station=station,
            user="Q. Lead",
            config=StationConfig(output=OutputSettings(folder=str(out))),
            home=StationHome(tmp_path / "home"),
            **kwargs,
        )
        qtbot.addWidget(view)
        view.show()
        qtbot.waitExposed(view)
        settle(qtbot, view)
        views.append(view)
        return view

    yield open_
    for view in views:
        view.shutdown()


def settle(qtbot: Any, view: AuditView) -> None:
    """Wait until the view's background jobs (its pages too) are done."""
    qtbot.waitUntil(lambda: not view.busy(), timeout=JOB_TIMEOUT_MS)
    QGuiApplication.processEvents()


@pytest.fixture
def pool(qtbot: Any) -> Iterator[TaskPool]:
    pool = TaskPool(max_threads=1)
    yield pool
    pool.shutdown(5000)


def loaded(qtbot: Any, model: AuditTableModel) -> None:
    qtbot.waitUntil(lambda: not model.loading, timeout=JOB_TIMEOUT_MS)


def select(qtbot: Any, view: AuditView, serial: str) -> None:
    """Select a unit's row and wait for its detail."""
    view.select_row(row_of_serial(view, serial))
    settle(qtbot, view)


def shown_units(model: AuditTableModel) -> list[Unit]:
    return [unit for row in range(model.rowCount()) if (unit := model.unit_at(row)) is not None]


def row_of_serial(view: AuditView, serial: str) -> int:
    return next(row for row, unit in enumerate(shown_units(view.model)) if unit.serial == serial)


# ------------------------------------------------------------------------------------------ the model


def test_the_model_reads_the_log_a_page_at_a_time_off_the_gui_thread(
    qtbot: Any, audit: AuditLog, pool: TaskPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    threads: list[threading.Thread] = []
    original = audit.units_page

    def spying(**kwargs: Any) -> list[Unit]:
        asked.append(kwargs["limit"])
        threads.append(threading.current_thread())
        return original(**kwargs)

    monkeypatch.setattr(audit, "units_page", spying)
    model = AuditTableModel(LocalAuditReader(audit, station="line-1"), pool, page_size=20)
    model.refresh()
    assert model.rowCount() == 0 and model.loading and not model.canFetchMore()  # asked, not yet answered
    loaded(qtbot, model)

    assert model.rowCount() == 20
    assert [u.id for u in shown_units(model)][:3] == [75, 74, 73]  # newest first
    growth = []
    while model.canFetchMore():
        model.fetchMore()
        loaded(qtbot, model)
        growth.append(model.rowCount())
    assert growth == [40, 60, 75]
    assert asked == [20, 20, 20, 20]  # never more than a page per query
    assert threads and threading.main_thread() not in threads


def test_a_table_view_scrolled_to_the_end_fetches_the_next_page(
    qtbot: Any, audit: AuditLog, pool: TaskPool
) -> None:
    from PySide6.QtWidgets import QTableView

    model = AuditTableModel(LocalAuditReader(audit, station="line-1"), pool, page_size=20)
    model.refresh()
    loaded(qtbot, model)
    table = QTableView()
    qtbot.addWidget(table)
    table.setModel(model)
    table.resize(600, 300)
    table.show()
    qtbot.waitExposed(table)

    table.scrollToBottom()
    qtbot.waitUntil(lambda: model.rowCount() > 20, timeout=5000)
    assert model.rowCount() in (40, 60, 75)
    loaded(qtbot, model)


def test_sorting_happens_in_sql_on_indexed_columns_only(qtbot: Any, audit: AuditLog, pool: TaskPool) -> None:
    model = AuditTableModel(LocalAuditReader(audit, station="line-1"), pool, page_size=20)
    model.refresh()
    loaded(qtbot, model)
    model.sort(1, Qt.SortOrder.AscendingOrder)  # Serial
    loaded(qtbot, model)
    assert model.order == ("serial", False)
    assert shown_units(model)[0].serial == "202600000000001"
    model.sort(9, Qt.SortOrder.AscendingOrder)  # Duration: no index, ignored
    assert model.order == ("serial", False)


# ------------------------------------------------------------------------------------- the quality lead


def test_filters_change_the_rows_and_the_count(qtbot: Any, open_view: Any) -> None:
    view = open_view()
    assert view.model.rowCount() == 75
    assert view.count_label.text() == "75 units match"

    view.serial_edit.setText("20260000000006")
    view.serial_edit.editingFinished.emit()
    settle(qtbot, view)
    assert [u.serial for u in shown_units(view.model)] == [f"20260000000{n:04d}" for n in range(69, 59, -1)]
    assert view.count_label.text() == "10 units match"

    view.result_combo.setCurrentText("failed")
    settle(qtbot, view)
    assert [u.id for u in shown_units(view.model)] == [65, 60]

    view.clear_filters()
    view.batch_edit.setText("B-2")
    view.batch_edit.editingFinished.emit()
    view.step_combo.setCurrentText("keygen")
    settle(qtbot, view)
    assert [u.id for u in shown_units(view.model)] == [75, 70, 65, 60, 55, 50, 45]

    view.clear_filters()
    view.operator_edit.setText("bob")
    view.operator_edit.editingFinished.emit()
    view.fixture_edit.setText("slot-1")
    view.fixture_edit.editingFinished.emit()
    settle(qtbot, view)
    assert {(u.operator, u.fixture) for u in shown_units(view.model)} == {("bob", "slot-1")}
    assert view.model.rowCount() == 18  # bob has the even n; slot-1 those with n % 4 == 0: 4, 8, …, 72

    view.clear_filters()
    settle(qtbot, view)
    assert view.model.rowCount() == 75


def test_a_date_range_is_whole_local_days(qtbot: Any, open_view: Any) -> None:
    view = open_view()
    day = T0.astimezone().date()
    view.since_edit.setDate(day + timedelta(days=1))
    view.since_check.setChecked(True)
    settle(qtbot, view)
    assert view.model.rowCount() == 0

    view.since_edit.setDate(day)
    view.until_edit.setDate(day)
    view.until_check.setChecked(True)
    settle(qtbot, view)
    assert view.model.rowCount() == 75


def test_clicking_a_sortable_header_sorts_the_whole_log(qtbot: Any, open_view: Any) -> None:
    view = open_view()
    header = view.table.horizontalHeader()
    qtbot.mouseClick(
        header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(header.sectionViewportPosition(1) + 5, 5)
    )
    settle(qtbot, view)
    assert view.model.order[0] == "serial"
    assert view.model.unit_at(0) is not None


def test_the_detail_pane_shows_steps_host_key_and_the_certificate_as_openssl_prints_it(
    qtbot: Any, open_view: Any
) -> None:
    view = open_view()
    select(qtbot, view, "202600000000001")

    assert view.selected_unit is not None and view.selected_unit.serial == "202600000000001"
    assert "SHA256:hostkey0001" in view.unit_summary.text()
    step = view.steps_tree.topLevelItem(0)
    assert [step.text(c) for c in (0, 1, 2, 4)] == ["keygen", "1", "passed", "13.0 s"]
    assert view.excerpt.toPlainText() == "key0 generated"
    qtbot.waitUntil(lambda: "Serial Number" in view.certificate_text.toPlainText(), timeout=JOB_TIMEOUT_MS)
    text = view.certificate_text.toPlainText()
    assert text.startswith("Certificate:\n    Data:")
    assert "Subject: CN = serial:1" in text or "Subject: CN=serial:1" in text

    view.copy_pem_button.click()
    assert QGuiApplication.clipboard().text().startswith("-----BEGIN CERTIFICATE-----")
    settle(qtbot, view)


def test_a_failed_unit_opens_on_its_failed_step(qtbot: Any, open_view: Any) -> None:
    view = open_view()
    select(qtbot, view, "202600000000005")
    assert view.steps_tree.currentItem().text(2) == "failed"
    assert view.excerpt.toPlainText() == EXCERPT
    assert "Failed at keygen: token busy" in view.unit_summary.text()
    assert view.certificate_status.text() == f"No certificate was issued to unit {view.selected_unit.id}."
    assert view.revoke_button is not None and not view.revoke_button.isEnabled()
    settle(qtbot, view)


def test_the_pem_is_saved_into_the_output_folder_only(
    qtbot: Any, open_view: Any, tmp_path: Path, out: Path
) -> None:
    view = open_view()
    select(qtbot, view, "202600000000002")
    assert view.save_pem(out / "board.pem")
    assert (out / "board.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert not view.save_pem(out / "board.pem")  # never replaced
    assert "already exists" in view.message.text()
    assert not view.save_pem(tmp_path / "elsewhere.pem")  # outside the output folder
    assert "outside the output folder" in view.message.text() and not (tmp_path / "elsewhere.pem").exists()


def test_exports_run_off_the_gui_thread_and_say_where_they_went(
    qtbot: Any, open_view: Any, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real_export = LocalAuditReader.export

    def recording_export(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return real_export(*args, **kwargs)

    monkeypatch.setattr(LocalAuditReader, "export", recording_export)
    asked_for = iter([out / "failed.csv", out / "b1.pdf"])
    monkeypatch.setattr(audit_view_module.AuditView, "_ask_output", lambda *a, **k: next(asked_for))
    view = open_view()
    view.result_combo.setCurrentText("failed")
    settle(qtbot, view)

    view.export_buttons["csv"].click()
    qtbot.waitUntil(lambda: view.message.text().startswith("Exported"), timeout=JOB_TIMEOUT_MS)
    assert view.message.text() == f"Exported 15 units to {out / 'failed.csv'}."
    assert oct((out / "failed.csv").stat().st_mode & 0o777) == "0o640"  # it names operators
    rows = list(csv.DictReader((out / "failed.csv").read_text(encoding="utf-8-sig").splitlines()))
    assert len(rows) == 15 and {row["state"] for row in rows} == {"failed"}

    view.clear_filters()
    view.batch_edit.setText("B-1")
    view.batch_edit.editingFinished.emit()
    settle(qtbot, view)
    view.export_buttons["pdf"].click()
    qtbot.waitUntil(lambda: view.message.text().startswith("Exported 40"), timeout=JOB_TIMEOUT_MS)
    assert (out / "b1.pdf").read_bytes().startswith(b"%PDF")
    assert view.message.text() == f"Exported 40 units to {out / 'b1.pdf'}, 2 pages."
    assert threads and all(thread is not threading.main_thread() for thread in threads)


def test_a_quality_lead_revokes_a_certificate_with_a_reason(
    qtbot: Any, open_view: Any, audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_view_module.QInputDialog, "getText", lambda *a, **k: ("keyCompromise", True))
    view = open_view()
    select(qtbot, view, "202600000000003")
    assert view.revoke_button is not None and view.revoke_button.isEnabled()

    view.revoke_button.click()
    qtbot.waitUntil(lambda: view.message.text().startswith("Revoked"), timeout=JOB_TIMEOUT_MS)
    settle(qtbot, view)

    assert "station ca crl --out FILE" in view.message.text()
    [revoked] = audit.revoked_certificates()
    assert revoked.reason == "keyCompromise"
    record = audit.certificate_for_unit(view.selected_unit.id)
    assert record is not None and record.revoked_by == "Q. Lead"
    row = row_of_serial(view, "202600000000003")
    assert view.model.index(row, 10).data().endswith("(revoked)")
    assert "REVOKED" in view.certificate_status.text()
    assert not view.revoke_button.isEnabled()


def test_a_revocation_without_a_reason_is_not_made(
    qtbot: Any, open_view: Any, audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_view_module.QInputDialog, "getText", lambda *a, **k: ("  ", True))
    view = open_view()
    select(qtbot, view, "202600000000003")
    assert view.revoke_selected() is False
    assert "needs a reason" in view.message.text()
    assert audit.revoked_certificates() == []


def test_the_yield_chart_summarises_the_filtered_batch(qtbot: Any, open_view: Any, audit: AuditLog) -> None:
    view = open_view()
    assert view.yield_chart is not None
    view.batch_edit.setText("B-1")
    view.batch_edit.editingFinished.emit()
    settle(qtbot, view)

    summary = view.yield_chart.summary
    assert summary is not None and summary == audit.yield_summary(batch="B-1")
    # B-1: units 1–40; 8 failed (every 5th, 35 too), 4 still running (7, 14, 21, 28), 28 passed.
    assert (summary.units, summary.failed, summary.running, summary.passed) == (40, 8, 4, 28)
    assert view.yield_chart.note == "Yield of batch B-1"
    assert not view.yield_chart.grab().isNull()


# ---------------------------------------------------------------------------------------- the technician


def test_a_technician_sees_only_the_recent_units_of_the_station_and_cannot_export_or_revoke(
    qtbot: Any, open_view: Any, audit: AuditLog, tmp_path: Path
) -> None:
    view = open_view("technician", station="line-1")

    units = shown_units(view.model)
    line_1 = [n for n in range(75, 0, -1) if n % 10]  # 68 units, newest first
    assert [u.id for u in units] == line_1[:TECHNICIAN_ROWS]
    assert view.model.canFetchMore() is False
    assert view.count_label.text() == "the last 50 units at line-1"
    assert view.export_buttons == {} and view.revoke_button is None and view.yield_chart is None
    assert not view.table.isSortingEnabled()

    select(qtbot, view, "202600000000073")
    assert view.selected_unit is not None and view.certificate_status.text().startswith("Certificate ")
    assert view.export("csv", tmp_path / "out" / "units.csv") is False
    assert view.revoke_selected("keyCompromise") is False
    assert not (tmp_path / "out" / "units.csv").exists()
    assert audit.revoked_certificates() == []

    view.serial_edit.setText("20260000000007")
    view.serial_edit.editingFinished.emit()
    settle(qtbot, view)
    assert [u.id for u in shown_units(view.model)] == [75, 74, 73, 72, 71]  # line-2's unit 70 is not shown
    assert view.count_label.text() == "the last 5 units at line-1"
    # A filter narrows within the station's recent units: an older unit of line-1 is not found.
    view.serial_edit.setText("202600000000002")
    view.serial_edit.editingFinished.emit()
    settle(qtbot, view)
    assert view.model.rowCount() == 0


def test_a_technician_view_needs_the_station_and_roles_are_checked(audit: AuditLog) -> None:
    reader = LocalAuditReader(audit, station="line-1")
    with pytest.raises(ValueError, match="station"):
        AuditView(reader, role="technician")
    with pytest.raises(ValueError, match="role"):
        AuditView(reader, role="admin")


# ------------------------------------------------------------------------------ a slow or stopped service


def test_a_stopped_service_is_said_and_the_view_stays_usable(qtbot: Any, tmp_path: Path) -> None:
    from station.service.audit_reader import ServiceAuditReader

    nobody = tmp_path / "nobody.sock"  # nothing listens here
    view = AuditView(ServiceAuditReader.for_home(None, str(nobody)), role="quality_lead", station="line-1")
    qtbot.addWidget(view)
    view.show()
    settle(qtbot, view)
    assert "Could not read the audit log: no station service answers on" in view.message.text()
    assert "systemctl start welma-station" in view.message.text()
    assert view.model.rowCount() == 0 and not view.model.canFetchMore()
    view.refresh()  # asks again, says it again
    settle(qtbot, view)
    assert "no station service answers" in view.message.text()
    view.shutdown()


def test_a_service_that_does_not_answer_never_freezes_the_window(qtbot: Any, tmp_path: Path) -> None:
    """A service that accepts and never answers: the view is built and shown at once, the GUI thread keeps
    running (a timer ticks throughout), and after the read deadline the view says so."""
    import socket

    from PySide6.QtCore import QTimer

    from station.service.audit_reader import ServiceAuditReader

    path = tmp_path / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    try:
        reader = ServiceAuditReader.for_home(None, str(path))
        reader.read_deadline_s = 1.5
        began = time.monotonic()
        view = AuditView(reader, role="quality_lead", station="line-1")
        qtbot.addWidget(view)
        view.show()
        assert time.monotonic() - began < 1.0  # built without waiting for the service
        timer.start()
        qtbot.waitUntil(lambda: "did not answer" in view.message.text(), timeout=JOB_TIMEOUT_MS)
        assert "did not answer audit_" in view.message.text() and "within 1.5 s" in view.message.text()
        settle(qtbot, view)
        timer.stop()
        gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:], strict=False)]
        assert len(ticks) > 20 and max(gaps) < 1.0, max(gaps)  # the GUI thread never waited on the socket
        view.shutdown()

        # Closed while its reads wait on the silent service: they are interrupted, closing does not wait them out.
        waiting = AuditView(
            ServiceAuditReader.for_home(None, str(path)), role="quality_lead", station="line-1"
        )
        qtbot.addWidget(waiting)
        qtbot.waitUntil(lambda: len(accepted) >= 2, timeout=JOB_TIMEOUT_MS)  # its reads are out
        began = time.monotonic()
        assert waiting.shutdown() is True
        assert time.monotonic() - began < 2.0  # far below the 20 s read deadline
    finally:
        timer.stop()
        stop.set()
        acceptor.join(5)
        for sock in accepted:
            sock.close()
        listener.close()
