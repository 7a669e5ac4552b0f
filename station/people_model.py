"""What the people store speaks in: who acts (:class:`Actor`), a signed-in session, a person as listed, the
credential kinds and audit actions, the role words, the rules a new credential must pass, and the errors.
Moved out of :mod:`station.people`, which re-exports every name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from station.errors import StationError
from station.roles import Role, account_name, allowed, roles_of

MIN_PIN_LENGTH = 4
MIN_BADGE_LENGTH = 6
MAX_SECRET_LENGTH = 128


# `station people add NAME --role quality|admin|technician`: the words people type for each role.
ROLE_WORDS = {"technician": Role.TECHNICIAN, "quality": Role.QUALITY, "admin": Role.ADMIN}


class PeopleError(StationError):
    """A request about people was refused; the message says why and what to do next."""


class SignInRefused(PeopleError):
    """A sign-in was refused (wrong credential, unknown name, or locked out until ``locked_until``)."""

    def __init__(self, message: str, *, locked_until: float | None = None) -> None:
        super().__init__(message)
        self.locked_until = locked_until


class CredentialKind(StrEnum):
    """What a person types or scans to sign in."""

    PIN = "pin"
    BADGE = "badge"
    # The password of the person's own OS account, checked through PAM (nothing stored but the login name).
    PAM = "pam"


class PeopleAction(StrEnum):
    """What a people record in the audit log says happened."""

    ENROLLED = "enrolled"
    CREDENTIAL_CHANGED = "credential_changed"
    CREDENTIAL_RESET = "credential_reset"
    REMOVED = "removed"
    LOCKED_OUT = "locked_out"
    UNLOCKED = "unlocked"
    SIGNED_IN = "signed_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGNED_OUT = "signed_out"
    # `station admin set-pin`: the shared admin PIN of demo mode was set or replaced.
    ADMIN_PIN_SET = "admin_pin_set"


def role_from_word(word: str) -> Role:
    """``quality`` → :attr:`Role.QUALITY` (also accepts the group names, ``welma-quality``)."""
    for name, role in ROLE_WORDS.items():
        if word in (name, role.value):
            return role
    raise PeopleError(f"unknown role {word!r} — choose one of: {', '.join(ROLE_WORDS)}")


def clock_text(moment: float) -> str:
    """A moment as a person at the station reads it (local time)."""
    return datetime.fromtimestamp(moment).astimezone().strftime("%H:%M:%S")


@dataclass(frozen=True)
class Actor:
    """Who makes a request: recorded as ``name``; ``account`` is the OS account it came from."""

    name: str
    account: str
    administrator: bool

    @classmethod
    def for_account(cls, uid: int) -> Actor:
        """An OS account acting as itself (the caller of the CLI, the service's peer)."""
        name = account_name(uid)
        return cls(name=name, account=name, administrator=allowed(roles_of(uid), Role.ADMIN))

    @classmethod
    def for_person(cls, session: SignedIn, *, account: str) -> Actor:
        """A person signed in at a kiosk (OS account ``account``) acting with their own role."""
        return cls(name=session.person, account=account, administrator=session.role.allows(Role.ADMIN))


@dataclass(frozen=True)
class SignedIn:
    """A person's elevated session: their role until ``expires_at`` (seconds since the epoch)."""

    person: str
    role: Role
    started_at: float
    expires_at: float
    account: str

    def remaining_s(self, now: float | None = None) -> float:
        return max(0.0, self.expires_at - (time.time() if now is None else now))

    def expired(self, now: float | None = None) -> bool:
        return self.remaining_s(now) <= 0


@dataclass(frozen=True)
class Person:
    """A person as ``station people list`` shows them (no credential)."""

    name: str
    role: Role
    kind: CredentialKind
    failed_attempts: int
    locked_until: float | None
    enrolled_at: float
    enrolled_by: str
    changed_at: float

    def locked(self, now: float) -> bool:
        return self.locked_until is not None and self.locked_until > now


def check_new_secret(secret: str, kind: CredentialKind, *, name: str) -> None:
    """Raise :class:`PeopleError` if ``secret`` may not become ``name``'s credential."""
    shortest = MIN_PIN_LENGTH if kind is CredentialKind.PIN else MIN_BADGE_LENGTH
    what = "PIN" if kind is CredentialKind.PIN else "badge code"
    if len(secret) < shortest:
        raise PeopleError(f"the {what} must be at least {shortest} characters long — choose a longer one")
    if len(secret) > MAX_SECRET_LENGTH:
        raise PeopleError(f"the {what} may be at most {MAX_SECRET_LENGTH} characters long")
    if not secret.isprintable() or secret != secret.strip():
        raise PeopleError(f"the {what} may not contain control characters or start or end with a space")
    if len(set(secret)) == 1:
        raise PeopleError(f"the {what} may not repeat one character only (such as 0000) — choose another")
    if secret.casefold() == name.casefold():
        raise PeopleError(f"the {what} may not be the person's name — choose another")
