"""People, not a shared PIN: each quality lead and administrator signs in with their own credential.

The station keeps a credential store in its home (``HOME/people.db``, SQLite, mode 0600, owned by the
home's owner): one row per person with their role (:class:`~station.roles.Role`) and their credential —
a PIN or a badge code — stored only as a salted PBKDF2 hash (the same scheme as the admin PIN:
:func:`station.admin.hash_pin`).  A right credential gives a :class:`SignedIn` session that expires
(``[people] session_minutes``); ``[people] max_failed_attempts`` wrong ones in a row lock that person out
for ``[people] lockout_minutes`` — kept in the store, so restarting the window (or the service) does not
reset it.  An administrator can unlock early.

Who may do what here is decided by the :class:`Actor` making the request: changing one's own credential
needs the old one; enrolling, resetting, removing and unlocking need an administrator (an OS account in
``welma-admin`` or root, or an enrolled administrator who signed in).  Every change, lockout and sign-in
is journalled in the audit log (:mod:`station.audit.people`) naming who did it and from which OS
account — never the secret.

The store is not the audit log on purpose: the audit log is exported, backed up and forwarded to a
fleet, and credential hashes must go nowhere.
"""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from station.admin import AdminPinError, hash_pin, operator_name, pin_matches
from station.audit import AuditLog
from station.audit.people import record_people_event
from station.config import PeopleSettings
from station.errors import StationError
from station.home import StationHome

# Moved to station.people_model, re-exported here so every existing import keeps working:
from station.people_model import MAX_SECRET_LENGTH as MAX_SECRET_LENGTH
from station.people_model import MIN_BADGE_LENGTH as MIN_BADGE_LENGTH
from station.people_model import MIN_PIN_LENGTH as MIN_PIN_LENGTH
from station.people_model import ROLE_WORDS as ROLE_WORDS
from station.people_model import Actor as Actor
from station.people_model import CredentialKind as CredentialKind
from station.people_model import PeopleAction as PeopleAction
from station.people_model import PeopleError as PeopleError
from station.people_model import Person as Person
from station.people_model import SignedIn as SignedIn
from station.people_model import SignInRefused as SignInRefused
from station.people_model import check_new_secret as check_new_secret
from station.people_model import clock_text as clock_text
from station.people_model import role_from_word as role_from_word

# Moved to station.people_pam, re-exported here so every existing import keeps working:
from station.people_pam import PAM_TIMEOUT_S as PAM_TIMEOUT_S
from station.people_pam import os_password_matches as os_password_matches
from station.roles import Role, account_name

PEOPLE_FILE = "people.db"
BUSY_TIMEOUT_S = 10.0


_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS people (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        kind TEXT NOT NULL,
        credential TEXT NOT NULL,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        locked_until REAL,
        enrolled_at REAL NOT NULL,
        enrolled_by TEXT NOT NULL,
        changed_at REAL NOT NULL
    )
    """,
)


def people_path(home: StationHome) -> Path:
    return home.root / PEOPLE_FILE


def _key(name: str) -> str:
    """How a name is looked up: case and spacing do not matter ("Quinn  Lee" is "quinn lee")."""
    return operator_name(name).casefold()


class People:
    """The station's credential store and the rules around it (Qt-free; the station service calls it).

    Every method is safe to call from several processes at once: each change is one SQLite transaction
    taken with the write lock first (``BEGIN IMMEDIATE``), so two wrong PINs at two windows both count.
    PBKDF2 makes :meth:`verify` take ~0.15 s — call it off a GUI thread.
    """

    def __init__(
        self,
        home: StationHome,
        audit: AuditLog,
        *,
        settings: PeopleSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home
        self.audit = audit
        self.settings = settings or PeopleSettings()
        # Wall-clock time (not monotonic): lockouts and sessions must mean the same after a restart.
        self._clock = clock
        self.path = people_path(home)

    # -- the store ----------------------------------------------------------------------------------

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        self._create()
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous = FULL")
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn
        except sqlite3.OperationalError as exc:
            raise PeopleError(
                f"the people store {self.path} could not be used ({exc}) — check the disk and that the station's "
                "account owns the file, then try again"
            ) from exc
        finally:
            conn.close()

    def _create(self) -> None:
        """Create ``people.db`` private (0600) from birth, owned by the home's owner; refuse a loose one."""
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            self.home.create()
            # O_EXCL: a file (or symlink) someone placed there meanwhile is never opened as ours.
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                return self._create()
            os.close(fd)
            owner = self.home.root.stat()
            if os.geteuid() == 0 and owner.st_uid != 0:
                os.chown(self.path, owner.st_uid, owner.st_gid)  # root enrolling for the station's account
            with sqlite3.connect(self.path) as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
            conn.close()
            return None
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
            raise PeopleError(
                f"{self.path} is not a plain file — remove it; an administrator enrols people again"
            )
        if info.st_mode & 0o077:
            # Anyone who can read the file can try PINs offline; anyone who can write it can enrol themselves.
            raise PeopleError(
                f"{self.path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}) — as its owner run "
                f"`chmod 600 {self.path}`, then try again"
            )
        if info.st_uid not in (os.geteuid(), 0) and os.geteuid() != 0:
            raise PeopleError(
                f"{self.path} belongs to another account (uid {info.st_uid}) — run the station as the account "
                "that owns its home"
            )
        return None

    def _row(self, conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute("SELECT * FROM people WHERE key = ?", [_key(name)]).fetchone()
        return row

    def _existing(self, conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = self._row(conn, name)
        if row is None:
            raise PeopleError(
                f"{operator_name(name)} is not enrolled at this station — see `station people list`"
            )
        return row

    def _record(
        self,
        action: PeopleAction,
        *,
        person: str,
        role: Role | str,
        by: Actor | str,
        account: str,
        detail: str = "",
    ) -> None:
        record_people_event(
            self.audit,
            action=action.value,
            person=person,
            role=str(role),
            by=by.name if isinstance(by, Actor) else by,
            account=account,
            detail=detail,
        )

    @staticmethod
    def _need_administrator(by: Actor, what: str) -> None:
        if not by.administrator:
            raise PeopleError(
                f"{what} needs an administrator — {by.name} is not one (an administrator is root, a member of the "
                f"{Role.ADMIN.value} group, or a person enrolled as admin who signed in)"
            )

    # -- reading --------------------------------------------------------------------------------------

    def everyone(self) -> list[Person]:
        """Everyone enrolled, by name."""
        with self._connect(write=False) as conn:
            rows = conn.execute("SELECT * FROM people ORDER BY key").fetchall()
        return [_person(row) for row in rows]

    def get(self, name: str) -> Person | None:
        with self._connect(write=False) as conn:
            row = self._row(conn, name)
        return None if row is None else _person(row)

    def has_administrator(self) -> bool:
        return any(person.role is Role.ADMIN for person in self.everyone())

    # -- enrolling and changing -----------------------------------------------------------------------

    def enrol(
        self, name: str, role: Role, secret: str, *, by: Actor, kind: CredentialKind = CredentialKind.PIN
    ) -> Person:
        """Enrol a new person with their role and credential (administrators only)."""
        self._need_administrator(by, "enrolling a person")
        display = operator_name(name)
        check_new_secret(secret, kind, name=display)
        credential = hash_pin(secret)
        now = self._clock()
        with self._connect(write=True) as conn:
            existing = self._row(conn, display)
            if existing is not None:
                raise PeopleError(
                    f"{existing['name']} is already enrolled (as {Role(existing['role']).words}) — to give them a "
                    f"new credential use `station people reset {existing['name']}`"
                )
            return self._insert(
                conn, display, role, kind, credential, by=by, now=now, detail=f"credential: {kind.value}"
            )

    def enrol_os_account(self, login: str, role: Role, *, by: Actor, name: str | None = None) -> Person:
        """Enrol a person who signs in with their own OS account's password (checked through PAM at each
        sign-in; the store keeps only the login name).  Administrators only."""
        self._need_administrator(by, "enrolling a person")
        try:
            pwd.getpwnam(login)
        except KeyError:
            raise PeopleError(
                f"there is no OS account {login!r} on this PC — create it first (useradd), or enrol "
                "the person with a PIN or badge instead"
            ) from None
        display = operator_name(name or login)
        now = self._clock()
        with self._connect(write=True) as conn:
            existing = self._row(conn, display)
            if existing is not None:
                raise PeopleError(
                    f"{existing['name']} is already enrolled (as {Role(existing['role']).words})"
                )
            return self._insert(
                conn,
                display,
                role,
                CredentialKind.PAM,
                login,
                by=by,
                now=now,
                detail=f"credential: OS account {login} (PAM)",
            )

    def _insert(
        self,
        conn: sqlite3.Connection,
        display: str,
        role: Role,
        kind: CredentialKind,
        credential: str,
        *,
        by: Actor,
        now: float,
        detail: str,
    ) -> Person:
        """Add a person's row and record their enrolment (``credential``: a PIN/badge hash, or a login)."""
        conn.execute(
            "INSERT INTO people (key, name, role, kind, credential, failed_attempts, locked_until, enrolled_at, "
            "enrolled_by, changed_at) VALUES (?, ?, ?, ?, ?, 0, NULL, ?, ?, ?)",
            [_key(display), display, role.value, kind.value, credential, now, by.name, now],
        )
        # Recorded inside the store's transaction: if the audit log cannot record it, nobody is enrolled.
        self._record(
            PeopleAction.ENROLLED, person=display, role=role, by=by, account=by.account, detail=detail
        )
        return _person(self._existing(conn, display))

    def change(
        self,
        name: str,
        new_secret: str,
        *,
        by: Actor,
        old_secret: str | None = None,
        kind: CredentialKind | None = None,
    ) -> Person:
        """Change ``name``'s credential: with their old one (a wrong one counts as a failed attempt), or by
        an administrator."""
        if old_secret is None:
            self._need_administrator(by, "changing someone's credential without the old one")
        else:
            self.verify(name, old_secret, account=by.account, record_success=False)
        return self._set_credential(
            name,
            new_secret,
            by=by,
            kind=kind,
            old_secret=old_secret,
            action=PeopleAction.CREDENTIAL_CHANGED,
            detail="with the old credential" if old_secret is not None else "by an administrator",
        )

    def reset(self, name: str, new_secret: str, *, by: Actor, kind: CredentialKind | None = None) -> Person:
        """An administrator gives ``name`` a new credential (the lockout ends with it)."""
        self._need_administrator(by, "resetting a credential")
        return self._set_credential(name, new_secret, by=by, kind=kind, action=PeopleAction.CREDENTIAL_RESET)

    def _set_credential(
        self,
        name: str,
        new_secret: str,
        *,
        by: Actor,
        kind: CredentialKind | None,
        action: PeopleAction,
        old_secret: str | None = None,
        detail: str | None = None,
    ) -> Person:
        """Store ``name``'s new credential, end any lockout and record ``action`` (``detail`` None: the kind)."""
        with self._connect(write=True) as conn:
            row = self._existing(conn, name)
            new_kind = _settable_kind(row, kind)
            check_new_secret(new_secret, new_kind, name=row["name"])
            if old_secret is not None and new_secret == old_secret:
                raise PeopleError("the new credential is the old one — choose another")
            conn.execute(
                "UPDATE people SET credential = ?, kind = ?, failed_attempts = 0, locked_until = NULL, "
                "changed_at = ? WHERE key = ?",
                [hash_pin(new_secret), new_kind.value, self._clock(), row["key"]],
            )
            self._record(
                action,
                person=row["name"],
                role=row["role"],
                by=by,
                account=by.account,
                detail=detail if detail is not None else f"credential: {new_kind.value}",
            )
            row = self._existing(conn, name)
        return _person(row)

    def remove(self, name: str, *, by: Actor) -> None:
        """An administrator removes ``name``: they can no longer sign in (their records stay in the audit log)."""
        self._need_administrator(by, "removing a person")
        with self._connect(write=True) as conn:
            row = self._existing(conn, name)
            conn.execute("DELETE FROM people WHERE key = ?", [row["key"]])
            self._record(
                PeopleAction.REMOVED, person=row["name"], role=row["role"], by=by, account=by.account
            )

    def unlock(self, name: str, *, by: Actor) -> Person:
        """An administrator ends ``name``'s lockout (and forgets their failed attempts)."""
        self._need_administrator(by, "unlocking a person")
        with self._connect(write=True) as conn:
            row = self._existing(conn, name)
            conn.execute(
                "UPDATE people SET failed_attempts = 0, locked_until = NULL WHERE key = ?", [row["key"]]
            )
            was = f"locked until {clock_text(row['locked_until'])}" if row["locked_until"] else "not locked"
            self._record(
                PeopleAction.UNLOCKED,
                person=row["name"],
                role=row["role"],
                by=by,
                account=by.account,
                detail=f"was {was}, {row['failed_attempts']} failed attempt(s)",
            )
            row = self._existing(conn, name)
        return _person(row)

    # -- signing in -----------------------------------------------------------------------------------

    def verify(self, name: str, secret: str, *, account: str, record_success: bool = True) -> SignedIn:
        """Check ``name``'s credential; return their elevated session, or raise :class:`SignInRefused`.

        ``account`` is the OS account the attempt came from (the kiosk's), recorded with it.  A wrong
        credential counts against the person; ``max_failed_attempts`` in a row lock them out for
        ``lockout_minutes`` (kept in the store: a restart does not reset it).  An unknown name is recorded
        without the text typed (it may be a PIN typed in the wrong field).
        """
        limit = self.settings.max_failed_attempts
        with self._connect(write=True) as conn:
            try:
                row = self._row(conn, name)
            except StationError as exc:
                raise SignInRefused(str(exc)) from exc
            now = self._clock()
            if row is None:
                hash_pin(
                    secret
                )  # as slow as a real check: the answer's timing says nothing about who is enrolled
                self._record(
                    PeopleAction.SIGN_IN_FAILED,
                    person="",
                    role="",
                    by=account,
                    account=account,
                    detail="unknown name",
                )
                raise SignInRefused(
                    "not signed in: that name or credential is wrong — check both and try again, or ask an "
                    "administrator to enrol you (`station people add`)"
                )
            person, role = str(row["name"]), Role(row["role"])
            locked_until = row["locked_until"]
            if locked_until is not None and locked_until > now:
                self._record(
                    PeopleAction.SIGN_IN_FAILED,
                    person=person,
                    role=role,
                    by=account,
                    account=account,
                    detail=f"locked out until {clock_text(locked_until)}",
                )
                raise SignInRefused(
                    f"{person} is locked out after {limit} wrong credentials, until {clock_text(locked_until)} — "
                    f"wait, or ask an administrator (`station people unlock {person}`)",
                    locked_until=locked_until,
                )
            if self._credential_matches(row, secret):
                return self._start_session(conn, row, account=account, record_success=record_success)
            refusal = self._count_wrong_credential(conn, row, account=account, now=now)
        raise refusal

    def _credential_matches(self, row: sqlite3.Row, secret: str) -> bool:
        """Whether ``secret`` is the credential stored in ``row`` (a PIN/badge hash, or an OS account's password)."""
        person = str(row["name"])
        try:
            if row["kind"] == CredentialKind.PAM.value:
                return os_password_matches(row["credential"], secret, service=self.settings.pam_service)
            return pin_matches(secret, row["credential"])
        except AdminPinError:
            raise SignInRefused(
                f"the stored credential of {person} is damaged — an administrator resets it "
                f"(`station people reset {person}`)"
            ) from None

    def _start_session(
        self, conn: sqlite3.Connection, row: sqlite3.Row, *, account: str, record_success: bool
    ) -> SignedIn:
        """The right credential: forget the failed attempts and open the person's session."""
        person, role = str(row["name"]), Role(row["role"])
        conn.execute("UPDATE people SET failed_attempts = 0, locked_until = NULL WHERE key = ?", [row["key"]])
        started = self._clock()  # after the (slow) check: the whole session is the person's
        session = SignedIn(
            person=person,
            role=role,
            started_at=started,
            expires_at=started + self.settings.session_minutes * 60,
            account=account,
        )
        if record_success:
            self._record(
                PeopleAction.SIGNED_IN,
                person=person,
                role=role,
                by=person,
                account=account,
                detail=f"until {clock_text(session.expires_at)}",
            )
        return session

    def _count_wrong_credential(
        self, conn: sqlite3.Connection, row: sqlite3.Row, *, account: str, now: float
    ) -> SignInRefused:
        """Count a wrong credential against ``row``'s person (locking them out at the limit), record it, and
        return the refusal to raise once the count is committed."""
        limit = self.settings.max_failed_attempts
        lockout_s = self.settings.lockout_minutes * 60
        person, role = str(row["name"]), Role(row["role"])
        failed = int(row["failed_attempts"]) + 1
        if failed >= limit:
            until = now + lockout_s
            conn.execute(
                "UPDATE people SET failed_attempts = 0, locked_until = ? WHERE key = ?",
                [until, row["key"]],
            )
            self._record(
                PeopleAction.LOCKED_OUT,
                person=person,
                role=role,
                by=account,
                account=account,
                detail=f"{limit} wrong credentials in a row; until {clock_text(until)}",
            )
            # Committed below although the sign-in is refused: the lockout must outlive this process.
            return SignInRefused(
                f"wrong credential, {limit} times in a row — {person} is locked out until {clock_text(until)}; "
                f"wait, or ask an administrator (`station people unlock {person}`)",
                locked_until=until,
            )
        else:
            conn.execute("UPDATE people SET failed_attempts = ? WHERE key = ?", [failed, row["key"]])
            self._record(
                PeopleAction.SIGN_IN_FAILED,
                person=person,
                role=role,
                by=account,
                account=account,
                detail=f"wrong credential ({failed} of {limit})",
            )
            left = limit - failed
            return SignInRefused(
                f"not signed in: that name or credential is wrong — {left} "
                f"tr{'y' if left == 1 else 'ies'} left before {person} is locked out for "
                f"{self.settings.lockout_minutes:g} min"
            )

    def check_session(self, session: SignedIn) -> SignedIn:
        """Raise :class:`PeopleError` unless ``session`` still holds: not expired, the person still
        enrolled with that role (an administrator may have removed them meanwhile)."""
        if session.expired(self._clock()):
            raise PeopleError(
                f"{session.person}'s session ended at {clock_text(session.expires_at)} — sign in again"
            )
        current = self.get(session.person)
        if current is None or current.role is not session.role:
            raise PeopleError(
                f"{session.person} is no longer enrolled as {session.role.words} — sign in again"
            )
        return session

    def sign_out(self, session: SignedIn, *, expired: bool = False) -> None:
        """Record the end of a session (signed out, or run out of time)."""
        self._record(
            PeopleAction.SIGNED_OUT,
            person=session.person,
            role=session.role,
            by=session.person,
            account=session.account,
            detail="session expired" if expired else "signed out",
        )


def bootstrap_actor(home: StationHome, people: People, uid: int) -> Actor | None:
    """The account that may enrol the station's FIRST administrator when it is no OS administrator itself:
    the owner of the station home (who could edit its files anyway), while nobody is enrolled as admin.
    The caller uses it for enrolling an administrator only."""
    if people.has_administrator():
        return None
    try:
        owner = home.root.stat().st_uid
    except FileNotFoundError:
        return None
    if owner != uid:
        return None
    name = account_name(uid)
    return Actor(name=name, account=name, administrator=True)


def _settable_kind(row: sqlite3.Row, kind: CredentialKind | None) -> CredentialKind:
    """The kind of a credential the station sets (PIN or badge); an OS account's password is the OS's."""
    chosen = kind or CredentialKind(row["kind"])
    if chosen is CredentialKind.PAM:
        raise PeopleError(
            f"{row['name']} signs in with the OS account {row['credential']}'s password — change it with `passwd` "
            "(or give them a PIN: add --badge for a badge code, or remove and enrol them again)"
        )
    return chosen


def _person(row: sqlite3.Row) -> Person:
    return Person(
        name=row["name"],
        role=Role(row["role"]),
        kind=CredentialKind(row["kind"]),
        failed_attempts=int(row["failed_attempts"]),
        locked_until=row["locked_until"],
        enrolled_at=float(row["enrolled_at"]),
        enrolled_by=row["enrolled_by"],
        changed_at=float(row["changed_at"]),
    )
