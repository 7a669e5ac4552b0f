"""The fleet report (``station fleet report --from --to`` and ``station audit export --fleet --format pdf``): yield
by line and station, conflicts, each station's chain head, and the units — drawn with the station's own PDF
writer (station.report), no Qt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station import __version__
from station.fleet.queries import (
    FleetFilter,
    conflicts,
    count_units,
    units_page,
    verify_chains,
    yield_by_station,
)
from station.report import (
    BLACK,
    CONTENT_WIDTH,
    FAIL,
    GREY,
    LIGHT,
    MARGIN,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    PASS,
    PdfDocument,
    fit_text,
    text_width,
)
from station.states import UnitState

if TYPE_CHECKING:
    import psycopg

UNIT_CAP = 2000
# The result column's colours.
_STATE_COLORS: dict[str, tuple[float, float, float]] = {
    UnitState.PASSED: PASS,
    UnitState.FAILED: FAIL,
    UnitState.ABORTED: FAIL,
}
_ROW = 13.0
_SIZE = 8.0
_FOOTER_Y = PAGE_HEIGHT - 24
_UNIT_COLUMNS = (
    ("Station", 70.0),
    ("Line", 50.0),
    ("Serial", 100.0),
    ("Result", 50.0),
    ("Failed step", 64.0),
    ("Operator", 66.0),
    ("Started (local time)", CONTENT_WIDTH - 400.0),
)


# long: draws one page layout top to bottom; pieces would share a dozen layout variables
def render_fleet_report(
    conn: psycopg.Connection[Any], filters: FleetFilter, *, now: datetime | None = None
) -> tuple[bytes, int, int]:
    """(pdf bytes, pages, units listed)."""
    now = (now or datetime.now().astimezone()).astimezone()
    groups = yield_by_station(conn, filters)
    found = conflicts(conn)
    chains = verify_chains(conn)
    matching = count_units(conn, filters)
    units = list(reversed(units_page(conn, filters, limit=UNIT_CAP)))
    title = "Fleet provisioning report"
    document = PdfDocument(title=title, created=now)
    page = document.add_page()
    y = MARGIN + 16
    page.text(MARGIN, y, title, size=17, bold=True)
    period = (
        (f"{filters.since:%Y-%m-%d %H:%M}" if filters.since else "the beginning")
        + " to "
        + (f"{filters.until:%Y-%m-%d %H:%M}" if filters.until else "now")
    )
    for line in (
        f"Period: {period} (local time)",
        f"Stations: {len(groups)} with units in the period",
        f"Generated {now:%Y-%m-%d %H:%M} by station {__version__}",
    ):
        y += 13
        page.text(MARGIN, y, line, size=9.5, color=GREY if line.startswith("Generated") else BLACK)
    y += 24
    page.text(MARGIN, y, "Yield by line and station", size=12, bold=True)
    y += 16
    columns = (
        ("Line", 90.0),
        ("Station", 120.0),
        ("Units", 60.0),
        ("Passed", 60.0),
        ("Failed", 60.0),
        ("Aborted", 60.0),
        ("Pass rate", CONTENT_WIDTH - 450.0),
    )
    y = _table_row(page, y, [c for c, _ in columns], columns, bold=True, shade=True)
    totals = [0, 0, 0, 0]
    for group in groups:
        rate = "—" if group.pass_rate is None else f"{100 * group.pass_rate:.1f} %"
        y = _table_row(
            page,
            y,
            [
                group.line or "—",
                group.station,
                str(group.units),
                str(group.passed),
                str(group.failed),
                str(group.aborted),
                rate,
            ],
            columns,
        )
        for index, value in enumerate((group.units, group.passed, group.failed, group.aborted)):
            totals[index] += value
    finished = totals[0] - sum(g.running for g in groups)
    rate = "—" if not finished else f"{100 * totals[1] / finished:.1f} %"
    y = _table_row(page, y, ["all", "", *(str(v) for v in totals), rate], columns, bold=True)
    y += 18
    page.text(MARGIN, y, "Chains (tamper evidence)", size=12, bold=True)
    for chain in chains:
        y += 12
        verdict = "OK" if chain.ok else f"BROKEN: {chain.problem}"
        page.text(
            MARGIN,
            y,
            fit_text(
                f"{chain.station} (line {chain.line}): {chain.events} events, head {chain.head_seq} "
                f"{(chain.head_hash or '')[:16]} — {verdict}",
                CONTENT_WIDTH,
                8.5,
            ),
            size=8.5,
            color=PASS if chain.ok else FAIL,
        )
    y += 20
    page.text(MARGIN, y, f"Conflicts and flags ({len(found)})", size=12, bold=True)
    for conflict in found[:20]:
        # The whole sentence matters (it names stations, lines and times): wrapped, up to three lines.
        for line in _wrap(f"[{conflict.kind}] {conflict.detail}", CONTENT_WIDTH, 8.5)[:3]:
            y += 11
            page.text(MARGIN, y, fit_text(line, CONTENT_WIDTH, 8.5), size=8.5, color=FAIL)
        y += 2
    if not found:
        y += 12
        page.text(MARGIN, y, "None.", size=8.5, color=GREY)
    per_page = int((_FOOTER_Y - 22 - (MARGIN + 52)) // _ROW)
    chunks = [units[i : i + per_page] for i in range(0, len(units), per_page)] or [[]]
    for number, chunk in enumerate(chunks):
        page = document.add_page()
        page.text(MARGIN, MARGIN + 14, "Units" if number == 0 else "Units (continued)", size=12, bold=True)
        if number == 0:
            note = (
                f"All {matching} units, oldest first."
                if matching <= len(units)
                else f"The first {len(units)} of {matching} units; the rest are in station audit export --fleet --format csv."
            )
            page.text(MARGIN, MARGIN + 28, note, size=8.5, color=GREY)
        row_y = _table_row(
            page, MARGIN + 40, [c for c, _ in _UNIT_COLUMNS], _UNIT_COLUMNS, bold=True, shade=True
        )
        for unit in chunk:
            started = unit["started_at"]
            row_y = _table_row(
                page,
                row_y,
                [
                    unit["station"],
                    unit["line"] or "",
                    unit["serial"],
                    unit["state"],
                    unit["failed_step"] or "",
                    unit["operator"] or "",
                    f"{started.astimezone():%Y-%m-%d %H:%M:%S}" if started else "",
                ],
                _UNIT_COLUMNS,
            )
    total = len(document.pages)
    for index, each in enumerate(document.pages, start=1):
        each.line(MARGIN, _FOOTER_Y - 10, PAGE_WIDTH - MARGIN, _FOOTER_Y - 10)
        each.text(MARGIN, _FOOTER_Y, "Fleet report", size=7.5, color=GREY)
        each.text(
            PAGE_WIDTH - MARGIN, _FOOTER_Y, f"page {index} of {total}", size=7.5, color=GREY, align="right"
        )
    return document.to_bytes(), total, len(units)


@dataclass(frozen=True)
class FleetExport:
    path: Path
    units: int
    pages: int | None  # a PDF's pages; None for CSV and JSON Lines


def export_fleet_to_file(
    conn: psycopg.Connection[Any], path: Path, *, fmt: str, filters: FleetFilter
) -> FleetExport:
    """The fleet's units matching ``filters`` into ``path`` (written atomically): "csv", "jsonl" or "pdf" (the
    report). One function for ``station audit export --fleet`` and the window's whole-fleet scope."""
    from station.fleet.queries import export_csv, export_jsonl
    from station.outputs import write_export
    from station.report import write_text_atomically

    path = path.expanduser()
    if fmt == "pdf":
        pdf, pages, units = render_fleet_report(conn, filters)
        write_export(path, pdf)
        return FleetExport(path, units, pages)
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"unknown export format {fmt!r}")
    writer = export_csv if fmt == "csv" else export_jsonl
    count = write_text_atomically(path, lambda out: writer(conn, filters, out))
    return FleetExport(path, count, None)


def _wrap(text: str, width: float, size: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}".strip()
        if current and text_width(candidate, size) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    return [*lines, current] if current else lines


def _table_row(
    page: Any,
    y: float,
    cells: list[str],
    columns: tuple[tuple[str, float], ...],
    *,
    bold: bool = False,
    shade: bool = False,
) -> float:
    if shade:
        page.rect(MARGIN, y - 9.5, CONTENT_WIDTH, _ROW, fill=LIGHT)
    x = MARGIN
    for cell, (_, width) in zip(cells, columns, strict=True):
        color = _STATE_COLORS.get(cell, BLACK)
        page.text(x + 3, y, fit_text(cell, width - 6, _SIZE, bold=bold), size=_SIZE, bold=bold, color=color)
        x += width
    return y + _ROW
