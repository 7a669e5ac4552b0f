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

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TextIO

from station import __version__, files
from station.audit import AuditLog, Unit, UnitFilter, YieldSummary
from station.display import format_duration as _seconds
from station.display import format_percent as _percent
from station.errors import StationError
from station.orders import OrderStatus
from station.outputs import EXPORT_MODE, write_export

# Moved to station.report_charts, re-exported here so every existing import keeps working:
from station.report_charts import _count as _count
from station.report_charts import _draw_failures_chart as _draw_failures_chart
from station.report_charts import _draw_keygen_histogram as _draw_keygen_histogram
from station.report_charts import _draw_yield_table as _draw_yield_table

# Moved to station.report_pdf, re-exported here so every existing import keeps working:
from station.report_pdf import BAR as BAR
from station.report_pdf import BLACK as BLACK
from station.report_pdf import BOLD_FONT as BOLD_FONT
from station.report_pdf import CJK_FONTS as CJK_FONTS
from station.report_pdf import CONTENT_WIDTH as CONTENT_WIDTH
from station.report_pdf import FAIL as FAIL
from station.report_pdf import FONT_DIRS as FONT_DIRS
from station.report_pdf import GREY as GREY
from station.report_pdf import LIGHT as LIGHT
from station.report_pdf import MARGIN as MARGIN
from station.report_pdf import PAGE_HEIGHT as PAGE_HEIGHT
from station.report_pdf import PAGE_WIDTH as PAGE_WIDTH
from station.report_pdf import PASS as PASS
from station.report_pdf import REGULAR_FONT as REGULAR_FONT
from station.report_pdf import RULE as RULE
from station.report_pdf import Color as Color
from station.report_pdf import PdfDocument as PdfDocument
from station.report_pdf import PdfPage as PdfPage
from station.report_pdf import ReportFontsMissing as ReportFontsMissing
from station.report_pdf import clean_text as clean_text
from station.report_pdf import fit_text as fit_text
from station.report_pdf import text_width as text_width

EXPORT_FORMATS = ("csv", "jsonl", "pdf")

# The unit table stops here: a report is read by people, and a spreadsheet (CSV export) is the tool for more.
UNIT_TABLE_CAP = 2000


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
        _draw_unit_heading_row(page, MARGIN + 40)
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


def _draw_unit_heading_row(page: PdfPage, header_y: float) -> None:
    """The unit table's column headings (on every page of the table)."""
    page.rect(MARGIN, header_y - 9.5, CONTENT_WIDTH, _ROW_HEIGHT, fill=LIGHT)
    x = MARGIN
    for column, (heading_text, width) in enumerate(_UNIT_COLUMNS):
        if column == len(_UNIT_COLUMNS) - 1:  # the durations are right-aligned, so is their heading
            page.text(x + width - 3, header_y, heading_text, size=_TABLE_SIZE, bold=True, align="right")
        else:
            page.text(x + 3, header_y, heading_text, size=_TABLE_SIZE, bold=True)
        x += width
    page.line(MARGIN, header_y + 3.5, PAGE_WIDTH - MARGIN, header_y + 3.5, color=GREY)


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
        return _export_pdf(audit, path, filters, station=station)

    def write(out: TextIO) -> int:
        if fmt == "csv":
            return audit.export_csv(out, filters)
        return audit.export_jsonl(out, filters, include_steps=include_steps)

    count = write_text_atomically(path, write)
    return ExportResult(path.expanduser(), count)


def _export_pdf(audit: AuditLog, path: Path, filters: UnitFilter, *, station: str) -> ExportResult:
    """The report of the filters' period, batch and order (``filters.result`` narrows its unit table)."""
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
