"""Printing to an IPP queue: the label goes through ipptool to a real IPP printer application on loopback
(LPrint), which hands the ZPL to its printer (our loopback ZPL printer); what reaches the printer renders and
scans back to the board's serial.  The queue's own state (paused) is read as the printer's status."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from station.audit import AuditLog, Unit
from station.label import label_layout
from station.line.labels import LabelDesk
from tests.helpers.line_servers import FakeZplPrinter, LPrintServer, render_zpl, zbar
from tests.line.conftest import line_config

WAIT_S = 20.0


@pytest.fixture
def lprint(tmp_path: Path, printer: FakeZplPrinter) -> Iterator[LPrintServer]:
    server = LPrintServer(tmp_path / "lprint", f"socket://127.0.0.1:{printer.port}")
    yield server
    server.close()


def wait_for_job(printer: FakeZplPrinter) -> bytes:
    import time

    deadline = time.monotonic() + WAIT_S
    while not printer.jobs():
        assert time.monotonic() < deadline, "the IPP job never reached the printer"
        time.sleep(0.1)
    [job] = printer.jobs(expect=1)
    return job


def test_a_label_sent_to_an_ipp_queue_reaches_the_printer_and_scans_back(
    lprint: LPrintServer,
    printer: FakeZplPrinter,
    audit: AuditLog,
    finish: Callable[..., Unit],
    tmp_path: Path,
) -> None:
    unit = finish("202600000000077")
    outcome = LabelDesk(config=line_config(printer=lprint.url, timeout_s=10), audit=audit).print_unit(
        unit.id, by="ann"
    )
    assert outcome.printed, outcome.message
    job = wait_for_job(printer)
    layout = label_layout("62x29")
    codes = zbar(render_zpl(job, tmp_path / "ipp.png", width_mm=layout.width_mm, height_mm=layout.height_mm))
    assert f"CODE-128:{unit.serial}" in codes
    assert "Job 1" in lprint.log.read_text()  # LPrint's own journal of the job
    [record] = audit.label_prints(unit.id)
    assert record.printed and record.printer == lprint.url


def test_a_paused_ipp_queue_is_told_in_words_and_gets_no_label(
    lprint: LPrintServer, printer: FakeZplPrinter, audit: AuditLog, finish: Callable[..., Unit]
) -> None:
    lprint.lprint("pause", "-d", "zebra")
    unit = finish("202600000000078")
    outcome = LabelDesk(config=line_config(printer=lprint.url, timeout_s=10), audit=audit).print_unit(
        unit.id, by="ann"
    )
    assert not outcome.printed
    assert "paused — resume the printer" in outcome.message
    assert printer.jobs() == []


def test_an_ipp_address_where_nothing_listens_is_reported_in_words(
    audit: AuditLog, finish: Callable[..., Unit], printer: FakeZplPrinter
) -> None:
    unit = finish("202600000000079")
    url = f"ipp://127.0.0.1:{printer.port}/ipp/print/none"  # a port that speaks raw ZPL, not IPP
    outcome = LabelDesk(config=line_config(printer=url, timeout_s=2), audit=audit).print_unit(
        unit.id, by="ann"
    )
    assert not outcome.printed
    assert f"printer {url}" in outcome.message and "reprint" in outcome.message
