"""The serial console as a byte stream: waiting for bytes under a deadline, cleaning them (CRLF, ANSI escapes,
kernel printk lines) into complete lines, the console's last unfinished line, and typing lines back.  The base
of :class:`~station.transport.serial.SerialLink`, which sets the attributes declared here; moved out of
:mod:`station.transport.serial`.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import serial

from station.shell import UnsafeArgument
from station.transport.base import (
    CommandTimedOut,
    Deadline,
    LinkCancelled,
    LinkError,
    LinkLost,
)
from station.transport.serial_protocol import (
    _ANSI,
    _CONTROL,
    _KERNEL_LINE,
    _LINE_END,
    DRAIN_LIMIT_S,
    KERNEL_LINE_KEPT_BYTES,
    MAX_LINE_BYTES,
    PENDING_KEPT_BYTES,
    PENDING_MAX_BYTES,
    POLL_INTERVAL_S,
    QUIET_PERIOD_S,
    READ_CHUNK_BYTES,
    TAIL_KEPT_BYTES,
    TAIL_WINDOW_BYTES,
)
from station.transport.waiting import readable, writable


class ConsoleStream:
    """The byte-stream half of :class:`~station.transport.serial.SerialLink` (which opens the port and sets
    these attributes in its ``__init__``)."""

    _cancel: threading.Event
    _path: str
    _port: serial.Serial | None
    _ready: bool
    _buffer: bytearray
    _pending: bytes
    _received: int
    _kernel_lines: deque[str]
    _kernel_line_count: int

    def close(self) -> None:
        raise NotImplementedError

    # -- the byte stream --------------------------------------------------------------------

    def _wait_for_output(
        self, deadline: Deadline, *, during: str, on_timeout: Callable[[Deadline], LinkError]
    ) -> bytes:
        """Wait (at most one poll interval) for bytes, feed them in and return the complete lines
        they made (cleaned); raise on timeout or cancel."""
        self._check_cancel()
        if deadline.expired():
            raise on_timeout(deadline)
        port = self._require_port(during)
        try:
            if readable(port.fileno(), deadline.cap(POLL_INTERVAL_S)):
                return self._feed(_read_now(port))
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self._lost(during, exc) from exc
        return b""

    def _feed(self, data: bytes) -> bytes:
        """Take raw bytes from the port; append the complete lines they make (cleaned) to the
        buffer and return them.  Each byte is looked at a bounded number of times."""
        self._received += len(data)
        text = self._pending + data
        end = text.rfind(b"\n") + 1
        if len(text) - end > PENDING_MAX_BYTES:
            # A line that does not end (a stream without newlines, line noise): pass it on in
            # pieces, holding back only its last bytes (the start of an escape sequence, a prompt).
            end = len(text) - PENDING_KEPT_BYTES
        self._pending = text[end:]
        if not end:
            return b""
        # Complete lines (or a piece of a very long one): an escape sequence or a kernel line
        # never spans a newline, so none is cut in half here.
        complete = _ANSI.sub(b"", _LINE_END.sub(b"\n", text[:end]))
        for kernel_line in _KERNEL_LINE.findall(complete):
            self._kernel_lines.append(kernel_line[:KERNEL_LINE_KEPT_BYTES].decode("utf-8", "replace").strip())
            self._kernel_line_count += 1
        cleaned = _KERNEL_LINE.sub(b"", complete)
        self._buffer += cleaned
        return cleaned

    def _tail(self) -> str:
        """The console's last, unfinished line (a prompt, if any), as text without escapes.

        Only its last TAIL_WINDOW_BYTES are looked at, so a line that never ends costs the same on
        every read; a line cut there starts with "…", so no whole-line prompt pattern matches it.
        """
        pending = self._pending[-TAIL_WINDOW_BYTES:]
        cut = len(self._pending) > TAIL_WINDOW_BYTES
        last = pending
        if not cut:
            start = max(0, len(self._buffer) - (TAIL_WINDOW_BYTES - len(pending)))
            newline = self._buffer.rfind(b"\n", start)
            if newline >= 0:
                last = bytes(self._buffer[newline + 1 :]) + pending
            else:
                last = bytes(self._buffer[start:]) + pending
                cut = start > 0
        text = _ANSI.sub(b"", last.replace(b"\r", b"")).decode("utf-8", "replace")
        return f"…{text}" if cut else text

    def _consume(self) -> None:
        """Forget everything received so far: what follows answers what we type next."""
        self._buffer.clear()
        self._pending = b""

    def _trim(self) -> None:
        if len(self._buffer) > TAIL_KEPT_BYTES:
            del self._buffer[:-TAIL_KEPT_BYTES]

    def _drain(self, deadline: Deadline) -> None:
        """Read and drop output until the console is quiet (or DRAIN_LIMIT_S has passed)."""
        limit = Deadline(min(DRAIN_LIMIT_S, deadline.remaining()), what="drain")
        port = self._require_port("opening the console")
        while not limit.expired():
            self._check_cancel()
            try:
                if not readable(port.fileno(), limit.cap(QUIET_PERIOD_S)):
                    break
                _read_now(port)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise self._lost("opening the console", exc) from exc

    def _write_line(self, line: str, deadline: Deadline, *, during: str, what: str = "") -> None:
        """Type one line and press Enter (CR, as a terminal does)."""
        # Defence in depth: ShellCommand refuses control characters in arguments, but a redirect
        # or a profile value takes other paths; a stray newline would run a second command.
        if _CONTROL.search(line):
            raise UnsafeArgument(
                f"{what or 'a command line'} contains a control character or newline; it cannot be typed on "
                "the console"
            )
        encoded = line.encode("utf-8")
        if len(encoded) + 1 > MAX_LINE_BYTES:
            raise UnsafeArgument(
                f"{what or 'a command line'} is {len(encoded)} bytes long; a console line must stay under "
                f"{MAX_LINE_BYTES} bytes (tty limit 4095) — report this, it is a defect in the station"
            )
        self._write(encoded + b"\r", deadline, during=during)

    def _write(self, data: bytes, deadline: Deadline, *, during: str) -> None:
        port = self._require_port(during)
        remaining = data
        while remaining:
            self._check_cancel()
            if deadline.expired():
                raise CommandTimedOut(
                    f"the console {self._path} did not take our input within {deadline.seconds:g} s "
                    f"({during}) — check the cable and flow control settings, then press Retry"
                )
            try:
                if writable(port.fileno(), deadline.cap(POLL_INTERVAL_S)):
                    # write_timeout=0 on the port: write takes what fits now and says how much.
                    written = port.write(remaining)
                    remaining = remaining[int(written or 0) :]
            except (serial.SerialException, OSError, ValueError) as exc:
                raise self._lost(during, exc) from exc

    def _interrupt(self) -> None:
        """Press Ctrl-C (best effort): stop a command that ran out of time or was cancelled."""
        port = self._port
        if port is None:
            return
        try:
            if writable(port.fileno(), POLL_INTERVAL_S):
                port.write(b"\x03")
        except (serial.SerialException, OSError, ValueError):
            pass

    def _require_port(self, during: str) -> serial.Serial:
        if self._port is None:
            raise LinkLost(f"the serial console on {self._path} is not open ({during}) — press Retry")
        return self._port

    def _lost(self, during: str, exc: BaseException) -> LinkLost:
        self._ready = False  # nothing to log out of on a console that is gone
        self.close()
        return LinkLost(
            f"the serial console on {self._path} closed in the middle of {during} ({exc}) — check the "
            "cable, then press Retry"
        )

    def _last_seen(self) -> str:
        seen = "".join(ch if ch.isprintable() else " " for ch in self._tail()).strip()
        return f" (last output: {seen[-60:]!r})" if seen else ""

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise LinkCancelled("cancelled by the operator")


def _read_now(port: Any) -> bytes:
    """What the console has sent, now (never blocks: the port is non-blocking).  Read from its descriptor, not
    through pyserial's read, which waits in ``select`` and so refuses descriptors from 1024 up."""
    try:
        data = os.read(port.fileno(), READ_CHUNK_BYTES)
    except BlockingIOError:
        return b""
    if not data:  # readable yet nothing: the other end is gone (what pyserial said as SerialException)
        raise serial.SerialException("the console reports data but returned none (disconnected?)")
    return data
