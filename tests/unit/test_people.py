"""People, not a shared PIN: each quality lead and administrator has their own credential, stored only
as a salted hash; a sign-in gives a session that expires; wrong credentials lock that person out, and
the lockout outlives the process; changing a credential needs the old one or an administrator; every
change and sign-in is in the audit log with who did it — never the secret."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from station.admin import PIN_SCHEME, pin_matches
from station.audit import AuditLog
from station.audit.people import people_events
from station.config import PeopleSettings, load_config
from station.errors import ConfigError
from station.home import StationHome
from station.people import (
    Actor,
    CredentialKind,
    People,
    PeopleAction,
    PeopleError,
    SignInRefused,
    bootstrap_actor,
    people_path,
    role_from_word,
)
from station.roles import Role

ADMIN = Actor(name="root", account="root", administrator=True)
KIOSK = "line3-kiosk"
QUINN_PIN = "482916"


class Clock:
    """Wall-clock time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def home(tmp_path) -> StationHome:
    return StationHome(tmp_path / "home").create()


@pytest.fixture
def audit(home):
    log = AuditLog(home.audit_db)
    yield log
    log.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def store(home, audit, clock, **settings) -> People:
    return People(home, audit, settings=PeopleSettings(**settings), clock=clock)


def test_a_credential_is_stored_salted_and_hashed_in_a_private_file_with_the_same_scheme_as_the_admin_pin(
    home, audit, clock
):
    people = store(home, audit, clock)
    person = people.enrol("Quinn Lee", Role.QUALITY, QUINN_PIN, by=ADMIN)
    assert (person.name, person.role, person.kind, person.enrolled_by) == (
        "Quinn Lee",
        Role.QUALITY,
        CredentialKind.PIN,
        "root",
    )
    path = people_path(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == home.root.stat().st_uid
    raw = path.read_bytes()
    assert QUINN_PIN.encode() not in raw
    (stored,) = sqlite3.connect(path).execute("SELECT credential FROM people").fetchone()
    assert stored.startswith(f"{PIN_SCHEME}$") and pin_matches(QUINN_PIN, stored)
    # Two people with the same PIN get different hashes (salted).
    people.enrol("Ada", Role.ADMIN, QUINN_PIN, by=ADMIN)
    hashes = [row[0] for row in sqlite3.connect(path).execute("SELECT credential FROM people")]
    assert len(set(hashes)) == 2
    # The audit log names who enrolled whom, never the secret.
    event = people_events(audit, person="Quinn Lee")[0]
    assert (event.action, event.person, event.role, event.by) == (
        "enrolled",
        "Quinn Lee",
        Role.QUALITY.value,
        "root",
    )
    assert QUINN_PIN.encode() not in home.audit_db.read_bytes()
    assert audit.verify().ok


def test_weak_or_odd_credentials_and_duplicate_names_are_refused_with_what_to_do(home, audit, clock):
    people = store(home, audit, clock)
    for secret, words in (
        ("12", "at least 4"),
        ("0000", "repeat one character"),
        (" 4829", "start or end"),
        ("quinn", "the person's name"),
    ):
        with pytest.raises(PeopleError, match=words):
            people.enrol("Quinn", Role.QUALITY, secret, by=ADMIN)
    with pytest.raises(PeopleError, match="at least 6"):
        people.enrol("Quinn", Role.QUALITY, "B123", by=ADMIN, kind=CredentialKind.BADGE)
    people.enrol("Quinn", Role.QUALITY, QUINN_PIN, by=ADMIN)
    with pytest.raises(PeopleError, match="already enrolled .*station people reset Quinn"):
        people.enrol("  QUINN ", Role.ADMIN, "975310", by=ADMIN)
    assert [p.name for p in people.everyone()] == ["Quinn"]


def test_only_an_administrator_enrols_resets_removes_or_unlocks(home, audit, clock):
    people = store(home, audit, clock)
    people.enrol("Quinn", Role.QUALITY, QUINN_PIN, by=ADMIN)
    quinn = Actor.for_person(people.verify("Quinn", QUINN_PIN, account=KIOSK), account=KIOSK)
    assert not quinn.administrator
    for attempt in (
        lambda: people.enrol("Mallory", Role.ADMIN, "777123", by=quinn),
        lambda: people.reset("Quinn", "135792", by=quinn),
        lambda: people.remove("Quinn", by=quinn),
        lambda: people.unlock("Quinn", by=quinn),
        lambda: people.change("Quinn", "135792", by=quinn),
    ):
        with pytest.raises(PeopleError, match="needs an administrator"):
            attempt()
    assert people.get("Mallory") is None
    # An administrator who signed in at a kiosk acts as one.
    people.enrol("Ada", Role.ADMIN, "864209", by=ADMIN)
    ada = Actor.for_person(people.verify("ada", "864209", account=KIOSK), account=KIOSK)
    assert ada.administrator and ada.name == "Ada"
    people.enrol("Mallory", Role.TECHNICIAN, "777123", by=ada)
    people.remove("Mallory", by=ada)
    assert people.get("Mallory") is None
    removed = people_events(audit, person="Mallory")[0]
    assert (removed.action, removed.by, removed.account) == ("removed", "Ada", KIOSK)
    # root is an administrator by OS account.
    assert Actor.for_account(0).administrator


def test_a_sign_in_gives_a_session_that_expires_after_the_configured_time(home, audit, clock):
    people = store(home, audit, clock, session_minutes=10)
    people.enrol("Quinn", Role.QUALITY, QUINN_PIN, by=ADMIN)
    session = people.verify("quinn", QUINN_PIN, account=KIOSK)
    assert (session.person, session.role, session.account) == ("Quinn", Role.QUALITY, KIOSK)
    assert session.expires_at - session.started_at == 600
    assert people.check_session(session) is session
    clock.now += 599
    assert not session.expired(clock.now) and session.remaining_s(clock.now) == 1
    clock.now += 1
    assert session.expired(clock.now)
    with pytest.raises(PeopleError, match="session ended at .* sign in again"):
        people.check_session(session)
    people.sign_out(session, expired=True)
    actions = [e.action for e in people_events(audit, person="Quinn")]
    assert actions[:2] == ["signed_out", "signed_in"]


def test_a_removed_person_s_session_no_longer_holds(home, audit, clock):
    people = store(home, audit, clock)
    people.enrol("Quinn", Role.QUALITY, QUINN_PIN, by=ADMIN)
    session = people.verify("Quinn", QUINN_PIN, account=KIOSK)
    people.remove("Quinn", by=ADMIN)
    with pytest.raises(PeopleError, match="no longer enrolled"):
        people.check_session(session)
    with pytest.raises(SignInRefused, match="wrong"):
        people.verify("Quinn", QUINN_PIN, account=KIOSK)


def test_wrong_credentials_lock_the_person_out_and_the_lockout_survives_a_fresh_store(home, audit, clock):
    people = store(home, audit, clock, max_failed_attempts=3, lockout_minutes=10)
    people.enrol("Quinn", Role.QUALITY, QUINN_PIN, by=ADMIN)
    with pytest.raises(SignInRefused, match="2 tries left"):
        people.verify("Quinn", "111222", account=KIOSK)
    with pytest.raises(SignInRefused, match="1 try left"):
        people.verify("Quinn", "111222", account=KIOSK)
    with pytest.raises(SignInRefused, match="3 times in a row — Quinn is locked out until") as locked:
        people.verify("Quinn", "111222", account=KIOSK)
    assert locked.value.locked_until == clock.now + 600

    # A new process (a fresh object over the same home) still refuses — even the right credential.
    again = store(home, audit, clock, max_failed_attempts=3, lockout_minutes=10)
    with pytest.raises(SignInRefused, match="locked out .* until .*station people unlock Quinn") as still:
        again.verify("Quinn", QUINN_PIN, account=KIOSK)
    assert still.value.locked_until == locked.value.locked_until
    assert again.get("Quinn").locked(clock.now)
    # When the lockout ends the right credential works again.
    clock.now += 600
    assert again.verify("Quinn", QUINN_PIN, account=KIOSK).person == "Quinn"
    actions = [e.action for e in people_events(audit, person="Quinn")][::-1]
    assert actions == [
        "enrolled",
        "sign_in_failed",
        "sign_in_failed",
        "locked_out",
        "sign_in_failed",
        "signed_in",
    ]
    assert all(QUINN_PIN not in e.detail and "111222" not in e.detail for e in people_events(audit))


def test_an_administrator_unlocks_early_and_a_right_credential_forgets_earlier_mistakes(home, audit, clock):
    people = store(home, audit, clock, max_failed_attempts=2)
    people.enrol("Quinn", Role.QUALITY, QUINN_PIN, by=ADMIN)
    with pytest.raises(SignInRefused, match="1 try left"):
        people.verify("Quinn", "000111", account=KIOSK)
    people.verify("Quinn", QUINN_PIN, account=KIOSK)
    with pytest.raises(SignInRefused, match="1 try left"):  # counted afresh after a right one
        people.verify("Quinn", "000111", account=KIOSK)
    with pytest.raises(SignInRefused, match="locked out"):
        people.verify("Quinn", "000111", account=KIOSK)
    people.unlock("Quinn", by=ADMIN)
    assert not people.get("Quinn").locked(clock.now)
    assert people.verify("Quinn", QUINN_PIN, account=KIOSK).role is Role.QUALITY
    unlocked = [e for e in people_events(audit, person="Quinn") if e.action == "unlocked"][0]
    assert unlocked.by == "root" and "was locked until" in unlocked.detail


def test_an_unknown_name_is_refused_and_recorded_without_what_was_typed(home, audit, clock):
    people = store(home, audit, clock)
    with pytest.raises(SignInRefused, match="station people add"):
        people.verify("482916", "whatever", account=KIOSK)  # a PIN typed in the name field
    event = people_events(audit)[0]
    assert (event.action, event.person, event.detail) == ("sign_in_failed", "", "unknown name")
    assert b"482916" not in home.audit_db.read_bytes()


def test_changing_a_credential_needs_the_old_one_or_an_administrator(home, audit, clock):
    people = store(home, audit, clock, max_failed_attempts=5)
    people.enrol("Quinn", Role.QUALITY, QUINN_PIN, by=ADMIN)
    quinn = Actor(name="Quinn", account=KIOSK, administrator=False)
    with pytest.raises(SignInRefused, match="wrong"):
        people.change("Quinn", "135792", by=quinn, old_secret="999888")
    assert people.get("Quinn").failed_attempts == 1  # a wrong old credential counts like a wrong sign-in
    with pytest.raises(PeopleError, match="is the old one"):
        people.change("Quinn", QUINN_PIN, by=quinn, old_secret=QUINN_PIN)
    people.change("Quinn", "135792", by=quinn, old_secret=QUINN_PIN)
    with pytest.raises(SignInRefused):
        people.verify("Quinn", QUINN_PIN, account=KIOSK)
    assert people.verify("Quinn", "135792", account=KIOSK).person == "Quinn"
    # An administrator changes it without the old one; a badge instead of a PIN.
    people.change("Quinn", "BADGE-7731", by=ADMIN, kind=CredentialKind.BADGE)
    assert people.get("Quinn").kind is CredentialKind.BADGE
    assert people.verify("Quinn", "BADGE-7731", account=KIOSK).person == "Quinn"
    details = [e.detail for e in people_events(audit, person="Quinn") if e.action == "credential_changed"]
    assert details == ["by an administrator", "with the old credential"]


def test_an_administrator_reset_gives_a_new_credential_and_ends_the_lockout(home, audit, clock):
    people = store(home, audit, clock, max_failed_attempts=1)
    people.enrol("Quinn", Role.QUALITY, QUINN_PIN, by=ADMIN)
    with pytest.raises(SignInRefused, match="locked out"):
        people.verify("Quinn", "000111", account=KIOSK)
    people.reset("Quinn", "246813", by=ADMIN)
    assert people.get("Quinn").locked_until is None
    assert people.verify("Quinn", "246813", account=KIOSK).person == "Quinn"
    reset = people_events(audit, person="Quinn")[1]
    assert (reset.action, reset.by) == (PeopleAction.CREDENTIAL_RESET.value, "root")


def test_a_store_open_to_other_users_is_refused(home, audit, clock):
    people = store(home, audit, clock)
    people.enrol("Quinn", Role.QUALITY, QUINN_PIN, by=ADMIN)
    os.chmod(people_path(home), 0o644)
    with pytest.raises(PeopleError, match="open to other users .*chmod 600"):
        people.verify("Quinn", QUINN_PIN, account=KIOSK)


def test_the_home_s_owner_may_enrol_the_first_administrator_only(home, audit, clock):
    people = store(home, audit, clock)
    owner = home.root.stat().st_uid
    first = bootstrap_actor(home, people, owner)
    assert first is not None and first.administrator
    assert bootstrap_actor(home, people, owner + 12345) is None
    people.enrol("Ada", Role.ADMIN, "864209", by=first)
    assert bootstrap_actor(home, people, owner) is None


def test_roles_are_typed_as_words_and_people_settings_are_checked(tmp_path):
    assert role_from_word("quality") is Role.QUALITY and role_from_word("welma-admin") is Role.ADMIN
    with pytest.raises(PeopleError, match="technician, quality, admin"):
        role_from_word("boss")
    toml = tmp_path / "station.toml"
    toml.write_text("[people]\nsession_minutes = 5\nmax_failed_attempts = 3\n")
    assert load_config(toml).people == PeopleSettings(session_minutes=5.0, max_failed_attempts=3)
    toml.write_text("[station]\nproduction = true\n[people]\nshared_admin_pin = true\n")
    with pytest.raises(ConfigError, match="refused in production mode .*station people add"):
        load_config(toml)
    toml.write_text("[people]\nlockout = 5\n")
    with pytest.raises(ConfigError, match="lockout"):
        load_config(toml)
