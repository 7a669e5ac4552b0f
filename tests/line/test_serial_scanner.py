"""A serial barcode scanner read through a pty: codes cut at the terminator, noise and over-long reads kept
bounded, and an unplugged scanner reported in words and reopened by itself when it is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from station.config import ScannerSettings
from station.line.scanner import MAX_CODE_CHARS, SerialScanner
from tests.helpers.processes import wait_until as wait_for
from tests.helpers.pty_scanner import PtyScanner

WAIT_S = 10.0
REOPEN_S = 0.1
# What is under test is "reported once, not once per attempt": stay away for a few reopen attempts.
AWAY_FOR_REOPENS_S = 3 * REOPEN_S


def wait_until(condition: Callable[[], bool], what: str) -> None:
    wait_for(condition, what, WAIT_S, poll_s=0.02)


class Reads:
    def __init__(self) -> None:
        self.codes: list[str] = []
        self.states: list[tuple[bool, str]] = []
        self.lock = threading.Lock()

    def scan(self, code: str) -> None:
        with self.lock:
            self.codes.append(code)

    def state(self, connected: bool, words: str) -> None:
        with self.lock:
            self.states.append((connected, words))


@pytest.fixture
def device(tmp_path: Path) -> Iterator[PtyScanner]:
    pty = PtyScanner(tmp_path / "ttyACM0")
    yield pty
    pty.close()


def start(device: PtyScanner, reads: Reads, **settings: object) -> SerialScanner:
    scanner = SerialScanner(
        ScannerSettings(device=str(device.path), reopen_s=REOPEN_S, **settings),  # type: ignore[arg-type]
        on_scan=reads.scan,
        on_state=reads.state,
    )
    scanner.start()
    wait_until(lambda: scanner.connected, "the scanner to open")
    return scanner


def test_codes_are_cut_at_the_terminator_and_blank_reads_dropped(device: PtyScanner) -> None:
    reads = Reads()
    scanner = start(device, reads)
    try:
        device.scan("202600000000001")
        device.scan("  202600000000002  ", terminator="\r\n")
        device.scan("", terminator="\r")
        device.scan("FIXTURE:sim-03", terminator="\n")
        wait_until(lambda: len(reads.codes) == 3, "three codes")
    finally:
        scanner.stop()
    assert reads.codes == ["202600000000001", "202600000000002", "FIXTURE:sim-03"]


def test_a_scanner_that_never_sends_its_terminator_cannot_fill_the_memory(device: PtyScanner) -> None:
    reads = Reads()
    scanner = start(device, reads, terminator="\t")
    try:
        device.scan("9" * (MAX_CODE_CHARS * 3), terminator="\t")
        device.scan("202600000000004", terminator="\t")
        wait_until(lambda: len(reads.codes) == 2, "the over-long read and the next scan")
    finally:
        scanner.stop()
    # Delivered once, cut (the scan field then refuses it with its reason); the next scan is whole.
    assert reads.codes == ["9" * MAX_CODE_CHARS, "202600000000004"]


def test_an_unplugged_scanner_is_reported_and_reopened_when_it_is_back(device: PtyScanner) -> None:
    reads = Reads()
    scanner = start(device, reads)
    try:
        device.unplug()
        wait_until(lambda: not scanner.connected, "the unplug to be noticed")
        assert "was unplugged" in reads.states[-1][1] and "reopens it by itself" in reads.states[-1][1]
        time.sleep(AWAY_FOR_REOPENS_S)
        assert [connected for connected, _ in reads.states] == [True, False]
        device.plug()
        wait_until(lambda: scanner.connected, "the scanner to be reopened")
        device.scan("202600000000003")
        wait_until(lambda: reads.codes == ["202600000000003"], "a scan after the replug")
    finally:
        scanner.stop()
    assert reads.states[-1] == (True, f"scanner {device.path} connected")


def test_a_scanner_missing_at_start_is_said_in_words_and_opened_once_plugged(tmp_path: Path) -> None:
    reads = Reads()
    path = tmp_path / "ttyACM9"
    scanner = SerialScanner(
        ScannerSettings(device=str(path), reopen_s=0.1), on_scan=reads.scan, on_state=reads.state
    )
    scanner.start()
    pty: PtyScanner | None = None
    try:
        wait_until(lambda: bool(reads.states), "the missing scanner to be reported")
        assert reads.states[0][0] is False and "is not connected" in reads.states[0][1]
        assert "plug it in" in reads.states[0][1]
        pty = PtyScanner(path)
        wait_until(lambda: scanner.connected, "the scanner to open once plugged")
    finally:
        scanner.stop()
        if pty is not None:
            pty.close()
