"""The station service serving kiosk sign-in and the commands that once ran on the home itself, with real OS
accounts (``useradd``, removed at teardown even on failure) and a real `station serve` owning the home.

* Kiosk sign-in: a person's own credential is checked by the service; wrong N times → locked, and still locked
  after the service process is killed and started again on the same home.  A right sign-in gives a session
  token bound to the OS account that signed in: a request carrying it gets the person's role, and the
  service's record names both the OS account and the person; another account presenting it is refused.
  A credential changes with the old one, or by an administrator's session — never otherwise.
* A quality account backs up and verifies the audit log through the service (the backup written by its own
  command, 0640); a technician is refused both; an administrator account sets the admin PIN and production
  mode, a quality account is refused production mode; the service's records name the OS accounts.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from station.audit import AuditLog
from station.home import StationHome
from station.people import Actor, People
from station.pki import CertificateAuthority
from station.roles import Role
from tests.helpers.service import account_python, os_accounts, running_service, service_pid

pytestmark = pytest.mark.integration

PASSPHRASE = "service requests passphrase"
QUINN_PIN = "4812"
ADA_PIN = "7395"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} → {done.returncode}: {done.stderr}")
    return done


@dataclass
class Station:
    base: Path
    home: StationHome
    socket: Path
    service: str
    tech: str
    quality: str
    admin: str


@pytest.fixture
def station() -> Iterator[Station]:
    """A line PC's layout without boards: the home owned by a service account (0700), two people enrolled
    (a quality lead and an administrator, each with their own PIN), accounts in welma-tech, welma-quality and
    welma-admin.  Everything made here is removed at teardown."""
    roles = {"service": None, "tech": Role.TECHNICIAN, "quality": Role.QUALITY, "admin": Role.ADMIN}
    with os_accounts("wr", roles) as names:
        base = Path(tempfile.mkdtemp(prefix="welma-req-"))
        try:
            base.chmod(0o711)
            home = StationHome(base / "home").create()
            home.config_file.write_text(
                '[station]\nname = "line-1"\n\n[people]\nmax_failed_attempts = 3\nlockout_minutes = 30\n'
            )
            root = Actor(name="root", account="root", administrator=True)
            with AuditLog(home.audit_db) as audit:
                people = People(home, audit)
                people.enrol("Quinn Lee", Role.QUALITY, QUINN_PIN, by=root)
                people.enrol("Ada Admin", Role.ADMIN, ADA_PIN, by=root)
            run = base / "run"
            run.mkdir()
            run.chmod(0o755)
            out = base / "out"
            out.mkdir(mode=0o700)
            _run("chown", "-R", f"{names['service']}:nogroup", str(home.root), str(run))
            _run("chown", f"{names['quality']}:nogroup", str(out))
            yield Station(base, home, run / "station.sock", **names)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def serving(st: Station, credential: Path | None = None) -> Any:
    return running_service(
        st.home, st.socket, user=st.service, credential=credential, log=st.base / "service.log"
    )


def _env(st: Station) -> list[str]:
    _prefix, extra = account_python()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "STATION_SOCKET": str(st.socket),
        "LANG": "C.UTF-8",
        **extra,
    }
    return [f"{key}={value}" for key, value in env.items()]


def as_user(st: Station, user: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`station …` run by ``user`` (runuser), reaching the service by its socket."""
    prefix, _extra = account_python()
    return subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", *_env(st), *prefix, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        cwd="/",
        check=False,
    )


# A raw client of the service, as the window is: requests come on stdin (secrets never in argv), each answer or
# error goes out as one JSON line.
CLIENT = """\
import json, sys
from pathlib import Path
from station.service.client import ServiceClient
from station.errors import StationError
client = ServiceClient.connect(Path(sys.argv[1]))
for op, args in json.loads(sys.stdin.read()):
    try:
        print(json.dumps({"ok": client.call(op, args)}))
    except StationError as exc:
        print(json.dumps({"error": str(exc), "kind": type(exc).__name__}))
"""


def ask(st: Station, user: str, *calls: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    prefix, _extra = account_python()
    done = subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", *_env(st), prefix[0], "-c", CLIENT, str(st.socket)],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def requests(home: StationHome) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{home.audit_db}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM service_requests ORDER BY id"))


def test_kiosk_sign_in_lockout_outlives_the_service_and_sessions_name_both(station: Station) -> None:
    st = station
    wrong = [("sign_in", {"name": "Quinn Lee", "secret": f"99{n}7"}) for n in range(3)]
    with serving(st) as service:
        answers = ask(st, st.tech, *wrong)
        assert all("error" in answer for answer in answers), answers
        assert "2 tries left" in answers[0]["error"] and "locked out" in answers[2]["error"], answers
        served_by = service_pid(st.socket)
        assert served_by is not None
        os.killpg(service.pid, signal.SIGKILL)  # the service dies; the lockout is the store's, not its memory
        service.wait(10)
        end = time.monotonic() + 30
        while Path(f"/proc/{served_by}").exists():  # (runuser is reaped before its child is gone)
            assert time.monotonic() < end, "the killed service should be gone"
            time.sleep(0.05)
    with serving(st):
        (still,) = ask(st, st.tech, ("sign_in", {"name": "Quinn Lee", "secret": QUINN_PIN}))
        assert "locked out" in still.get("error", ""), still

        # An administrator signs in at the technician's kiosk: the session is bound to that OS account.
        (signed,) = ask(st, st.tech, ("sign_in", {"name": "Ada Admin", "secret": ADA_PIN}))
        session = signed["ok"]["session"]
        assert signed["ok"]["role"] == Role.ADMIN.value and signed["ok"]["account"] == st.tech
        plain, elevated = ask(st, st.tech, ("audit_verify", {}), ("audit_verify", {"session": session}))
        assert "refused" in plain["error"] and Role.QUALITY.value in plain["error"], plain
        assert elevated["ok"]["status"] == 0 and elevated["ok"]["lines"][0].startswith("audit log OK"), (
            elevated
        )
        (stolen,) = ask(st, st.quality, ("audit_verify", {"session": session}))
        assert "another OS account" in stolen.get("error", ""), stolen

        # A credential changes with the old one, or by an administrator — not by a technician alone.
        alone, by_admin = ask(
            st,
            st.tech,
            ("people_change", {"name": "Quinn Lee", "new_secret": "5921"}),
            ("people_change", {"name": "Quinn Lee", "new_secret": "5921", "session": session}),
        )
        assert "needs an administrator" in alone.get("error", ""), alone
        assert by_admin["ok"]["person"] == "Quinn Lee", by_admin
        own, quinn = ask(
            st,
            st.quality,
            ("people_change", {"name": "Ada Admin", "old_secret": ADA_PIN, "new_secret": "8264"}),
            ("sign_in", {"name": "Quinn Lee", "secret": "5921"}),
        )
        assert own["ok"]["person"] == "Ada Admin" and quinn["ok"]["role"] == Role.QUALITY.value, (own, quinn)
        (old,) = ask(st, st.tech, ("sign_in", {"name": "Ada Admin", "secret": ADA_PIN}))
        assert "wrong" in old.get("error", ""), old

    rows = requests(st.home)
    verified = [row for row in rows if row["op"] == "audit_verify" and row["allowed"]]
    assert [(row["account"], json.loads(row["detail"]).get("signed_in")) for row in verified] == [
        (st.tech, "Ada Admin")
    ]
    refused = [row for row in rows if row["op"] == "audit_verify" and not row["allowed"]]
    assert {row["account"] for row in refused} == {st.tech, st.quality}
    everything = "\n".join(row["detail"] for row in rows)
    for secret in (QUINN_PIN, ADA_PIN, "5921", "8264", "9907", session):
        assert secret not in everything, secret


def test_quality_backs_up_and_verifies_and_the_admin_sets_production_through_the_service(
    station: Station,
) -> None:
    st = station
    out = st.base / "out"
    # A CA the service unlocks from a credential file only it reads: the quality lead's checkpoint is signed by it.
    CertificateAuthority.init(st.home.ca_dir, passphrase=PASSPHRASE.encode())
    credential = st.base / "ca-passphrase"
    credential.write_text(PASSPHRASE + "\n")
    credential.chmod(0o600)
    _run("chown", "-R", f"{st.service}:nogroup", str(st.home.root), str(credential))
    with serving(st, credential):
        signed = as_user(st, st.quality, "audit", "checkpoint")
        assert signed.returncode == 0 and "signed the audit journal up to event" in signed.stdout, (
            signed.stdout + signed.stderr
        )
        backup = as_user(st, st.quality, "audit", "backup", "--out", str(out / "audit.db"))
        assert backup.returncode == 0 and "copy verified" in backup.stdout, backup.stdout + backup.stderr
        copy = out / "audit.db"
        assert (
            oct(copy.stat().st_mode & 0o777) == "0o640"
            and copy.stat().st_uid == pwd.getpwnam(st.quality).pw_uid
        )
        with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as db:
            assert db.execute("SELECT count(*) FROM people_events").fetchone()[0] >= 2
        verify = as_user(st, st.quality, "audit", "verify")
        assert verify.returncode == 0 and verify.stdout.startswith("audit log OK"), (
            verify.stdout + verify.stderr
        )
        assert "signed checkpoint(s) verified against the station CA" in verify.stdout, verify.stdout

        for argv in (
            ("audit", "backup", "--out", "/tmp/never-backup.db"),
            ("audit", "verify"),
            ("audit", "checkpoint"),
        ):
            refused = as_user(st, st.tech, *argv)
            assert (
                refused.returncode == 1
                and f"refused: {st.tech} may not" in refused.stderr
                and Role.QUALITY.value in refused.stderr
            ), refused.stderr
        assert not Path("/tmp/never-backup.db").exists()
        # The technician (who cannot open the home) lists fixtures and asks for a label through the service.
        listed = as_user(st, st.tech, "fixtures", "list")
        assert listed.returncode == 0 and listed.stdout.startswith("no fixtures:"), (
            listed.stdout + listed.stderr
        )
        label = as_user(st, st.tech, "label", "print", "--serial", "202600000009999")
        assert label.returncode == 1 and "no unit of board 202600000009999" in label.stderr, label.stderr

        pin = as_user(st, st.admin, "admin", "set-pin", stdin="6093\n")
        assert pin.returncode == 0 and "admin PIN set" in pin.stdout, pin.stdout + pin.stderr
        on = as_user(st, st.admin, "settings", "production", "on")
        assert on.returncode == 0 and "production mode is now on" in on.stdout, on.stdout + on.stderr
        assert "production = true" in st.home.config_file.read_text()
        shown = as_user(st, st.tech, "settings", "production")
        assert shown.returncode == 1 and Role.ADMIN.value in shown.stderr, shown.stdout + shown.stderr
        off = as_user(st, st.quality, "settings", "production", "off")
        assert (
            off.returncode == 1
            and f"refused: {st.quality} may not" in off.stderr
            and Role.ADMIN.value in off.stderr
        ), off.stderr
        again = as_user(st, st.admin, "settings", "production")
        assert again.stdout.strip() == "production mode is on", again.stdout + again.stderr
        # Production mode refuses the shared admin PIN, through the service as before.
        refused_pin = as_user(st, st.admin, "admin", "set-pin", stdin="6094\n")
        assert refused_pin.returncode == 1 and "production mode" in refused_pin.stderr, refused_pin.stderr

    asked = [(row["account"], row["op"], bool(row["allowed"])) for row in requests(st.home)]
    for expected in (
        (st.quality, "audit_checkpoint", True),
        (st.tech, "audit_checkpoint", False),
        (st.quality, "backup", True),
        (st.quality, "audit_verify", True),
        (st.tech, "backup", False),
        (st.tech, "audit_verify", False),
        (st.admin, "admin_set_pin", True),
        (st.admin, "production_mode", True),
        (st.quality, "production_mode", False),
        (st.tech, "labels", True),
    ):
        assert expected in asked, (expected, asked)
    assert not [row for row in requests(st.home) if "6093" in row["detail"]]
    with AuditLog(st.home.audit_db) as log:
        assert log.verify().ok
