"""How states look: every state has a word and an icon shape, so nothing is told by colour alone."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QColor, QFont, QFontDatabase, QPalette
from PySide6.QtWidgets import QWidget


@dataclass(frozen=True)
class StateLook:
    word: str
    shape: str  # drawn by ui.icons: circle, play, check, cross, retry, skip, stop, question
    color: str


# Colours chosen for contrast with white text or a white background (WCAG AA for large text).
GREEN = "#1b7f3b"
RED = "#b3261e"
BLUE = "#1f5fae"
AMBER = "#9a5b00"
GREY = "#5f6368"
LIGHT_GREY = "#9aa0a6"

STEP_STATES: dict[str, StateLook] = {
    "waiting": StateLook("waiting", "circle", LIGHT_GREY),
    "running": StateLook("running", "play", BLUE),
    "passed": StateLook("passed", "check", GREEN),
    "failed": StateLook("FAILED", "cross", RED),
    "retrying": StateLook("retrying", "retry", AMBER),
    "skipped": StateLook("skipped", "skip", GREY),
    "not_run": StateLook("not run", "stop", GREY),
    # Over before this window re-attached the unit (it shows what it saw from then on).
    "earlier": StateLook("done earlier", "check", GREY),
}

FIXTURE_STATES: dict[str, StateLook] = {
    "checking": StateLook("checking…", "circle", LIGHT_GREY),
    "answers": StateLook("answers", "check", GREEN),
    "silent": StateLook("no answer", "cross", RED),
}

RESULT_STATES: dict[str, StateLook] = {
    "idle": StateLook("READY", "circle", GREY),
    "running": StateLook("RUNNING", "play", BLUE),
    "passed": StateLook("PASS", "check", GREEN),
    "failed": StateLook("FAIL", "cross", RED),
    "refused": StateLook("NOT STARTED", "stop", AMBER),
    "stopping": StateLook("STOPPING", "stop", AMBER),
}

# A fixture slot of the batch grid (station.batch.SLOT_STATES).
SLOT_STATES: dict[str, StateLook] = {
    "empty": StateLook("no board", "circle", LIGHT_GREY),
    "ready": StateLook("READY", "circle", BLUE),
    "running": StateLook("RUNNING", "play", BLUE),
    "stopping": StateLook("STOPPING", "stop", AMBER),
    "passed": StateLook("PASS", "check", GREEN),
    "failed": StateLook("FAIL", "cross", RED),
    "refused": StateLook("NOT STARTED", "stop", AMBER),
}

NORMAL_POINT_SIZE = 10.0
LARGE_FONT_FACTOR = 1.4


def base_font(large: bool) -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.GeneralFont)
    font.setPointSizeF(NORMAL_POINT_SIZE * (LARGE_FONT_FACTOR if large else 1.0))
    return font


def monospace_font(point_size: float) -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setPointSizeF(point_size)
    return font


def color(name: str) -> QColor:
    return QColor(name)


def emphasise(
    widget: QWidget, colour: str | None = None, *, bold: bool = True, point_size: float | None = None
) -> None:
    """Colour and weight through the palette and a partial font, never a style sheet: a style sheet
    would freeze the widget's font and the large-font setting would no longer reach it."""
    font = QFont()  # only what is set here overrides; the size still follows the window's font
    font.setBold(bold)
    if point_size is not None:
        font.setPointSizeF(point_size)
    widget.setFont(font)
    if colour is not None:
        palette = widget.palette()
        palette.setColor(QPalette.ColorRole.WindowText, QColor(colour))
        palette.setColor(QPalette.ColorRole.Text, QColor(colour))
        widget.setPalette(palette)
