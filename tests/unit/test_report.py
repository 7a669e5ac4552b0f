"""The PDF report of a batch or a period: a file poppler opens without complaint, holding the batch's story.

Rendering and text extraction use the real poppler tools (`pdftoppm`, `pdftotext`), with deadlines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from station.audit import AuditLog, UnitFilter
from station.cli import main
from station.errors import StationError
from station.report import (
    ReportScope,
    clean_text,
    export_to_file,
    fit_text,
    render_report,
    text_width,
)
from tests.helpers.audit import Clock, make_certificate, start

POPPLER_TIMEOUT_S = 60
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
# What a step excerpt might hold even after masking went wrong: none of it may reach a report.
SECRET = "pkcs11-tool --login --so-pin 87654321 --pin 123456"

pytestmark = pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils is not installed")


def poppler(tool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, *map(str, args)], capture_output=True, text=True, timeout=POPPLER_TIMEOUT_S, check=False
    )


def pdf_text(path: Path, *pages: int) -> str:
    first_last = ["-f", str(pages[0]), "-l", str(pages[-1])] if pages else []
    shown = poppler("pdftotext", *first_last, "-layout", path, "-")
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    return shown.stdout


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """Batch B-17: 12 boards (two failed, one still running), then one board of batch B-18 a day later."""
    root = tmp_path / "home"
    root.mkdir()
    (root / "station.toml").write_text('[station]\nname = "line-3 (Göttingen)"\n', encoding="utf-8")
    clock = Clock(T0)
    with AuditLog(root / "audit.db", clock=clock) as log:
        for n in range(12):
            unit = start(log, f"2026000000000{n:02d}", batch="B-17", operator="Zoë (shift 2)")
            began = clock()
            clock.advance(seconds=14 + n)
            log.record_step(
                unit.id,
                step="keygen",
                attempt=1,
                outcome="passed",
                started_at=began,
                ended_at=clock(),
                excerpt=SECRET,
                message=SECRET,
            )
            log.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{n}"))
            if n in (3, 7):
                log.record_step(
                    unit.id,
                    step="push",
                    attempt=1,
                    outcome="failed",
                    started_at=clock(),
                    ended_at=clock(),
                    excerpt=SECRET,
                )
                log.finish_unit(
                    unit.id, result="failed", failed_step="push", message=f"push failed ({SECRET})"
                )
            elif n != 11:
                log.finish_unit(unit.id, result="passed")
        clock.advance(days=1)
        other = start(log, "202600000000099", batch="B-18")
        log.finish_unit(other.id, result="passed")
    yield root


def export_pdf(home: Path, out: Path, *options: str) -> int:
    return main(["--home", str(home), "audit", "export", "--format", "pdf", "--out", str(out), *options])


# ------------------------------------------------------------------------------------------- the file


def test_a_batch_report_is_a_pdf_with_the_batch_its_figures_and_every_serial(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "B-17.pdf"

    assert export_pdf(home, out, "--batch", "B-17") == 0
    assert capsys.readouterr().out == f"wrote a 2-page report listing 12 units to {out}\n"

    data = out.read_bytes()
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF")
    rendered = poppler("pdftoppm", "-png", "-r", "60", out, tmp_path / "page")
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
    assert sorted(p.name for p in tmp_path.glob("page-*.png")) == ["page-1.png", "page-2.png"]
    assert all(p.stat().st_size > 5000 for p in tmp_path.glob("page-*.png"))

    text = pdf_text(out)
    assert "Provisioning report — batch B-17" in text
    assert "Station: line-3 (Göttingen)" in text
    for n in range(12):
        assert f"2026000000000{n:02d}" in text
    assert "202600000000099" not in text  # batch B-18
    assert "Zoë (shift 2)" in text  # WinAnsi text survives the round trip
    first_page = pdf_text(out, 1)
    # 12 units, 1 still running: 9 of 11 finished passed, all at their first attempt.
    assert "Units started" in first_page and "81.8 %" in first_page
    assert "Failed attempts by step" in first_page and "push" in first_page and "2 (100%)" in first_page
    assert "Key generation time (passed runs)" in first_page and "median 19.0 s" in first_page
    assert "page 1 of 2" in first_page and "page 2 of 2" in pdf_text(out, 2)


def test_a_report_holds_no_step_output_secrets_or_keys(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.pdf"
    assert export_pdf(home, out) == 0
    text = pdf_text(out)
    for forbidden in ("87654321", "123456", "--pin", "pkcs11-tool", "BEGIN", "CERTIFICATE", "PRIVATE"):
        assert forbidden not in text
    assert "push failed (" not in text  # unit messages are not in the report either


def test_a_long_unit_table_is_paginated_and_capped_with_a_note(tmp_path: Path) -> None:
    clock = Clock(T0)
    with AuditLog(tmp_path / "audit.db", clock=clock) as log:
        for n in range(130):
            unit = start(log, f"S{n:04d}", batch="B-1")
            clock.advance(seconds=30)
            log.finish_unit(unit.id, result="passed")
        report = render_report(log, ReportScope(batch="B-1"), station="line-1", unit_cap=120)
    out = tmp_path / "capped.pdf"
    out.write_bytes(report.pdf)

    assert (report.units_in_table, report.units_matching) == (120, 130)
    assert report.pages == 4  # the figures, then 120 rows at 53 a page
    text = pdf_text(out)
    assert "The first 120 of 130 units, oldest first." in text
    assert "… and 10 more units, not listed here." in text
    assert "S0119" in text and "S0120" not in text
    for page in (2, 3, 4):
        assert "Serial" in pdf_text(out, page)  # the heading row on every page of the table
    assert "Units (continued)" in pdf_text(out, 3)


def test_a_period_report_and_a_result_that_narrows_only_the_table(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "failed.pdf"
    day = T0.astimezone().date().isoformat()

    assert export_pdf(home, out, "--from", day, "--to", day, "--result", "failed") == 0

    text = pdf_text(out)
    assert f"Provisioning report — {day} to {day}" in text
    assert "All 2 failed units, oldest first." in text
    assert "202600000000003" in text and "202600000000007" in text and "202600000000000" not in text
    assert "81.8 %" in text  # the yield is still the whole day's


def test_an_empty_scope_still_gives_a_readable_report(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty.pdf"
    assert export_pdf(home, out, "--batch", "NO-SUCH-BATCH") == 0
    text = pdf_text(out)
    assert "No units in scope." in text
    assert "No attempt failed." in text and "No key generation was recorded." in text
    assert "Pass rate" in text and "—" in text


def test_a_failed_report_leaves_the_old_file(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.pdf"
    out.write_bytes(b"previous report")
    assert export_pdf(home, out, "--steps") == 1
    assert "a PDF report has no step details" in capsys.readouterr().err
    assert export_pdf(home, tmp_path / "missing" / "r.pdf") == 1
    assert "does not exist" in capsys.readouterr().err
    assert out.read_bytes() == b"previous report"


# ------------------------------------------------------------------------------------------- pieces


def test_operators_names_in_any_script_come_back_out_of_the_pdf_exactly(tmp_path: Path) -> None:
    names = ("王芳", "Łukasz Żółć", "Zoë Ødegård")
    with AuditLog(tmp_path / "audit.db", clock=Clock(T0)) as log:
        for n, name in enumerate(names):
            unit = start(log, f"20260000000010{n}", batch="B-intl", operator=name)
            log.finish_unit(unit.id, result="passed")
        report = render_report(log, ReportScope(batch="B-intl"), station="линия-3 / ライン3")
    out = tmp_path / "intl.pdf"
    out.write_bytes(report.pdf)
    text = pdf_text(out)
    for name in names:
        assert name in text, f"{name!r} not in the report's text:\n{text}"
    assert "линия-3 / ライン3" in text
    fonts = poppler("pdffonts", out).stdout
    # Every font is embedded (a reader without the fonts shows the same glyphs).
    assert "DejaVuSans" in fonts and "CJK" in fonts.upper() or "Droid" in fonts, fonts
    assert all(line.split()[-5] == "yes" for line in fonts.splitlines()[2:]), fonts


def test_control_characters_never_reach_the_page() -> None:
    assert clean_text("tab\there\nnew\x00") == "tab here new "
    assert text_width("王芳", 10) > text_width("ii", 10) > 0
    assert text_width("ii", 10, bold=True) > text_width("ii", 10)


def test_text_that_does_not_fit_a_column_is_cut_with_an_ellipsis() -> None:
    fitted = fit_text("Jürgen Ölsner-Großmann (night shift)", 60, 8)
    assert fitted.endswith("…") and text_width(fitted, 8) <= 60
    assert fit_text("ann", 60, 8) == "ann"


def test_export_to_file_writes_every_format_through_one_entry(home: Path, tmp_path: Path) -> None:
    with AuditLog(home / "audit.db") as log:
        failed = UnitFilter(result="failed")
        csv_out = export_to_file(log, tmp_path / "u.csv", fmt="csv", filters=failed)
        jsonl_out = export_to_file(log, tmp_path / "u.jsonl", fmt="jsonl", filters=failed, include_steps=True)
        pdf_out = export_to_file(
            log, tmp_path / "u.pdf", fmt="pdf", filters=UnitFilter(batch="B-17"), station="x"
        )
        with pytest.raises(StationError, match="JSON Lines export only"):
            export_to_file(log, tmp_path / "u.csv", fmt="csv", include_steps=True)
    assert (csv_out.units, jsonl_out.units, pdf_out.units, pdf_out.pages) == (2, 2, 12, 2)
    assert len((tmp_path / "u.csv").read_text(encoding="utf-8").splitlines()) == 3
    records = [json.loads(line) for line in (tmp_path / "u.jsonl").read_text().splitlines()]
    assert [r["steps"][-1]["step"] for r in records] == ["push", "push"]
    assert (tmp_path / "u.pdf").read_bytes().startswith(b"%PDF")
    # They name operators: readable by their owner and group only, whatever the umask.
    assert {(tmp_path / name).stat().st_mode & 0o777 for name in ("u.csv", "u.jsonl", "u.pdf")} == {0o640}


def test_report_times_are_local_and_say_so(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.pdf"
    with AuditLog(home / "audit.db") as log:
        report = render_report(log, ReportScope(batch="B-18"), station="line-3", now=T0 + timedelta(days=2))
    out.write_bytes(report.pdf)
    text = pdf_text(out)
    generated = (T0 + timedelta(days=2)).astimezone()
    assert f"Generated {generated:%Y-%m-%d %H:%M} (times are local, UTC" in text
    assert f"{(T0 + timedelta(days=1, seconds=14 * 12 + 66)).astimezone():%Y-%m-%d}" in text
