"""Answering a modal dialog a test's code under test opens and waits on (``exec()``), without a fixed delay.

The code under test blocks the test in the dialog's own event loop, so ``qtbot.waitUntil`` cannot run; a timer
polls that loop instead and answers the dialog as soon as it is shown.  A modal of another kind is closed (and
reported), so a test fails instead of hanging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QDialog, QWidget

W = TypeVar("W", bound=QWidget)
POLL_MS = 10


@contextmanager
def answering_modal(kind: type[W], answer: Callable[[W], None]) -> Iterator[list[str]]:
    """While the block runs, answer the first modal ``kind`` with ``answer``; yields a list of problems seen."""
    problems: list[str] = []
    timer = QTimer()
    timer.setInterval(POLL_MS)

    def poll() -> None:
        shown = QApplication.activeModalWidget()
        if shown is None:
            return
        timer.stop()
        if isinstance(shown, kind):
            try:
                answer(shown)
            except Exception as exc:  # noqa: BLE001 - reported to the test, and the dialog must not stay open
                problems.append(f"answering {type(shown).__name__} failed: {exc!r}")
                shown.close()
        else:
            problems.append(f"expected a {kind.__name__}, a {type(shown).__name__} was shown")
            if isinstance(shown, QDialog):
                shown.reject()
            else:
                shown.close()

    timer.timeout.connect(poll)
    timer.start()
    try:
        yield problems
    finally:
        timer.stop()
