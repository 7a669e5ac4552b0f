"""Quality-lead outputs of the audit log: the PDF report of a batch or a period, and exports written to files.

The report is drawn with fpdf2 (a maintained, pure-Python PDF library) in DejaVu Sans, embedded and
subset, with a CJK font (Noto Sans CJK, else Droid Sans Fallback) as fallback for characters DejaVu lacks — so
every operator's name prints as typed ("王芳", "Łukasz Żółć") and copies back out of the PDF as text.
fpdf2 over reportlab: it is typed, has a single small dependency set (fontTools, Pillow, defusedxml), embeds
and subsets TrueType/OpenType (incl. CFF-based CJK collections) with per-glyph font fallback out of the box,
releases often, and needs no C extension; reportlab's open-source edition needs a hand-written font fallback
for mixed scripts.

A report holds what an export holds and less: serials, results, failed steps, operators, batches, times and
figures — never step output, PINs, passphrases or keys (see station.audit.EXPORT_FIELDS).

Every file is written atomically (temporary file, fsync, rename, fsync of the folder): it holds either the whole
new content or what it held before.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TextIO

from fpdf import FPDF

from station import __version__, files
from station.audit import AuditLog, Unit, UnitFilter, YieldSummary
from station.display import format_duration as _seconds
from station.display import format_percent as _percent
from station.errors import StationError
from station.orders import OrderStatus
from station.outputs import EXPORT_MODE, write_export

EXPORT_FORMATS = ("csv", "jsonl", "pdf")

# The unit table stops here: a report is read by people, and a spreadsheet (CSV export) is the tool for more.
UNIT_TABLE_CAP = 2000

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


# ---------------------------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class ReportScope:
    """What a report covers: units started in ``[since, until)`` of ``batch`` (None: any).

    ``result`` narrows only the unit table: the yield figures are always of every unit in scope, since a
    yield of only the failed units would say nothing.
    """

    since: datetime | None = None
    until: datetime | None = None
    batch: str | None = None
    result: str | None = None
    # Only units counted in this work order.
    order: str | None = None


@dataclass(frozen=True)
class Report:
    """A rendered report and what is in it."""

    pdf: bytes
    pages: int
    summary: YieldSummary
    units_in_table: int
    units_matching: int


# Unit table layout: (heading, width in points); widths add up to CONTENT_WIDTH.
_UNIT_COLUMNS = (
    ("Serial", 98.0),
    ("Result", 46.0),
    ("Failed step", 66.0),
    ("Operator", 82.0),
    ("Batch", 56.0),
    ("Started (local time)", 104.0),
    ("Duration", CONTENT_WIDTH - 452.0),
)
_ROW_HEIGHT = 13.0
# DejaVu Sans runs about 8 % wider than Helvetica: 7.5 pt keeps a full local time in its column.
_TABLE_SIZE = 7.5
_FOOTER_Y = PAGE_HEIGHT - 24


def render_report(
    audit: AuditLog,
    scope: ReportScope,
    *,
    station: str,
    now: datetime | None = None,
    unit_cap: int = UNIT_TABLE_CAP,
) -> Report:
    """The PDF report of ``scope``: header, yield figures, two charts, then the units (at most ``unit_cap``)."""
    now = (now or datetime.now().astimezone()).astimezone()
    summary = audit.yield_summary(since=scope.since, until=scope.until, batch=scope.batch, order=scope.order)
    table_filter = UnitFilter(
        batch=scope.batch, since=scope.since, until=scope.until, result=scope.result, order=scope.order
    )
    matching = audit.count_units(table_filter)
    units = audit.units_page(offset=0, limit=unit_cap, order_by="id", descending=False, filters=table_filter)

    title = f"Provisioning report — {_scope_name(scope)}"
    document = PdfDocument(title=title, created=now)
    page = document.add_page()
    y = MARGIN + 16
    page.text(MARGIN, y, title, size=17, bold=True)
    y += 18
    for line in (
        f"Station: {station}",
        f"Period: {_period_line(scope, summary)}",
        f"Batch: {scope.batch or 'all batches'}",
        f"Work order: {scope.order or 'all orders'}",
        f"Generated {now:%Y-%m-%d %H:%M} (times are local, UTC{_utc_offset(now)}) by station {__version__}",
    ):
        y += 13
        page.text(MARGIN, y, line, size=9.5, color=GREY if line.startswith("Generated") else BLACK)
    y += 12
    page.line(MARGIN, y, PAGE_WIDTH - MARGIN, y, color=BLACK, width=0.8)

    y = _draw_yield_table(page, y + 24, summary)
    y = _draw_failures_chart(page, y + 26, summary)
    _draw_keygen_histogram(page, y + 26, summary)

    _draw_order_table(document, order_groups(audit, scope))
    _draw_unit_table(document, units, matching=matching, scope=scope)
    total = len(document.pages)
    for number, each in enumerate(document.pages, start=1):
        each.line(MARGIN, _FOOTER_Y - 10, PAGE_WIDTH - MARGIN, _FOOTER_Y - 10)
        each.text(MARGIN, _FOOTER_Y, f"{station} · {_scope_name(scope)}", size=7.5, color=GREY)
        each.text(
            PAGE_WIDTH - MARGIN, _FOOTER_Y, f"page {number} of {total}", size=7.5, color=GREY, align="right"
        )
    return Report(
        pdf=document.to_bytes(),
        pages=total,
        summary=summary,
        units_in_table=len(units),
        units_matching=matching,
    )


def _section(page: PdfPage, y: float, heading: str) -> float:
    page.text(MARGIN, y, heading, size=12, bold=True)
    return y + 16


def _draw_yield_table(page: PdfPage, y: float, summary: YieldSummary) -> float:
    """Two columns of figures: counts on the left, rates and key-generation times on the right."""
    y = _section(page, y, "Yield")
    keygen = summary.keygen
    left = [
        ("Units started", _count(summary.units)),
        ("Finished", _count(summary.finished)),
        (
            "Passed",
            _count(summary.passed)
            + (f" (incl. {_count(summary.superseded)} re-provisioned later)" if summary.superseded else ""),
        ),
        ("Failed", _count(summary.failed)),
        ("Aborted", _count(summary.aborted)),
        ("Still running", _count(summary.running)),
    ]
    right = [
        ("Pass rate", _percent(summary.pass_rate)),
        ("First-pass yield", _percent(summary.first_pass_yield)),
        ("Key generations (passed)", _count(keygen.count)),
        ("Key generation median", _seconds(keygen.quantile(0.5))),
        ("Key generation p90 / p99", f"{_seconds(keygen.quantile(0.9))} / {_seconds(keygen.quantile(0.99))}"),
        ("Key generation max", _seconds(keygen.max_s)),
    ]
    half = CONTENT_WIDTH / 2
    for index, ((left_label, left_value), (right_label, right_value)) in enumerate(
        zip(left, right, strict=True)
    ):
        row_y = y + index * 15
        if index % 2 == 0:
            page.rect(MARGIN, row_y - 10.5, CONTENT_WIDTH, 15, fill=LIGHT)
        page.text(MARGIN + 6, row_y, left_label, size=9.5, color=GREY)
        page.text(MARGIN + half - 12, row_y, left_value, size=9.5, bold=True, align="right")
        page.text(MARGIN + half + 12, row_y, right_label, size=9.5, color=GREY)
        page.text(MARGIN + CONTENT_WIDTH - 6, row_y, right_value, size=9.5, bold=True, align="right")
    return y + len(left) * 15


def _draw_failures_chart(page: PdfPage, y: float, summary: YieldSummary) -> float:
    """Horizontal bars: failed attempts per step, most first."""
    y = _section(page, y, "Failed attempts by step")
    failures = list(summary.failures_by_step)
    if not failures:
        page.text(MARGIN, y + 4, "No attempt failed.", size=9.5, color=GREY)
        return y + 10
    # More steps than fit are folded into one bar; profiles have about a dozen steps, so this is rare.
    if len(failures) > 14:
        failures = failures[:13] + [("(other steps)", sum(count for _, count in failures[13:]))]
    total = sum(count for _, count in failures)
    label_width = 92.0
    bar_space = CONTENT_WIDTH - label_width - 90
    most = max(count for _, count in failures)
    for index, (step, count) in enumerate(failures):
        row_y = y + index * 15
        page.text(MARGIN, row_y + 8, fit_text(step, label_width - 6, 9), size=9)
        width = max(1.0, bar_space * count / most)
        page.rect(MARGIN + label_width, row_y, width, 10, fill=FAIL)
        page.text(
            MARGIN + label_width + width + 5,
            row_y + 8,
            f"{_count(count)} ({count / total:.0%})",
            size=8.5,
        )
    bottom = y + len(failures) * 15
    page.line(MARGIN + label_width, y - 3, MARGIN + label_width, bottom, color=GREY)
    return bottom


def _draw_keygen_histogram(page: PdfPage, y: float, summary: YieldSummary) -> float:
    """Vertical bars: how many passed key generations took how long; dashed lines at the median and p90."""
    y = _section(page, y, "Key generation time (passed runs)")
    keygen = summary.keygen
    if not keygen.count or not keygen.histogram:
        page.text(MARGIN, y + 4, "No key generation was recorded.", size=9.5, color=GREY)
        return y + 10
    axis_x = MARGIN + 40
    plot_width = CONTENT_WIDTH - 50
    plot_top = y + 6
    plot_height = 140.0
    base = plot_top + plot_height
    bins = keygen.histogram
    tick_step, ticks = _count_axis(max(b.count for b in bins))
    top = tick_step * ticks
    # Horizontal grid lines with the run counts.
    for tick in range(ticks + 1):
        value = tick_step * tick
        tick_y = base - plot_height * tick / ticks
        page.line(axis_x, tick_y, axis_x + plot_width, tick_y, color=LIGHT if tick else GREY)
        page.text(axis_x - 5, tick_y + 3, _count(round(value)), size=7.5, color=GREY, align="right")
    low, high = bins[0].low, bins[-1].high
    span = high - low

    def x_of(seconds: float) -> float:
        return axis_x + plot_width * (seconds - low) / span

    for each in bins:
        if each.count:
            height = plot_height * each.count / top
            left = x_of(each.low)
            page.rect(left + 0.6, base - height, x_of(each.high) - left - 1.2, height, fill=BAR)
    # Bin edges as x labels, thinned so that they never overlap.
    step = max(1, math.ceil(len(bins) / 10))
    for index in range(0, len(bins) + 1, step):
        edge = low + span * index / len(bins)
        page.line(x_of(edge), base, x_of(edge), base + 3, color=GREY)
        page.text(x_of(edge), base + 12, _edge_label(edge), size=7.5, color=GREY, align="center")
    page.text(axis_x + plot_width, base + 24, "seconds", size=7.5, color=GREY, align="right")
    page.text(axis_x - 5, plot_top - 6, "runs", size=7.5, color=GREY, align="right")
    for p, name in ((0.5, "median"), (0.9, "p90")):
        marker = keygen.quantile(p)
        if marker is not None:
            page.line(x_of(marker), plot_top, x_of(marker), base, color=BLACK, width=0.8, dashed=True)
            label = f"{name} {_seconds(marker)}"
            # Right of its line, or left of it where it would run past the margin.
            right = x_of(marker) + 3 + text_width(label, 7.5) <= PAGE_WIDTH - MARGIN
            page.text(
                x_of(marker) + (3 if right else -3),
                plot_top + 8 + (10 if p == 0.9 else 0),
                label,
                size=7.5,
                align="left" if right else "right",
            )
    return base + 24


@dataclass(frozen=True)
class OrderGroup:
    """The units of one work order within a report's scope, by how they went (order None: units in no order)."""

    order: OrderStatus | None
    units: int
    passed: int
    failed: int
    aborted: int

    @property
    def yield_fraction(self) -> float | None:
        finished = self.passed + self.failed + self.aborted
        return self.passed / finished if finished else None


# At most this many orders are grouped in a report (the newest imports); the CSV export has every unit's order.
ORDER_GROUP_CAP = 40


def order_groups(audit: AuditLog, scope: ReportScope) -> list[OrderGroup]:
    """The report's units grouped by work order (orders with no unit in scope are left out), newest order first."""
    groups: list[OrderGroup] = []

    def group(status: OrderStatus | None) -> OrderGroup:
        order_id = status.order_id if status else None

        def count(result: str | None) -> int:
            return audit.count_units(
                UnitFilter(
                    batch=scope.batch, since=scope.since, until=scope.until, result=result, order=order_id
                )
            )

        return OrderGroup(
            status, count(None), count("passed") + count("superseded"), count("failed"), count("aborted")
        )

    for status in audit.orders.orders()[:ORDER_GROUP_CAP]:
        if scope.order is None or status.order_id == scope.order:
            found = group(status)
            if found.units:
                groups.append(found)
    if groups and scope.order is None:
        # A unit is counted in one order at most: what the orders do not hold are the units without one.
        everything = group(None)
        rest = OrderGroup(
            None,
            *(
                getattr(everything, name) - sum(getattr(g, name) for g in groups)
                for name in ("units", "passed", "failed", "aborted")
            ),
        )
        if rest.units:
            groups.append(rest)
    return groups


_ORDER_COLUMNS = (
    ("Work order", 120.0),
    ("Profile", 100.0),
    ("State", 60.0),
    ("Quantity", 50.0),
    ("Units", 40.0),
    ("Passed", 40.0),
    ("Failed", 40.0),
    ("Yield", CONTENT_WIDTH - 450.0),
)


def _draw_order_table(document: PdfDocument, groups: list[OrderGroup]) -> None:
    """One page: the units in scope grouped by work order (none when no unit belongs to an order)."""
    if not groups:
        return
    page = document.add_page()
    page.text(MARGIN, MARGIN + 14, "By work order", size=12, bold=True)
    page.text(
        MARGIN,
        MARGIN + 28,
        "Units in this report's scope, by the work order they were counted in; the "
        "quantity and state are the order's.",
        size=8.5,
        color=GREY,
    )
    header_y = MARGIN + 40
    page.rect(MARGIN, header_y - 9.5, CONTENT_WIDTH, _ROW_HEIGHT, fill=LIGHT)
    x = MARGIN
    for heading_text, width in _ORDER_COLUMNS:
        page.text(x + 3, header_y, heading_text, size=_TABLE_SIZE, bold=True)
        x += width
    page.line(MARGIN, header_y + 3.5, PAGE_WIDTH - MARGIN, header_y + 3.5, color=GREY)
    for index, group in enumerate(groups):
        row_y = MARGIN + 52 + index * _ROW_HEIGHT
        order = group.order
        cells = (
            order.order_id if order else "(no work order)",
            order.order.profile if order else "",
            order.state_text if order else "",
            _count(order.quantity) if order else "",
            _count(group.units),
            _count(group.passed),
            _count(group.failed),
            _percent(group.yield_fraction),
        )
        x = MARGIN
        for cell, (_heading, width) in zip(cells, _ORDER_COLUMNS, strict=True):
            page.text(x + 3, row_y, fit_text(cell, width - 6, _TABLE_SIZE), size=_TABLE_SIZE)
            x += width


def _draw_unit_table(document: PdfDocument, rows: list[Unit], *, matching: int, scope: ReportScope) -> None:
    """The units, oldest first, on as many pages as they need, with the heading row on each page."""
    first_row_y = MARGIN + 52
    per_page = int((_FOOTER_Y - 22 - first_row_y) // _ROW_HEIGHT)
    chunks = [rows[i : i + per_page] for i in range(0, len(rows), per_page)] or [[]]
    which = f"{scope.result} units" if scope.result else "units"
    for number, chunk in enumerate(chunks):
        page = document.add_page()
        heading = "Units" if number == 0 else "Units (continued)"
        page.text(MARGIN, MARGIN + 14, heading, size=12, bold=True)
        if number == 0:
            if matching > len(rows):
                note = (
                    f"The first {_count(len(rows))} of {_count(matching)} {which}, oldest first. The rest are in "
                    f"the CSV export (station audit export --format csv)."
                )
            else:
                note = (
                    f"All {_count(matching)} {which}, oldest first." if matching else f"No {which} in scope."
                )
            page.text(MARGIN, MARGIN + 28, note, size=8.5, color=GREY)
        header_y = MARGIN + 40
        page.rect(MARGIN, header_y - 9.5, CONTENT_WIDTH, _ROW_HEIGHT, fill=LIGHT)
        x = MARGIN
        for column, (heading_text, width) in enumerate(_UNIT_COLUMNS):
            if column == len(_UNIT_COLUMNS) - 1:  # the durations are right-aligned, so is their heading
                page.text(x + width - 3, header_y, heading_text, size=_TABLE_SIZE, bold=True, align="right")
            else:
                page.text(x + 3, header_y, heading_text, size=_TABLE_SIZE, bold=True)
            x += width
        page.line(MARGIN, header_y + 3.5, PAGE_WIDTH - MARGIN, header_y + 3.5, color=GREY)
        for index, unit in enumerate(chunk):
            row_y = first_row_y + index * _ROW_HEIGHT
            if index % 2 == 1:
                page.rect(MARGIN, row_y - 9.5, CONTENT_WIDTH, _ROW_HEIGHT, fill=LIGHT)
            cells = (
                unit.serial,
                unit.state,
                unit.failed_step or "",
                unit.operator,
                unit.batch or "",
                f"{unit.started_at.astimezone():%Y-%m-%d %H:%M:%S}",
                _seconds(unit.duration_s),
            )
            colors = {"passed": PASS, "failed": FAIL, "aborted": FAIL}
            x = MARGIN
            for column, (cell, (_, width)) in enumerate(zip(cells, _UNIT_COLUMNS, strict=True)):
                color = colors.get(unit.state, BLACK) if column == 1 else BLACK
                if column == len(cells) - 1:
                    page.text(x + width - 3, row_y, cell, size=_TABLE_SIZE, color=color, align="right")
                else:
                    page.text(
                        x + 3, row_y, fit_text(cell, width - 6, _TABLE_SIZE), size=_TABLE_SIZE, color=color
                    )
                x += width
    if matching > len(rows):
        last_y = first_row_y + len(chunks[-1]) * _ROW_HEIGHT + 6
        page.text(
            MARGIN,
            last_y,
            f"… and {_count(matching - len(rows))} more {which}, not listed here.",
            size=8.5,
            color=GREY,
        )


# ------------------------------------------------------------------------------------------------ text


def _scope_name(scope: ReportScope) -> str:
    if scope.order:
        return f"work order {scope.order}"
    if scope.batch:
        return f"batch {scope.batch}"
    if scope.since is None and scope.until is None:
        return "all units"
    return _period_text(scope.since, scope.until)


def _period_text(since: datetime | None, until: datetime | None) -> str:
    """The period in local time; whole days read as "2026-03-01 to 2026-03-31" (the end day included)."""

    def midnight(moment: datetime) -> bool:
        return moment.astimezone().time() == time()

    if since is None and until is None:
        return "all time"
    if (since is None or midnight(since)) and (until is None or midnight(until)):
        start = f"{since.astimezone():%Y-%m-%d}" if since else "the beginning"
        end = f"{(until.astimezone() - timedelta(days=1)):%Y-%m-%d}" if until else "now"
        return f"{start} to {end}"
    start = f"{since.astimezone():%Y-%m-%d %H:%M}" if since else "the beginning"
    end = f"before {until.astimezone():%Y-%m-%d %H:%M}" if until else "now"
    return f"{start} to {end}"


def _period_line(scope: ReportScope, summary: YieldSummary) -> str:
    """The period asked for, and when the units in it actually started."""
    if summary.first_started is None or summary.last_started is None:
        span = "no unit started"
    else:
        first, last = summary.first_started.astimezone(), summary.last_started.astimezone()
        end = f"{last:%H:%M}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M}"
        span = f"{first:%Y-%m-%d %H:%M} to {end}"
    if scope.since is None and scope.until is None:
        return f"{span} (first to last unit started)"
    return f"{_period_text(scope.since, scope.until)} (units started {span})"


def _utc_offset(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _count(value: int) -> str:
    # No-break spaces group the thousands (1 000 000), the way both the plant and the spreadsheets read them.
    return f"{value:,}".replace(",", "\u00a0")


def _edge_label(seconds: float) -> str:
    return f"{seconds:.0f}" if abs(seconds - round(seconds)) < 1e-6 else f"{seconds:g}"


def _count_axis(value: int) -> tuple[int, int]:
    """A round grid step (1, 2, 5 × 10^k) and how many steps (at most 5) reach ``value``."""
    for exponent in range(0, 12):
        for multiple in (1, 2, 5):
            step = multiple * 10**exponent
            if step * 5 >= value:
                return step, max(1, math.ceil(value / step))
    raise ValueError(f"{value} runs do not fit an axis")


# ------------------------------------------------------------------------------------------- files


def write_text_atomically(path: Path, write: Callable[[TextIO], int]) -> int:
    """Write an export through :func:`station.files.write_text_atomically`; return what ``write`` returns."""
    # An export holds no secrets (see station.audit.EXPORT_FIELDS) but names operators: owner and group only.
    return files.write_text_atomically(_checked_destination(path), write, mode=EXPORT_MODE)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: how many units (for a PDF: in its table) and, for a PDF, its pages."""

    path: Path
    units: int
    pages: int | None = None


def export_to_file(
    audit: AuditLog,
    path: Path,
    *,
    fmt: str,
    filters: UnitFilter | None = None,
    station: str = "",
    include_steps: bool = False,
) -> ExportResult:
    """Export the units matching ``filters`` to ``path`` as csv, jsonl or pdf, atomically.

    For a pdf, the report's scope is the filters' period and batch, and ``filters.result`` narrows its unit table;
    the other filters (serial prefix, operator, …) do not apply to a report.
    """
    filters = filters or UnitFilter()
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    if include_steps and fmt != "jsonl":
        raise StationError(
            "Step summaries are for the JSON Lines export only; CSV and PDF have one row per unit."
        )
    if fmt == "pdf":
        scope = ReportScope(
            since=filters.since,
            until=filters.until,
            batch=filters.batch,
            result=filters.result,
            order=filters.order,
        )
        report = render_report(audit, scope, station=station)
        destination = _checked_destination(path)
        try:
            write_export(destination, report.pdf)
        except OSError as exc:
            raise StationError(
                f"Could not write {destination} ({exc.strerror}) — check that the folder is writable, then try again."
            ) from None
        return ExportResult(destination, report.units_in_table, report.pages)
    narrowed = filters

    def write(out: TextIO) -> int:
        if fmt == "csv":
            return audit.export_csv(
                out,
                serial_prefix=narrowed.serial_prefix,
                result=narrowed.result,
                operator=narrowed.operator,
                batch=narrowed.batch,
                fixture=narrowed.fixture,
                failed_step=narrowed.failed_step,
                station=narrowed.station,
                since=narrowed.since,
                until=narrowed.until,
                order=narrowed.order,
            )
        return audit.export_jsonl(
            out,
            serial_prefix=narrowed.serial_prefix,
            result=narrowed.result,
            operator=narrowed.operator,
            batch=narrowed.batch,
            fixture=narrowed.fixture,
            failed_step=narrowed.failed_step,
            station=narrowed.station,
            since=narrowed.since,
            until=narrowed.until,
            include_steps=include_steps,
            order=narrowed.order,
        )

    count = write_text_atomically(path, write)
    return ExportResult(path.expanduser(), count)


def _checked_destination(path: Path) -> Path:
    path = path.expanduser()
    directory = path.parent
    if not directory.is_dir():
        raise StationError(
            f"Cannot write {path}: the folder {directory} does not exist. Create it or pick another."
        )
    if path.is_dir():
        raise StationError(
            f"Cannot write {path}: it is a folder. Give a file name, e.g. {path / 'units.csv'}."
        )
    return path
