"""What CLI commands served by the station service share: the running service (if any), and files the
service sends that the command writes itself, as the caller's own file, mode 0640."""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from station.errors import StationError


def running_service(args: argparse.Namespace) -> Any:
    """A connection to the station service of this command's --home / --socket when one answers, else None
    (the command then works on the home itself, as before the service)."""
    from station.service.client import connect

    return connect(getattr(args, "home", None), getattr(args, "socket", None), start=False)


def follow_messages(
    client: Any,
    handle: Callable[[dict[str, Any]], bool],
    *,
    abort: dict[str, Any],
    cancelling: str | None = None,
) -> bool:
    """Read what the service sends for a command's units: notices to stderr, every message to ``handle`` until it
    returns True.  Ctrl-C asks the service to abort (``abort``: the request's arguments; ``cancelling`` said
    first) and waits, bounded, for the units to end; a second Ctrl-C stops waiting.  True when cancelled."""
    from station.engine import CANCEL_DEADLINE_S

    cancelling_until: float | None = None
    while True:
        try:
            message = client.next_message(
                wait_s=None if cancelling_until is None else max(0.1, cancelling_until - time.monotonic())
            )
            if message is None:
                if cancelling_until is not None and time.monotonic() > cancelling_until:
                    return True
                continue
            if "notice" in message:
                print(message["notice"], file=sys.stderr, flush=True)
            if handle(message):
                return cancelling_until is not None
        except KeyboardInterrupt:
            if cancelling_until is not None:
                return True
            if cancelling is not None:
                print(cancelling, file=sys.stderr)
            client.call("abort", abort)
            cancelling_until = time.monotonic() + CANCEL_DEADLINE_S + 10


def read_input(path: Path, what: str, *, limit: int) -> bytes:
    """A file a command reads to send its content to the service (which cannot read the caller's files): at most
    ``limit`` bytes, or a clear refusal."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise StationError(f"Cannot read the {what} file {path} ({exc.strerror}) — check the path.") from None
    if len(data) > limit:
        raise StationError(
            f"The {what} file {path} is over {limit // 1024} KiB — a {what} is far smaller; check it."
        )
    return data


def received_file(client: Any, answer: dict[str, Any], *, what: str) -> bytes:
    """The chunks of a file the service answered with, checked against the size and digest it announced."""
    parts: dict[int, bytes] = {}
    while len(parts) < answer["chunks"]:
        message = client.next_message(wait_s=60)
        if message is None:
            raise StationError(f"the station service stopped sending the {what} — run the command again")
        if "chunk" in message:
            parts[int(message["index"])] = base64.b64decode(message["chunk"])
    data = b"".join(parts[index] for index in range(answer["chunks"]))
    if len(data) != answer["size"] or hashlib.sha256(data).hexdigest() != answer["sha256"]:
        raise StationError(f"the {what} arrived damaged from the station service — run the command again")
    return data


def write_private(out: Path, data: bytes) -> None:
    """``data`` to ``out`` whole (or ``out`` left as it was), mode 0640, owned by the caller."""
    out = out.expanduser()
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o640)
        os.replace(temporary, out)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise StationError(
            f"Could not write {out} ({exc.strerror}) — check that the folder is writable, then try again."
        ) from None
