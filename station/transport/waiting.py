"""Waiting for a descriptor to be readable or writable, with a deadline, at any descriptor number — and a
cancel flag a wait wakes on.

``select.select`` refuses descriptors from 1024 up (FD_SETSIZE); a long-running station (the service, a
test run) may hold that many, and its serial console or SSH channel then failed as "not open".  ``poll``
has no such limit.
"""

from __future__ import annotations

import os
import select
import threading


def _ready(fd: int, events: int, timeout_s: float, also: int | None = None) -> bool:
    poller = select.poll()
    poller.register(fd, events)
    if also is not None:
        poller.register(also, select.POLLIN)
    return any(ready == fd for ready, _ in poller.poll(max(0, int(timeout_s * 1000))))


def readable(fd: int, timeout_s: float, *, also: int | None = None) -> bool:
    """Whether ``fd`` has something to read (or was hung up) within ``timeout_s`` seconds; a wait also ends
    early (False) when ``also`` — a :class:`WakingEvent`'s descriptor — turns readable."""
    return _ready(fd, select.POLLIN | select.POLLPRI, timeout_s, also)


def writable(fd: int, timeout_s: float) -> bool:
    """Whether ``fd`` takes a write within ``timeout_s`` seconds."""
    return _ready(fd, select.POLLOUT, timeout_s)


class WakingEvent(threading.Event):
    """A :class:`threading.Event` that a descriptor wait can wake on: once set, :meth:`fileno` is readable.

    A unit's worker is cancelled with one (a Cancel message sets it), so its link can wait for a board's
    output in long sleeps — a 20 s key generation costs a few wake-ups, not one every 0.1 s — and still stop
    at once when cancelled.  Waiters that only know a plain Event poll it instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self._read_end, self._write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        super().set()
        try:
            os.write(self._write_end, b"\0")
        except OSError:
            pass  # already written (the pipe is full of wake-ups) or closed

    def fileno(self) -> int:
        return self._read_end
