"""The service's wire format: length-prefixed JSON frames on a Unix stream socket, each under a deadline.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (one object).  A frame
longer than :data:`MAX_FRAME_BYTES` is refused before it is read (the connection is then closed: nothing
after it can be trusted to be a frame boundary).  Every read and write has a deadline: a peer that stops
reading or writing mid-frame costs at most that long.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

from station.errors import StationError

# The largest frame either side accepts (an export travels as several chunks below this).
MAX_FRAME_BYTES = 4 * 1024 * 1024
# A chunk of a file sent as frames (an export's content).
CHUNK_BYTES = 1024 * 1024
# How long one frame may take to go out, or to come in once its first byte arrived.
FRAME_DEADLINE_S = 30.0
# How long a client waits to connect.
CONNECT_DEADLINE_S = 5.0

_HEADER = struct.Struct(">I")


class FrameError(StationError):
    """The peer sent something that is not a frame, too big a frame, or went away mid-frame."""


class PeerGone(FrameError):
    """The peer closed the connection (between frames)."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), default=str).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"a message of {len(body)} bytes is over the {MAX_FRAME_BYTES}-byte frame limit")
    return _HEADER.pack(len(body)) + body


def send(sock: socket.socket, message: dict[str, Any], *, deadline_s: float = FRAME_DEADLINE_S) -> None:
    """Write one frame, within ``deadline_s``."""
    data = memoryview(encode(message))
    end = time.monotonic() + deadline_s
    while data:
        left = end - time.monotonic()
        if left <= 0:
            raise FrameError(f"the peer did not take a frame within {deadline_s:g} s")
        sock.settimeout(left)
        try:
            sent = sock.send(data)
        except TimeoutError:
            raise FrameError(f"the peer did not take a frame within {deadline_s:g} s") from None
        except OSError as exc:
            raise PeerGone(f"the connection closed while sending ({exc.strerror or exc})") from exc
        data = data[sent:]


def _read_exactly(sock: socket.socket, count: int, end: float | None, *, first: bool) -> bytes:
    parts: list[bytes] = []
    have = 0
    while have < count:
        if end is None:
            sock.settimeout(None)
        else:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
        try:
            part = sock.recv(min(count - have, 256 * 1024))
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise PeerGone(f"the connection closed ({exc.strerror or exc})") from exc
        if not part:
            if first and have == 0:
                raise PeerGone("the peer closed the connection")
            raise FrameError("the connection closed in the middle of a frame")
        parts.append(part)
        have += len(part)
    return b"".join(parts)


def receive(
    sock: socket.socket, *, wait_s: float | None, deadline_s: float = FRAME_DEADLINE_S
) -> dict[str, Any]:
    """Read one frame: wait up to ``wait_s`` for it to begin (None: as long as it takes — a server waiting
    for a client's next request, a client following units), then ``deadline_s`` for the rest of it.

    Raises TimeoutError when no frame began within ``wait_s``."""
    end_first = None if wait_s is None else time.monotonic() + wait_s
    first = _read_exactly(sock, 1, end_first, first=True)
    try:
        rest = _read_exactly(sock, _HEADER.size - 1, time.monotonic() + deadline_s, first=False)
        (length,) = _HEADER.unpack(first + rest)
        if length > MAX_FRAME_BYTES:
            raise FrameError(
                f"the peer sent a frame of {length} bytes, over the {MAX_FRAME_BYTES}-byte limit"
            )
        body = _read_exactly(sock, length, time.monotonic() + deadline_s, first=False)
    except TimeoutError:
        raise FrameError(f"the peer stopped in the middle of a frame for {deadline_s:g} s") from None
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"the peer sent a frame that is not JSON ({exc})") from exc
    if not isinstance(message, dict):
        raise FrameError("the peer sent a frame that is not a JSON object")
    return message


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel says (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid
