"""What the station service's request modules share: a client's connection, a group of units, answers.

Each group of requests lives in its own module under :mod:`station.service` with a ``handlers(service)`` that
returns op name → handler (a callable taking the connection and the request's arguments);
:class:`~station.service.server.StationService` merges them.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from station.audit.service import Caller
from station.batch import BatchJob
from station.errors import StationError
from station.roles import Role
from station.service import frames

if TYPE_CHECKING:
    from station.service.server import StationService

# How many messages may wait for one client before it is dropped as not reading.
CLIENT_QUEUE_LIMIT = 20000


class Connection:
    """One client: its caller, its roles, and a writer thread draining its queue."""

    def __init__(self, sock: socket.socket, caller: Caller, roles: frozenset[Role]) -> None:
        self.sock = sock
        self.caller = caller
        self.roles = roles
        self.follows = False
        self.closed = threading.Event()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(CLIENT_QUEUE_LIMIT)
        self._writer = threading.Thread(
            target=self._write_loop, name=f"service-writer-{caller.pid}", daemon=True
        )
        self._writer.start()

    def push(self, message: dict[str, Any]) -> None:
        """Queue a message for this client; never blocks (a client that does not read is dropped)."""
        if self.closed.is_set():
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.close()

    def _write_loop(self) -> None:
        while True:
            message = self._queue.get()
            if message is None or self.closed.is_set():
                return
            try:
                frames.send(self.sock, message)
            except (frames.FrameError, OSError):
                self.close()
                return

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass


@dataclass
class Group:
    """The units one request asked for (one board, or one batch), and who watches them."""

    id: str
    caller: Caller
    request_id: int | None
    subscribers: set[Connection] = field(default_factory=set)
    jobs: dict[int, BatchJob] = field(default_factory=dict)
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)
    cancelled: bool = False
    done: bool = False


# A request's handler: the client's connection and the request's arguments → the answer's result.
Handler = Callable[["Connection", dict[str, Any]], Any]


def bind(
    service: StationService, function: Callable[[StationService, Connection, dict[str, Any]], Any]
) -> Handler:
    """A request module's function as a handler of ``service``."""
    return lambda conn, args: function(service, conn, args)


@dataclass
class Followed:
    """An answer followed by more messages (an export's chunks)."""

    result: Any
    followups: list[dict[str, Any]]


def file_answer(data: bytes, result: dict[str, Any]) -> Followed:
    """A file's content as an answer (size, digest) followed by its chunks; the client writes the file."""
    import base64
    import hashlib

    chunks = [data[at : at + frames.CHUNK_BYTES] for at in range(0, len(data), frames.CHUNK_BYTES)] or [b""]
    followups = [
        {"chunk": base64.b64encode(chunk).decode("ascii"), "index": index}
        for index, chunk in enumerate(chunks)
    ]
    return Followed(
        {**result, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": len(chunks)},
        followups,
    )


class CaLocked(StationError):
    def __init__(self, kind: dict[str, Any]) -> None:
        self.kind = kind
        what = (
            f"its key is in token {kind['label']!r}"
            if kind["kind"] == "token"
            else "its key file is encrypted"
        )
        super().__init__(
            f"the station's CA is locked ({what}): an administrator unlocks it with `station ca "
            "unlock` (or give the service a credential file), then start the board again"
        )
