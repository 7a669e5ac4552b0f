"""The report's first page: the yield table, the failed-attempts chart and the key-generation histogram, drawn
from a :class:`~station.audit.YieldSummary`.  Moved out of :mod:`station.report`, which re-exports every name.
"""

from __future__ import annotations

import math

from station.audit import YieldSummary
from station.display import format_duration as _seconds
from station.display import format_percent as _percent
from station.report_pdf import (
    BAR,
    BLACK,
    CONTENT_WIDTH,
    FAIL,
    GREY,
    LIGHT,
    MARGIN,
    PAGE_WIDTH,
    PdfPage,
    fit_text,
    text_width,
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
