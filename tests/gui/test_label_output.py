"""The label as it leaves the station — on screen, as a PDF, through the printer path — carries a
Code128 barcode that a real reader (zbar) decodes back to the board's serial."""

from __future__ import annotations

import pytest
from PySide6.QtPrintSupport import QPrinter

from station.label import LABEL_LAYOUTS, build_label, lay_out
from tests.helpers.technician import pdf_page_png, read_barcodes
from ui.label import LabelPreview, configure_printer, label_png, print_label, save_label_pdf

pytestmark = pytest.mark.gui

FINGERPRINT = "3f" * 32


@pytest.mark.parametrize("layout", sorted(LABEL_LAYOUTS))
@pytest.mark.parametrize("dpi", [203, 300])
def test_the_rendered_label_scans_back_to_the_serial(tmp_path, layout, dpi):
    sheet = lay_out(build_label("202600000000001", FINGERPRINT), LABEL_LAYOUTS[layout])
    png = tmp_path / "label.png"
    png.write_bytes(label_png(sheet, dpi=dpi))
    assert read_barcodes(png) == ["202600000000001"]


def test_an_alphanumeric_serial_scans_back_too(tmp_path):
    sheet = lay_out(build_label("WLM-2026/A0042", FINGERPRINT), LABEL_LAYOUTS["62x29"])
    png = tmp_path / "label.png"
    png.write_bytes(label_png(sheet))
    assert read_barcodes(png) == ["WLM-2026/A0042"]


def test_the_saved_pdf_is_one_label_sized_page_that_scans_back(tmp_path):
    sheet = lay_out(build_label("202600000000001", FINGERPRINT), LABEL_LAYOUTS["62x29"])
    pdf = tmp_path / "label.pdf"
    save_label_pdf(sheet, pdf)
    assert pdf.read_bytes().startswith(b"%PDF")
    page = pdf_page_png(pdf, tmp_path / "page", dpi=300)
    assert read_barcodes(page) == ["202600000000001"]
    from PySide6.QtGui import QImage

    image = QImage(str(page))
    assert (
        abs(image.width() - round(62 / 25.4 * 300)) <= 2 and abs(image.height() - round(29 / 25.4 * 300)) <= 2
    )


def test_the_printer_path_prints_a_label_that_scans_back(qapp, tmp_path):
    sheet = lay_out(build_label("202600000000001", FINGERPRINT), LABEL_LAYOUTS["50x25"])
    printer = QPrinter(QPrinter.PrinterMode.HighResolution)
    configure_printer(printer, sheet)
    printer.setOutputFormat(QPrinter.OutputFormat.PdfFormat)  # no CUPS printer here: print to a file
    printer.setOutputFileName(str(tmp_path / "printed.pdf"))
    assert print_label(printer, sheet)
    assert read_barcodes(pdf_page_png(tmp_path / "printed.pdf", tmp_path / "printed", dpi=300)) == [
        "202600000000001"
    ]


def test_the_preview_shows_the_label_or_says_when_it_will(qtbot):
    preview = LabelPreview()
    qtbot.addWidget(preview)
    assert "appears here" in preview.text()
    preview.show_sheet(lay_out(build_label("202600000000001", FINGERPRINT), LABEL_LAYOUTS["62x29"]))
    assert not preview.pixmap().isNull()
    assert "3F:3F:3F:3F:3F:3F:3F:3F" in preview.toolTip()
