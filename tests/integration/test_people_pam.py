"""A quality lead may sign in at the kiosk with their own OS account's password, checked through PAM
(python-pam over the PC's /etc/pam.d/login) — against a real account made by `useradd` for the test and
removed after.  The store keeps only the login name; wrong passwords count toward the same persisted
lockout as PINs."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator

import pytest

from station.audit import AuditLog
from station.audit.people import people_events
from station.config import PeopleSettings
from station.home import StationHome
from station.people import (
    Actor,
    CredentialKind,
    People,
    PeopleError,
    SignInRefused,
    os_password_matches,
    people_path,
)
from station.roles import Role

pytestmark = pytest.mark.integration

PASSWORD = "Correct-Horse-7731"
ROOT = Actor(name="root", account="root", administrator=True)
TIMEOUT_S = 60


@pytest.fixture
def os_account() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail(
            "this test creates an OS account with useradd and checks its password: run it as root (CI does)"
        )
    name = f"wps-pam-{os.getpid() % 100000}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    try:
        subprocess.run(
            ["chpasswd"],
            input=f"{name}:{PASSWORD}\n",
            text=True,
            check=True,
            capture_output=True,
            timeout=TIMEOUT_S,
        )
        pwd.getpwnam(name)
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=TIMEOUT_S)


@pytest.fixture
def home(tmp_path) -> StationHome:
    return StationHome(tmp_path / "home").create()


def test_pam_checks_a_real_account_s_password(os_account):
    assert os_password_matches(os_account, PASSWORD)
    assert not os_password_matches(os_account, "wrong-password")
    assert not os_password_matches("wps-no-such-account", PASSWORD)


def test_a_quality_lead_signs_in_with_their_os_password_and_wrong_ones_lock_them_out(home, os_account):
    with AuditLog(home.audit_db) as audit:
        people = People(home, audit, settings=PeopleSettings(max_failed_attempts=2, lockout_minutes=5))
        person = people.enrol_os_account(os_account, Role.QUALITY, by=ROOT, name="Quinn Lee")
        assert person.kind is CredentialKind.PAM
        assert PASSWORD.encode() not in people_path(home).read_bytes()
        session = people.verify("Quinn Lee", PASSWORD, account="kiosk")
        assert (session.person, session.role) == ("Quinn Lee", Role.QUALITY)

        with pytest.raises(SignInRefused, match="1 try left"):
            people.verify("Quinn Lee", "not-it", account="kiosk")
        with pytest.raises(SignInRefused, match="locked out until"):
            people.verify("Quinn Lee", "not-it", account="kiosk")
        # A fresh store (a restarted window or service) still refuses, even the right password.
        with pytest.raises(SignInRefused, match="locked out"):
            People(home, audit).verify("Quinn Lee", PASSWORD, account="kiosk")
        # Their password is the OS's: the station does not change or reset it.
        with pytest.raises(PeopleError, match="passwd"):
            people.reset("Quinn Lee", "246813", by=ROOT)
        with pytest.raises(PeopleError, match="no OS account"):
            people.enrol_os_account("wps-no-such-account", Role.QUALITY, by=ROOT)
        enrolled = [e for e in people_events(audit, person="Quinn Lee") if e.action == "enrolled"][0]
        assert enrolled.detail == f"credential: OS account {os_account} (PAM)"
        assert PASSWORD.encode() not in home.audit_db.read_bytes()


def test_station_people_add_os_account(home, os_account):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "station",
            "--home",
            str(home.root),
            "people",
            "add",
            "Quinn",
            "--role",
            "quality",
            "--os-account",
            os_account,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr
    assert f"signs in with the password of OS account {os_account}" in run.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "station", "--home", str(home.root), "people", "list"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert "OS password" in listed.stdout
