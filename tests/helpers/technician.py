"""What a technician does at the window, as pytest-qt key presses (a keyboard-wedge scanner types a
label as a fast burst of keys followed by Enter), and a real barcode reader to check labels with."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt

from ui.bridge import UnitOutcome
from ui.main_window import MainWindow

ZBARIMG_TIMEOUT_S = 30


def sign_in(qtbot: Any, window: MainWindow, badge: str) -> None:
    qtbot.keyClicks(window.operator_field, badge)
    qtbot.keyClick(window.operator_field, Qt.Key.Key_Return)


def scan(qtbot: Any, window: MainWindow, serial: str) -> None:
    """A scanner reads a label: the keys arrive as a burst into whatever has focus, then Enter."""
    target = window.focusWidget() or window.scan
    qtbot.keyClicks(target, serial)
    qtbot.keyClick(window.scan, Qt.Key.Key_Return)


def run_unit(
    qtbot: Any, window: MainWindow, start: Callable[[], object], timeout_s: float = 120
) -> UnitOutcome:
    """Do ``start()`` (a key press, a click…), wait for the unit it starts to end and for its worker
    thread to be gone; return how it ended."""
    with qtbot.waitSignal(window.unit_finished, timeout=int(timeout_s * 1000)) as blocker:
        start()
    qtbot.waitUntil(lambda: not window.runner.running, timeout=10_000)
    outcome = blocker.args[0]
    assert isinstance(outcome, UnitOutcome)
    return outcome


def read_barcodes(image: Path) -> list[str]:
    """Decode every barcode in an image with zbar, the reader a line's scanners are tested against."""
    zbarimg = shutil.which("zbarimg")
    assert zbarimg, "zbarimg is missing — install Debian's zbar-tools"
    done = subprocess.run(
        [zbarimg, "--quiet", "--raw", str(image)],
        capture_output=True,
        text=True,
        timeout=ZBARIMG_TIMEOUT_S,
        check=False,
    )
    return done.stdout.split()


def pdf_page_png(pdf: Path, out_prefix: Path, dpi: int = 300) -> Path:
    """Rasterise a PDF's first page with poppler's pdftoppm (as a print driver would)."""
    pdftoppm = shutil.which("pdftoppm")
    assert pdftoppm, "pdftoppm is missing — install Debian's poppler-utils"
    subprocess.run(
        [pdftoppm, "-r", str(dpi), "-png", "-singlefile", str(pdf), str(out_prefix)],
        check=True,
        timeout=ZBARIMG_TIMEOUT_S,
    )
    return out_prefix.with_suffix(".png")
