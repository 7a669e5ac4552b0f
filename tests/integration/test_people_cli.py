"""`station people …` and `station admin set-pin` as an administrator runs them — real `station`
processes, credentials on standard input (never argv), and an ordinary OS account created for the test
(`useradd`, removed after) that is refused what needs an administrator."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from station.admin import set_pin, verify_pin
from station.audit import AuditLog
from station.audit.people import people_events
from station.home import StationHome
from station.people import people_path

pytestmark = pytest.mark.integration

QUINN_PIN = "482916"
ADA_BADGE = "BADGE-55120"
TIMEOUT_S = 60


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


# The interpreter lives under root's private folder (pyenv), which another account cannot run: the child
# starts as root, loads the station's modules, then becomes the ordinary account for good (groups, gid,
# uid) before the command runs — from then on the kernel sees only that account.
AS_ACCOUNT = """
import os, sys, getpass, sqlite3, sqlite_utils, encodings.ascii, encodings.latin_1
import station.cli as cli
cli.build_parser()
os.setgroups([]); os.setgid(int(os.environ.pop("TEST_GID"))); os.setuid(int(os.environ.pop("TEST_UID")))
assert os.getuid() != 0 and os.geteuid() != 0
sys.exit(cli.main(sys.argv[1:]))
"""


def station(
    home: Path, *args: str, stdin: str = "", account: Account | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `station --home HOME ARGS…` with ``stdin`` (as ``account`` when given)."""
    environment = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **(env or {})}
    command = [sys.executable, "-m", "station"]
    if account is not None:
        environment.update(HOME=str(home.parent), TEST_UID=str(account.uid), TEST_GID=str(account.gid))
        command = [sys.executable, "-c", AS_ACCOUNT]
    return subprocess.run(
        [*command, "--home", str(home), *args],
        input=stdin,
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=environment,
        check=False,
    )


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def technician_account() -> Iterator[Account]:
    """An ordinary OS account (in no welma-* group), removed after the test."""
    if os.geteuid() != 0:
        pytest.fail("this test creates an OS account with useradd: run it as root (CI does)")
    name = f"wps-people-{os.getpid() % 100000}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    try:
        entry = pwd.getpwnam(name)
        yield Account(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=TIMEOUT_S)


@pytest.fixture
def account_home(technician_account) -> Iterator[Path]:
    """A station home the ordinary account owns (outside root's private pytest folder)."""
    folder = Path(tempfile.mkdtemp(prefix="wps-people-"))
    os.chown(folder, technician_account.uid, technician_account.gid)
    try:
        yield folder / "home"
    finally:
        shutil.rmtree(folder)


def events(home: Path):
    with AuditLog(StationHome(home).audit_db) as audit:
        return people_events(audit)


def test_an_administrator_enrols_lists_resets_unlocks_and_removes_people_with_secrets_on_stdin(home):
    added = station(home, "people", "add", "Quinn Lee", "--role", "quality", stdin=f"{QUINN_PIN}\n")
    assert added.returncode == 0, added.stderr
    assert "Quinn Lee enrolled as quality lead (signs in with a PIN); recorded by root" in added.stdout
    badge = station(home, "people", "add", "Ada", "--role", "admin", "--badge", stdin=f"{ADA_BADGE}\n")
    assert badge.returncode == 0, badge.stderr

    listed = station(home, "people", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "CREDENTIAL", "STATE", "ENROLLED", "BY"]
    assert "Ada" in lines[1] and "administrator" in lines[1] and "badge code" in lines[1]
    assert "Quinn Lee" in lines[2] and "quality lead" in lines[2] and "can sign in" in lines[2]

    again = station(home, "people", "add", "quinn lee", "--role", "admin", stdin="975310\n")
    assert (
        again.returncode == 1
        and "already enrolled" in again.stderr
        and "station people reset" in again.stderr
    )
    weak = station(home, "people", "add", "Zed", "--role", "quality", stdin="0000\n")
    assert weak.returncode == 1 and "repeat one character" in weak.stderr
    missing = station(home, "people", "add", "Zed", "--role", "quality")
    assert missing.returncode == 1 and "standard input" in missing.stderr

    assert station(home, "people", "reset", "Quinn Lee", stdin="135792\n").returncode == 0
    unlocked = station(home, "people", "unlock", "Quinn Lee")
    assert unlocked.returncode == 0 and "Quinn Lee can sign in again" in unlocked.stdout
    removed = station(home, "people", "remove", "Ada")
    assert removed.returncode == 0 and "Ada removed" in removed.stdout
    assert "Ada" not in station(home, "people", "list").stdout

    recorded = events(home)
    assert [(e.action, e.person, e.by) for e in recorded][::-1] == [
        ("enrolled", "Quinn Lee", "root"),
        ("enrolled", "Ada", "root"),
        ("credential_reset", "Quinn Lee", "root"),
        ("unlocked", "Quinn Lee", "root"),
        ("removed", "Ada", "root"),
    ]
    # No secret anywhere: the audit log, the store, what the commands printed.
    audit_bytes = StationHome(home).audit_db.read_bytes()
    store_bytes = people_path(StationHome(home)).read_bytes()
    printed = "".join(
        run.stdout + run.stderr for run in (added, badge, listed, again, weak, unlocked, removed)
    )
    every_file = b"".join(path.read_bytes() for path in home.rglob("*") if path.is_file())  # logs included
    for secret in (QUINN_PIN, ADA_BADGE, "135792"):
        assert (
            secret.encode() not in audit_bytes
            and secret.encode() not in store_bytes
            and secret not in printed
        )
        assert secret.encode() not in every_file


def test_an_ordinary_account_is_refused_unless_an_enrolled_administrator_vouches_for_it(
    account_home, technician_account
):
    home = account_home
    me = technician_account
    # The home's owner enrols the station's first administrator (nobody else could yet)…
    first = station(home, "people", "add", "Ada", "--role", "admin", stdin="864209\n", account=me)
    assert first.returncode == 0, first.stderr
    assert f"recorded by {me.name}" in first.stdout
    assert people_path(StationHome(home)).stat().st_uid == me.uid
    # …but not anyone else without an administrator.
    refused = station(home, "people", "add", "Mallory", "--role", "quality", stdin="777123\n", account=me)
    assert refused.returncode == 1
    assert (
        "needs an administrator" in refused.stderr
        and "welma-admin" in refused.stderr
        and "--as" in refused.stderr
    )
    for action in (("reset", "Ada"), ("unlock", "Ada"), ("remove", "Ada")):
        run = station(home, "people", *action, stdin="111333\n", account=me)
        assert run.returncode == 1 and "needs an administrator" in run.stderr, action
    # An enrolled administrator types her credential first (--as), then the new person's.
    vouched = station(
        home,
        "people",
        "add",
        "Quinn",
        "--role",
        "quality",
        "--as",
        "Ada",
        stdin=f"864209\n{QUINN_PIN}\n",
        account=me,
    )
    assert vouched.returncode == 0, vouched.stderr
    quinn = events(home)[0]
    assert (quinn.action, quinn.person, quinn.by, quinn.account) == ("enrolled", "Quinn", "Ada", me.name)
    # A wrong administrator credential enrols nobody.
    wrong = station(
        home, "people", "add", "Mallory", "--role", "admin", "--as", "Ada", stdin="000111\nx\n", account=me
    )
    assert wrong.returncode == 1 and "wrong" in wrong.stderr
    # Quinn changes her own PIN with the old one; a wrong old one changes nothing.
    bad = station(home, "people", "change", "Quinn", stdin="999999\n246813\n", account=me)
    assert bad.returncode == 1 and "wrong" in bad.stderr
    good = station(home, "people", "change", "Quinn", stdin=f"{QUINN_PIN}\n246813\n", account=me)
    assert good.returncode == 0, good.stderr
    assert events(home)[0].detail == "with the old credential"


def test_set_pin_needs_the_current_pin_unless_an_administrator_runs_it(account_home, technician_account):
    home = account_home
    me = technician_account
    first = station(home, "admin", "set-pin", stdin="2468\n", account=me)
    assert first.returncode == 0 and "admin PIN set" in first.stdout, first.stderr

    # Replacing it: the current PIN first, then the new one; a wrong current PIN changes nothing.
    wrong = station(home, "admin", "set-pin", stdin="1357\n9753\n", account=me)
    assert (
        wrong.returncode == 1
        and "not the current admin PIN" in wrong.stderr
        and "welma-admin" in wrong.stderr
    )
    assert verify_pin(StationHome(home), "2468")
    # The new PIN in the documented variable still needs the current one.
    env_only = station(home, "admin", "set-pin", env={"STATION_ADMIN_PIN": "9753"}, account=me)
    assert env_only.returncode == 1 and "current admin PIN is needed" in env_only.stderr
    right = station(home, "admin", "set-pin", stdin="2468\n9753\n", account=me)
    assert right.returncode == 0 and "admin PIN changed" in right.stdout, right.stderr
    assert verify_pin(StationHome(home), "9753")

    # root is an administrator: no current PIN asked.
    by_root = station(home, "admin", "set-pin", stdin="8642\n")
    assert by_root.returncode == 0, by_root.stderr
    assert verify_pin(StationHome(home), "8642")
    assert [(e.action, e.by, e.detail) for e in events(home)][:3] == [
        ("admin_pin_set", "root", "by an administrator account"),
        ("admin_pin_set", me.name, "with the current PIN"),
        ("admin_pin_set", me.name, "first PIN"),
    ]


def test_production_mode_refuses_the_shared_admin_pin_and_says_to_enrol_people(home):
    StationHome(home).create()
    set_pin(StationHome(home), "2468")
    StationHome(home).config_file.write_text("[station]\nproduction = true\n")
    run = station(home, "admin", "set-pin", stdin="9753\n")
    assert run.returncode == 1
    assert "production mode" in run.stderr and "station people add NAME --role quality|admin" in run.stderr
    assert verify_pin(StationHome(home), "2468")
