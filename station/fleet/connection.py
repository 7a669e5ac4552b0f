"""Connections to the fleet database, each with deadlines on everything that can block.

libpq's ``connect_timeout`` bounds connecting (also to a server that accepts TCP but never answers, e.g. one
paused with SIGSTOP); TCP keepalives and ``tcp_user_timeout`` notice a dead peer; ``statement_timeout`` stops a
slow statement on the server. None of those helps when the server process is frozen but its kernel still
acknowledges packets — so every statement also runs under a client-side watchdog that shuts the socket down at
its deadline, which makes the blocked call fail at once with an error we map to :class:`FleetUnavailable`.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.errors import StationError

if TYPE_CHECKING:
    import psycopg

# Named deadlines (seconds). libpq's connect_timeout counts whole seconds and is at least 2.
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_S = 5.0
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 2
TCP_USER_TIMEOUT_MS = 8000
APPLICATION_NAME = "welma-station"


class FleetUnavailable(StationError):
    """The fleet database could not be reached or did not answer in time."""


class FleetError(StationError):
    """The fleet database answered, but refused or is not set up as this station expects."""


def pgpass_file(home_root: Path) -> Path:
    """Where ``station fleet init`` keeps this station's password for its fleet role (0600)."""
    return home_root / "fleet" / "pgpass"


def connect(
    dsn: str,
    *,
    passfile: Path | None = None,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    autocommit: bool = True,
) -> psycopg.Connection[Any]:
    """Open a connection with every deadline set; :class:`FleetUnavailable` in words when it fails."""
    import psycopg

    options: dict[str, Any] = {
        "connect_timeout": max(2, int(connect_timeout_s)),
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_S,
        "keepalives_interval": KEEPALIVE_INTERVAL_S,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        "application_name": APPLICATION_NAME,
        "options": f"-c statement_timeout={int(statement_timeout_s * 1000)} -c lock_timeout={int(statement_timeout_s * 1000)}",
    }
    if passfile is not None and passfile.exists():
        options["passfile"] = str(passfile)
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **options)
    except psycopg.OperationalError as exc:
        raise FleetUnavailable(
            f"The fleet database {redact(dsn)} cannot be reached: {first_line(exc)} — check the network and that "
            f"the server runs; the station keeps working and sends its backlog when it is back."
        ) from None
    except psycopg.Error as exc:
        raise FleetError(
            f"The fleet database {redact(dsn)} refused the connection: {first_line(exc)}"
        ) from None


@contextmanager
def deadline(conn: psycopg.Connection[Any], seconds: float, *, what: str) -> Iterator[None]:
    """Run the block's statements on ``conn`` within ``seconds``, or break the connection and raise.

    On expiry the socket is shut down (the connection is then unusable: callers drop it and reconnect).
    """
    import psycopg

    fired = threading.Event()

    def expire() -> None:
        fired.set()
        try:
            fd = os.dup(conn.fileno())
        except (OSError, psycopg.Error):
            return
        try:
            with socket.socket(fileno=fd) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except psycopg.OperationalError as exc:
        if fired.is_set():
            raise FleetUnavailable(
                f"The fleet database did not answer within {seconds:g} s ({what}) — the server may be paused or "
                f"overloaded; the station goes on and tries again."
            ) from None
        raise FleetUnavailable(f"The fleet database connection failed ({what}): {first_line(exc)}") from None
    finally:
        timer.cancel()
    if fired.is_set():
        # The block finished just as the deadline fired: the socket may be shut; never reuse it.
        raise FleetUnavailable(f"The fleet database answered too late ({what}, deadline {seconds:g} s).")


def redact(dsn: str) -> str:
    """The DSN without any password, for messages."""
    import re

    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", re.sub(r"password=\S+", "password=***", dsn))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
