"""A serial barcode scanner (RS-232, or USB-CDC as /dev/ttyACM0) beside the keyboard wedge (``[scanner]``).

A reader thread opens the device with pyserial, cuts what arrives at the configured terminator and hands each
code to ``on_scan`` — the caller feeds it to the same scan-field logic a wedge scan goes through.  Unplugging
the scanner (the device vanishes, reads fail) is reported through ``on_state`` in words, and the device is
reopened as soon as it is back; nothing here ever blocks without a deadline (reads time out every
``POLL_S``), and a code longer than ``MAX_CODE_CHARS`` is cut off rather than buffered forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import serial

from station.config import ScannerSettings

POLL_S = 0.2
# Longer than any label the line scans; a scanner that never sends its terminator cannot fill the memory.
MAX_CODE_CHARS = 256

OnScan = Callable[[str], None]
OnState = Callable[[bool, str], None]  # connected?, what to tell the person


class SerialScanner:
    """Reads codes from a serial scanner on its own thread until :meth:`stop`."""

    def __init__(self, settings: ScannerSettings, *, on_scan: OnScan, on_state: OnState) -> None:
        self.settings = settings
        self.on_scan = on_scan
        self.on_state = on_state
        self.connected = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="serial-scanner", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _tell(self, connected: bool, message: str) -> None:
        self.connected = connected
        try:
            self.on_state(connected, message)
        except Exception:  # noqa: BLE001 - a broken watcher must not stop the scanner
            pass

    def _run(self) -> None:
        device = self.settings.device
        told_missing = False
        while not self._stop.is_set():
            try:
                port = serial.Serial(device, self.settings.baud, timeout=POLL_S, exclusive=True)
            except (serial.SerialException, OSError, ValueError) as exc:
                if not told_missing:
                    self._tell(
                        False,
                        f"scanner {device} is not connected ({_reason(exc)}) — plug it in; the "
                        "station opens it as soon as it is back",
                    )
                    told_missing = True
                self._stop.wait(self.settings.reopen_s)
                continue
            told_missing = False
            self._tell(True, f"scanner {device} connected")
            try:
                self._read(port)
            except (serial.SerialException, OSError) as exc:
                self._tell(
                    False,
                    f"scanner {device} was unplugged ({_reason(exc)}) — plug it in again; the "
                    "station reopens it by itself",
                )
                told_missing = True
            finally:
                port.close()

    def _read(self, port: serial.Serial) -> None:
        terminator = self.settings.terminator.encode()
        # Either end of a line ends a code: scanners set to CR LF or LF alone still work with "\r".
        ends = {terminator, b"\r", b"\n"} if terminator in (b"\r", b"\n", b"\r\n") else {terminator}
        buffer = b""
        overflowed = False  # an over-long read was delivered cut; drop the rest of it up to its terminator
        while not self._stop.is_set():
            chunk = port.read(max(1, min(port.in_waiting, 1024)))
            if not chunk:
                continue
            buffer += chunk
            while True:
                cut = min((buffer.find(end) for end in ends if end in buffer), default=-1)
                if cut < 0:
                    break
                code, buffer = buffer[:cut], buffer[cut + 1 :]
                if not overflowed:
                    self._deliver(code)
                overflowed = False
            if len(buffer) > MAX_CODE_CHARS:
                if not overflowed:
                    self._deliver(buffer[:MAX_CODE_CHARS])  # the scan field refuses it, saying why
                overflowed = True
                buffer = b""

    def _deliver(self, raw: bytes) -> None:
        code = raw[:MAX_CODE_CHARS].decode("utf-8", errors="replace").strip()
        if not code:
            return
        try:
            self.on_scan(code)
        except Exception:  # noqa: BLE001 - the scan field shows its own refusals
            pass


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1][:120] if text else type(exc).__name__
