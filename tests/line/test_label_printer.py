"""ZPL label printers: one well-formed label per PASS reaches a (fake, real-TCP) printer on loopback; the label,
rendered offline by a real ZPL renderer, scans back to the serial and the certificate fingerprint; a printer
with a problem, or one that never answers, is reported in words within the deadline and nothing is printed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from station.audit import AuditLog, Unit
from station.home import StationHome
from station.label import label_layout
from station.line.handoff import LineHandOff
from station.line.labels import LabelDesk
from tests.helpers.line_servers import FakeZplPrinter, render_zpl, zbar
from tests.line.conftest import line_config

WAIT_S = 15.0


def test_every_passed_unit_prints_exactly_one_label_and_a_failed_one_none(
    home: StationHome, audit: AuditLog, finish: Callable[..., Unit], printer: FakeZplPrinter
) -> None:
    handoff = LineHandOff(config=line_config(printer=printer.url), home=home, audit=audit)
    try:
        units = [
            finish("202600000000001"),
            finish("202600000000002", passed=False),
            finish("202600000000003"),
        ]
        for unit in units:
            handoff.unit_finished(unit)
        assert handoff.wait_printed(WAIT_S)
    finally:
        handoff.close()
    jobs = printer.jobs(expect=2)
    assert len(jobs) == 2
    for job, serial in zip(jobs, ("202600000000001", "202600000000003"), strict=True):
        assert job.startswith(b"^XA") and job.endswith(b"^XZ")
        assert job.count(b"^XA") == 1 and job.count(b"^XZ") == 1
        assert f"^FD{serial}^FS".encode() in job
    assert printer.status_requests == 2  # the status was read before each label
    prints = [audit.label_prints(unit.id) for unit in units]
    assert [len(p) for p in prints] == [1, 0, 1]
    assert all(p[0].printed and not p[0].reprint and p[0].by == "ann" for p in (prints[0], prints[2]))
    assert audit.verify().ok


@pytest.mark.parametrize("stock", ["62x29", "50x25", "100x50"])
def test_the_printed_label_scans_back_to_the_serial_and_the_certificate_fingerprint(
    stock: str,
    home: StationHome,
    audit: AuditLog,
    finish: Callable[..., Unit],
    printer: FakeZplPrinter,
    tmp_path: Path,
) -> None:
    unit = finish("202600000000042")
    outcome = LabelDesk(config=line_config(printer=printer.url, stock=stock), audit=audit).print_unit(
        unit.id, by="ann"
    )
    assert outcome.printed, outcome.message
    [job] = printer.jobs(expect=1)
    layout = label_layout(stock)
    image = render_zpl(
        job, tmp_path / f"label-{stock}.png", width_mm=layout.width_mm, height_mm=layout.height_mm
    )
    fingerprint = (unit.certificate_fingerprint or "").replace(":", "").upper()
    assert sorted(zbar(image)) == sorted(
        [f"CODE-128:{unit.serial}", f"QR-Code:{unit.serial} SHA256:{fingerprint}"]
    )
    assert b"line-1" in job  # the station that provisioned it


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("paper_out", "out of labels — load a new roll"),
        ("paused", "paused — press PAUSE on the printer"),
        ("head_open", "print head open — close the print head"),
    ],
)
def test_a_printer_with_a_problem_is_told_in_words_and_gets_no_label(
    mode: str, words: str, audit: AuditLog, finish: Callable[..., Unit], printer: FakeZplPrinter
) -> None:
    printer.mode = mode
    unit = finish("202600000000007")
    outcome = LabelDesk(config=line_config(printer=printer.url), audit=audit).print_unit(unit.id, by="ann")
    assert not outcome.printed
    assert words in outcome.message and "reprint it from the unit's detail" in outcome.message
    assert printer.jobs() == []
    [record] = audit.label_prints(unit.id)
    assert not record.printed and words in record.message


def test_a_printer_that_never_answers_is_given_up_within_its_deadline(
    audit: AuditLog, finish: Callable[..., Unit], printer: FakeZplPrinter
) -> None:
    printer.mode = "silent"
    unit = finish("202600000000008")
    began = time.monotonic()
    outcome = LabelDesk(config=line_config(printer=printer.url, timeout_s=1.0), audit=audit).print_unit(
        unit.id, by="ann"
    )
    assert time.monotonic() - began < 3.0
    assert not outcome.printed
    assert "did not answer its status request within 1 s" in outcome.message
    assert printer.jobs() == []


def test_a_printer_that_is_switched_off_is_reported_not_waited_for(
    audit: AuditLog, finish: Callable[..., Unit], printer: FakeZplPrinter
) -> None:
    url = printer.url
    printer.close()  # nobody listens on the port any more
    unit = finish("202600000000009")
    outcome = LabelDesk(config=line_config(printer=url, timeout_s=1.0), audit=audit).print_unit(
        unit.id, by="ann"
    )
    assert not outcome.printed and "cannot be reached" in outcome.message and "switched on" in outcome.message


def test_a_reprint_from_the_unit_detail_is_printed_and_recorded_as_a_reprint(
    home: StationHome, audit: AuditLog, finish: Callable[..., Unit], printer: FakeZplPrinter
) -> None:
    unit = finish("202600000000010")
    handoff = LineHandOff(config=line_config(printer=printer.url), home=home, audit=audit)
    try:
        handoff.unit_finished(unit)
        handoff.request_print(unit.id, by="quality lead Łukasz", reprint=True)
        assert handoff.wait_printed(WAIT_S)
    finally:
        handoff.close()
    assert len(printer.jobs(expect=2)) == 2
    first, again = audit.label_prints(unit.id)
    assert (first.reprint, again.reprint) == (False, True)
    assert again.by == "quality lead Łukasz" and again.printed
    assert audit.verify().ok


def test_a_failed_unit_has_no_label_to_reprint(
    audit: AuditLog, finish: Callable[..., Unit], printer: FakeZplPrinter
) -> None:
    unit = finish("202600000000011", passed=False)
    outcome = LabelDesk(config=line_config(printer=printer.url), audit=audit).print_unit(
        unit.id, by="ann", reprint=True
    )
    assert not outcome.printed and "only a board that passed gets a label" in outcome.message
    assert printer.jobs() == []


def test_station_label_print_prints_then_reprints_and_says_what_happened(
    home: StationHome,
    audit: AuditLog,
    finish: Callable[..., Unit],
    printer: FakeZplPrinter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from station.cli import main

    home.config_file.write_text(f'[label]\nprinter = "{printer.url}"\ntimeout_s = 2\n', encoding="utf-8")
    unit = finish("202600000000012")
    command = ["--home", str(home.root), "label", "print", "--serial", unit.serial, "--by", "Zoë Ødegård"]
    assert main(command) == 0 and main(command) == 0
    assert capsys.readouterr().out == f"label {unit.serial} sent to {printer.url}\n" * 2
    assert [p.reprint for p in audit.label_prints(unit.id)] == [False, True]
    assert len(printer.jobs(expect=2)) == 2
    printer.mode = "paper_out"
    assert main(command) == 1
    assert "out of labels" in capsys.readouterr().out
