"""The report's PDF drawing kit: A4 page geometry, colours, fonts (DejaVu Sans with a CJK fallback), text
measuring and fitting, and :class:`PdfPage`/:class:`PdfDocument` (pages recorded as drawing operations, then
rendered with fpdf2).  Moved out of :mod:`station.report`, which re-exports every name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fpdf import FPDF

from station import __version__
from station.errors import StationError

# A4 portrait, in PDF points (1/72 in).
PAGE_WIDTH = 595.28
PAGE_HEIGHT = 841.89
MARGIN = 42.0
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN

Color = tuple[float, float, float]
BLACK: Color = (0.0, 0.0, 0.0)
GREY: Color = (0.42, 0.42, 0.42)
LIGHT: Color = (0.93, 0.94, 0.95)
RULE: Color = (0.75, 0.75, 0.75)
FAIL: Color = (0.75, 0.16, 0.12)
PASS: Color = (0.12, 0.50, 0.22)
BAR: Color = (0.20, 0.45, 0.70)

# Fonts the report embeds (Debian: fonts-dejavu-core, fonts-noto-cjk or fonts-droid-fallback).
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/local/share/fonts"))
REGULAR_FONT = "DejaVuSans.ttf"
BOLD_FONT = "DejaVuSans-Bold.ttf"
# (path, index in a font collection): the first one found covers Chinese, Japanese and Korean names.
CJK_FONTS = (
    (Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"), 0),
    (Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"), 0),
)


class ReportFontsMissing(StationError):
    """The fonts the report embeds are not installed."""


def _font_path(name: str) -> Path:
    for folder in FONT_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise ReportFontsMissing(
        f"the report font {name} is not installed — install the Debian package fonts-dejavu-core "
        "(make setup does), then export again"
    )


def _new_pdf() -> FPDF:
    """An A4 document in points with the report's fonts: "Sans" (regular, bold) and the CJK fallback."""
    pdf = FPDF(orientation="portrait", unit="pt", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.c_margin = 0
    pdf.add_font("Sans", "", str(_font_path(REGULAR_FONT)))
    pdf.add_font("Sans", "B", str(_font_path(BOLD_FONT)))
    fallback = []
    for path, index in CJK_FONTS:
        if path.is_file():
            pdf.add_font("CJK", "", str(path), collection_font_number=index)
            fallback.append("CJK")
            break
    if fallback:
        pdf.set_fallback_fonts(fallback, exact_match=False)
    return pdf


_measure: FPDF | None = None

_measure_lock = threading.Lock()


def clean_text(text: str) -> str:
    """``text`` as the report prints it: control characters become spaces."""
    return "".join(" " if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text)


def text_width(text: str, size: float, *, bold: bool = False) -> float:
    """Width in points of ``text`` set in the report's font (bold) at ``size``."""
    global _measure
    with _measure_lock:
        if _measure is None:
            _measure = _new_pdf()
        _measure.set_font("Sans", "B" if bold else "", size)
        return float(_measure.get_string_width(clean_text(text)))


def fit_text(text: str, width: float, size: float, *, bold: bool = False) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` points."""
    if text_width(text, size, bold=bold) <= width:
        return text
    while text and text_width(text + "…", size, bold=bold) > width:
        text = text[:-1]
    return text + "…"


_Op = Callable[[FPDF], None]


class PdfPage:
    """One page's drawing operations, in a top-down coordinate system: y grows down from the page's top."""

    def __init__(self) -> None:
        self._ops: list[_Op] = []

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        size: float = 9.0,
        bold: bool = False,
        color: Color = BLACK,
        align: str = "left",
    ) -> None:
        """Text with its baseline at ``y``; ``align`` right or center puts its end or middle at ``x``."""
        text = clean_text(text)
        if not text.strip():
            return
        if align != "left":
            width = text_width(text, size, bold=bold)
            x -= width if align == "right" else width / 2

        def draw(pdf: FPDF) -> None:
            pdf.set_font("Sans", "B" if bold else "", size)
            pdf.set_text_color(*_rgb(color))
            # cell(), not text(): only cells switch to the fallback font for glyphs DejaVu lacks. A cell of
            # height h puts the baseline 0.5 h + 0.3 size below its top.
            pdf.set_xy(x, y - 0.8 * size)
            pdf.cell(h=size, text=text)

        self._ops.append(draw)

    def rect(self, x: float, y: float, width: float, height: float, *, fill: Color) -> None:
        """A filled rectangle whose top-left corner is at (x, y)."""

        def draw(pdf: FPDF) -> None:
            pdf.set_fill_color(*_rgb(fill))
            pdf.rect(x, y, width, height, style="F")

        self._ops.append(draw)

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        *,
        color: Color = RULE,
        width: float = 0.5,
        dashed: bool = False,
    ) -> None:
        def draw(pdf: FPDF) -> None:
            pdf.set_draw_color(*_rgb(color))
            pdf.set_line_width(width)
            pdf.set_dash_pattern(dash=3, gap=2) if dashed else pdf.set_dash_pattern()
            pdf.line(x1, y1, x2, y2)

        self._ops.append(draw)

    def draw(self, pdf: FPDF) -> None:
        for op in self._ops:
            op(pdf)


class PdfDocument:
    """Pages of text, lines and rectangles, written as one PDF by fpdf2 with the fonts embedded."""

    def __init__(self, *, title: str, created: datetime) -> None:
        self.title = title
        self.created = created
        self.pages: list[PdfPage] = []

    def add_page(self) -> PdfPage:
        page = PdfPage()
        self.pages.append(page)
        return page

    def to_bytes(self) -> bytes:
        pdf = _new_pdf()
        pdf.set_title(self.title)
        pdf.set_creator(f"Welma provisioning station {__version__}")
        pdf.set_producer(f"Welma provisioning station {__version__} (fpdf2)")
        pdf.set_creation_date(self.created)
        for page in self.pages:
            pdf.add_page()
            page.draw(pdf)
        return bytes(pdf.output())


def _rgb(color: Color) -> tuple[int, int, int]:
    r, g, b = (round(c * 255) for c in color)
    return r, g, b
