"""A board's label: what it says (serial, short certificate fingerprint, date), where it goes on
the stock, and a Code128 barcode that a real reader (zbar) decodes back to the serial."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date

import pytest

from station.label import (
    LABEL_LAYOUTS,
    QUIET_ZONE_MODULES,
    LabelError,
    barcode_png,
    build_label,
    code128_modules,
    label_layout,
    lay_out,
    short_fingerprint,
)

FINGERPRINT = "9693281b313f894749bb73ca34ebb49b6607d8a2" + "0" * 24
ZBARIMG_TIMEOUT_S = 30


def zbar(path) -> list[str]:
    zbarimg = shutil.which("zbarimg")
    assert zbarimg, "zbarimg is missing — install Debian's zbar-tools"
    done = subprocess.run(
        [zbarimg, "--quiet", "--raw", str(path)],
        capture_output=True,
        text=True,
        timeout=ZBARIMG_TIMEOUT_S,
        check=False,
    )
    return done.stdout.split()


@pytest.mark.parametrize("serial", ["202600000000001", "WLM-2026/A0042", "a.b:c+d"])
def test_the_barcode_png_scans_back_to_the_serial(tmp_path, serial):
    png = tmp_path / "code.png"
    png.write_bytes(barcode_png(serial))
    assert png.read_bytes().startswith(b"\x89PNG")
    assert zbar(png) == [serial]


def test_the_label_says_serial_short_fingerprint_and_date():
    label = build_label("202600000000001", FINGERPRINT, issued_on=date(2026, 11, 26))
    assert label.lines == ("202600000000001", "cert SHA-256 96:93:28:1B:31:3F:89:47", "2026-11-26")


def test_a_fingerprint_with_colons_is_shortened_the_same_way():
    colons = ":".join(FINGERPRINT[i : i + 2] for i in range(0, 64, 2)).upper()
    assert short_fingerprint(colons) == short_fingerprint(FINGERPRINT) == "96:93:28:1B:31:3F:89:47"


@pytest.mark.parametrize("bad", ["", "abc", "zz" * 32, FINGERPRINT[:-2]])
def test_something_that_is_not_a_sha256_fingerprint_makes_no_label(bad):
    with pytest.raises(LabelError, match="not a SHA-256 fingerprint"):
        build_label("202600000000001", bad)


@pytest.mark.parametrize("serial", ["", "serial\n", "séria1"])
def test_a_serial_code128_cannot_carry_makes_no_label(serial):
    with pytest.raises(LabelError, match="cannot be encoded in Code128"):
        build_label(serial, FINGERPRINT)


@pytest.mark.parametrize("name", sorted(LABEL_LAYOUTS))
def test_every_layout_fits_barcode_quiet_zones_and_text_inside_the_stock(name):
    stock = LABEL_LAYOUTS[name]
    sheet = lay_out(build_label("202600000000001", FINGERPRINT), stock)
    quiet = QUIET_ZONE_MODULES * sheet.module_mm
    assert sheet.barcode.x - quiet >= stock.margin_mm - 1e-9
    assert sheet.barcode.x + sheet.barcode.width + quiet <= stock.width_mm - stock.margin_mm + 1e-9
    assert sheet.modules == code128_modules("202600000000001")
    bars = sheet.bars()
    assert bars[0][0] == pytest.approx(sheet.barcode.x)  # Code128 starts with a bar
    assert sum(width for _, width in bars) == pytest.approx(sheet.modules.count("1") * sheet.module_mm)
    bottom = max(text.box.y + text.box.height for text in sheet.texts)
    assert bottom <= stock.height_mm - stock.margin_mm + 1e-9
    assert [text.text for text in sheet.texts] == list(sheet.content.lines)


def test_a_serial_too_long_for_the_stock_is_refused_with_what_to_do():
    long_serial = "A" * 64  # 64 Code128-B characters: far wider than a 50 mm label allows
    with pytest.raises(LabelError, match="choose a wider label layout"):
        lay_out(build_label(long_serial, FINGERPRINT), LABEL_LAYOUTS["50x25"])


def test_an_unknown_layout_names_the_ones_there_are():
    with pytest.raises(LabelError, match="62x29"):
        label_layout("A4")
