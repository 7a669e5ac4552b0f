"""Kiosk sessions of the station service: a person signed in with their own credential at a shared window.

``sign_in`` (checked by :class:`station.people.People`, whose lockout is kept in ``people.db`` and outlives a
restart of the service) gives a random token.  The token is bound to the OS account (uid) whose connection
signed in: another account presenting it is refused.  A request carrying it gets the person's role on top of
the account's own for that request, and the service records both (``service_requests``: the account, and
``signed_in`` in the detail).  Sessions live in the service's memory only: a restarted service forgets them
(people sign in again); it never forgets a lockout.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from station.errors import StationError

if TYPE_CHECKING:
    from station.people import People, SignedIn

# How many sessions the service keeps at once (the oldest go first): a bound on memory, far above any line.
MAX_SESSIONS = 256


class SessionError(StationError):
    """A session token that is unknown, of another account, or ended; the message says to sign in again."""


@dataclass(frozen=True)
class _Session:
    signed: SignedIn
    uid: int


class Sessions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_token: dict[str, _Session] = {}

    def open(self, signed: SignedIn, *, uid: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            while len(self._by_token) >= MAX_SESSIONS:
                del self._by_token[next(iter(self._by_token))]
            self._by_token[token] = _Session(signed, uid)
        return token

    def check(self, token: str, *, uid: int, people: People) -> SignedIn:
        """The person signed in under ``token`` for a request of ``uid``; raises :class:`SessionError`."""
        with self._lock:
            session = self._by_token.get(token)
        if session is None:
            raise SessionError(
                "that sign-in session is unknown to the station service (it may have restarted, or "
                "the session ended) — sign in again"
            )
        if session.uid != uid:
            raise SessionError(
                "that sign-in session belongs to another OS account's window — sign in at this one"
            )
        try:
            return people.check_session(session.signed)
        except StationError:
            with self._lock:
                self._by_token.pop(token, None)
            if (
                session.signed.expired()
            ):  # the journal says the session ended by itself (the window's sign-out)
                people.sign_out(session.signed, expired=True)
            raise

    def close(self, token: str, *, uid: int) -> SignedIn | None:
        with self._lock:
            session = self._by_token.get(token)
            if session is None or session.uid != uid:
                return None
            del self._by_token[token]
        return session.signed
