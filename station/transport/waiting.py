"""Waiting for a descriptor to be readable or writable, with a deadline, at any descriptor number.

``select.select`` refuses descriptors from 1024 up (FD_SETSIZE); a long-running station (the service, a
test run) may hold that many, and its serial console or SSH channel then failed as "not open".  ``poll``
has no such limit.
"""

from __future__ import annotations

import select


def _ready(fd: int, events: int, timeout_s: float) -> bool:
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0, int(timeout_s * 1000))))


def readable(fd: int, timeout_s: float) -> bool:
    """Whether ``fd`` has something to read (or was hung up) within ``timeout_s`` seconds."""
    return _ready(fd, select.POLLIN | select.POLLPRI, timeout_s)


def writable(fd: int, timeout_s: float) -> bool:
    """Whether ``fd`` takes a write within ``timeout_s`` seconds."""
    return _ready(fd, select.POLLOUT, timeout_s)
