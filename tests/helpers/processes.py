"""Waiting on processes a test started: readiness seen in their output, under a deadline, never a fixed sleep."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable
from typing import Any

# openssl s_server prints ACCEPT once it listens; a loaded machine may take a few seconds to get there.
S_SERVER_START_TIMEOUT_S = 30.0


def read_until(process: subprocess.Popen[Any], marker: bytes, timeout_s: float) -> bytes:
    """Read the process's stdout until ``marker`` appears; return what was read (the caller keeps it).

    Reads the pipe's file descriptor itself, so nothing is left in a Python buffer that ``select`` cannot see,
    and ``communicate()`` afterwards returns the rest.  A connect probe is no readiness check for a server that
    accepts once (``s_server -naccept 1``): it would use up the one connection.
    """
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
        assert ready, f"no {marker!r} within {timeout_s:g} s: {seen!r}"
        chunk = os.read(process.stdout.fileno(), 4096)
        assert chunk, f"the process ended (exit {process.poll()}) before {marker!r}: {seen!r}"
        seen += chunk
    return seen


def wait_for_s_server(server: subprocess.Popen[Any], timeout_s: float = S_SERVER_START_TIMEOUT_S) -> str:
    """Wait until ``openssl s_server`` listens; return its output so far (prepend it to ``communicate()``'s)."""
    return read_until(server, b"ACCEPT", timeout_s).decode(errors="replace")


def wait_until(condition: Callable[[], object], what: str, timeout_s: float, *, poll_s: float = 0.05) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:g} s for {what}"
        time.sleep(poll_s)
