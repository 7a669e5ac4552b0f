"""The window's audit tab on a line PC: real OS accounts (``useradd``, removed at teardown even on failure), a
real `station serve` owning a home no other account can read, and the audit view in a process of each account
(tests/gui/audit_window_process.py) reading only through the service.

* A quality-lead account pages the whole log, filters it, opens a unit and exports CSV and PDF into its output
  folder (0640, its own files); an export into the home is refused.
* A technician account sees this station's 50 most recent units only; reading the whole log, an older unit or
  another station is refused naming the quality lead role and the kiosk sign-in — and each refusal is recorded.
* At a technician's kiosk, a quality lead signs in with their own credential: the session lets that window read
  the whole log, and the service's records name both the account and the person.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from station.audit import AuditLog
from station.home import StationHome
from station.identity_log import IdentityLog
from station.people import Actor, People
from station.roles import Role
from tests.helpers.audit import Clock, make_certificate, start
from tests.helpers.service import account_python, running_service

pytestmark = pytest.mark.gui

QUINN_PIN = "4812"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LINE_1 = 60  # units 1–60 at line-1 (every 4th failed), 61–65 at line-2


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} → {done.returncode}: {done.stderr}")
    return done


@dataclass
class LinePC:
    base: Path
    home: StationHome
    socket: Path
    service: str
    tech: str
    quality: str


def fill(home: StationHome) -> None:
    clock = Clock(T0)
    with AuditLog(home.audit_db, clock=clock) as log:
        for n in range(1, LINE_1 + 6):
            unit = start(
                log, f"20260000000{n:04d}", station="line-1" if n <= LINE_1 else "line-2", batch="B-1"
            )
            began = clock()
            clock.advance(seconds=12)
            failed = n % 4 == 0
            log.record_step(
                unit.id,
                step="keygen",
                attempt=1,
                outcome="failed" if failed else "passed",
                started_at=began,
                ended_at=clock(),
                excerpt="CKR_DEVICE_ERROR" if failed else "key0 generated",
                message="token busy" if failed else "",
            )
            if failed:
                log.finish_unit(unit.id, result="failed", failed_step="keygen", message="token busy")
            else:
                log.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{n}"))
                log.finish_unit(unit.id, result="passed")
            clock.advance(minutes=1)
        IdentityLog(log).record_soc_id(LINE_1, soc_id="0x5ec0de60", source="nvmem")
        root = Actor(name="root", account="root", administrator=True)
        People(home, log).enrol("Quinn Lee", Role.QUALITY, QUINN_PIN, by=root)


@pytest.fixture
def line_pc() -> Iterator[LinePC]:
    tag = secrets.token_hex(3)
    groups: list[str] = []
    users: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="welma-audit-"))
    try:
        for role in Role:
            if _run("getent", "group", role.value, check=False).returncode != 0:
                _run("groupadd", role.value)
                groups.append(role.value)
        names = {"service": f"wav{tag}", "tech": f"wat{tag}", "quality": f"waq{tag}"}
        for key, group in (("service", None), ("tech", Role.TECHNICIAN), ("quality", Role.QUALITY)):
            extra = ("-G", group.value) if group else ()
            _run("useradd", "-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin", *extra, names[key])
            users.append(names[key])
        base.chmod(0o711)
        home = StationHome(base / "home").create()
        home.config_file.write_text('[station]\nname = "line-1"\n')
        fill(home)
        run = base / "run"
        run.mkdir()
        run.chmod(0o755)
        _run("chown", "-R", f"{names['service']}:nogroup", str(home.root), str(run))
        home.root.chmod(0o700)
        for key in ("tech", "quality"):
            out = base / f"out-{key}"
            out.mkdir(mode=0o700)
            _run("chown", f"{names[key]}:nogroup", str(out))
        yield LinePC(base, home, run / "station.sock", **names)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for name in users:
            _run("userdel", name, check=False)
        for group in groups:
            _run("groupdel", group, check=False)


def window(pc: LinePC, user: str, mode: str, stdin: str = "") -> dict[str, Any]:
    """The audit tab of ``user``'s window (its own process, that account), as it reported what it saw."""
    prefix, extra = account_python()
    checkout = Path(__file__).resolve().parents[2]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "STATION_SOCKET": str(pc.socket),
        **extra,
        "PYTHONPATH": extra.get("PYTHONPATH", str(checkout)),
    }
    out = pc.base / f"out-{'tech' if user == pc.tech else 'quality'}"
    done = subprocess.run(
        [
            "runuser",
            "-u",
            user,
            "--",
            "env",
            "-i",
            *(f"{key}={value}" for key, value in env.items()),
            prefix[0],
            "-m",
            "tests.gui.audit_window_process",
            mode,
            str(pc.home.root),
            str(out),
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def requests(home: StationHome) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{home.audit_db}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM service_requests ORDER BY id"))


def test_the_audit_tab_reads_through_the_service_by_role_on_a_home_its_account_cannot_read(
    line_pc: LinePC,
) -> None:
    pc = line_pc
    with running_service(pc.home, pc.socket, user=pc.service, log=pc.base / "service.log"):
        lead = window(pc, pc.quality, "quality")
        tech = window(pc, pc.tech, "technician")
        kiosk = window(pc, pc.tech, "kiosk", stdin=json.dumps({"name": "Quinn Lee", "secret": QUINN_PIN}))

    # The quality lead: every unit, paged; filtered; one unit's steps and identity; exports into the output folder.
    quality_uid = pwd.getpwnam(pc.quality).pw_uid
    assert lead["audit_db"] == "Permission denied", lead
    assert (
        lead["rows"] == 65
        and lead["ids"] == list(range(65, 0, -1))
        and lead["stations"] == ["line-1", "line-2"]
    )
    assert lead["count_label"] == "65 units match" and lead["message"] == ""
    assert lead["failed_ids"] == list(range(64, 0, -4)) and lead["failed_count_label"] == "16 units match"
    assert "Unit 64 — board 202600000000064 — FAILED" in lead["summary"] and lead["steps"] == 1
    assert lead["certificate_status"] == "No certificate was issued to unit 64."
    out = pc.base / "out-quality"
    assert lead["csv_message"] == f"Exported 16 units to {out / 'failed.csv'}." and lead["csv_lines"] == 17
    assert (lead["csv"]["mode"], lead["csv"]["uid"]) == ("0o640", quality_uid)
    assert (
        lead["pdf"]["head"] == "%PDF-"
        and lead["pdf"]["mode"] == "0o640"
        and lead["pdf"]["uid"] == quality_uid
    )
    assert lead["pdf_message"].startswith(f"Exported 65 units to {out / 'all.pdf'}, ")
    assert lead["home_export_started"] is False
    assert "is inside the station home" in lead["home_export_message"], lead["home_export_message"]
    assert not (pc.home.root / "into-home.csv").exists()

    # The technician: this station's 50 most recent units; the rest refused, naming the role and the kiosk.
    assert tech["audit_db"] == "Permission denied", tech
    assert tech["ids"] == list(range(60, 10, -1)) and tech["stations"] == ["line-1"], tech
    assert tech["count_label"] == "the last 50 units at line-1"
    assert tech["failed_ids"] == list(range(60, 10, -4))
    assert "SoC unique id: 0x5ec0de60" in tech["summary"] and tech["steps"] == 1
    assert tech["export_started"] is False and not (pc.base / "out-tech" / "never.csv").exists()
    for refused, words in (
        (tech["count_whole_log"], "may not count units in the audit log — that needs the quality lead role"),
        (
            tech["old_unit"],
            "may not view unit 1 — a technician's audit tab shows the 50 most recent units of line-1",
        ),
        (tech["other_station"], "may not view the units of station line-2"),
    ):
        assert refused.startswith("ServiceRefused: refused: ") and words in refused, refused
        assert Role.QUALITY.value in refused and "signs in at this window" in refused, refused

    # At the technician's kiosk, the quality lead's session reads the whole log and exports.
    assert (
        kiosk["audit_db"] == "Permission denied"
        and kiosk["rows"] == 65
        and kiosk["stations"] == ["line-1", "line-2"]
    )
    assert kiosk["count_label"] == "65 units match" and kiosk["csv_lines"] == 17

    rows = requests(pc.home)
    refusals = {(row["op"], row["account"], row["role_needed"]) for row in rows if not row["allowed"]}
    assert {
        ("audit_count", pc.tech, Role.QUALITY.value),
        ("recent_unit", pc.tech, Role.QUALITY.value),
        ("recent_units", pc.tech, Role.QUALITY.value),
    } <= refusals, refusals
    exports = [(row["account"], json.loads(row["detail"])) for row in rows if row["op"] == "audit_export"]
    assert [
        (account, detail.get("signed_in"), detail.get("result"), detail["format"])
        for account, detail in exports
    ] == [
        (pc.quality, None, "failed", "csv"),
        (pc.quality, None, None, "pdf"),
        (pc.tech, "Quinn Lee", "failed", "csv"),
        (pc.tech, "Quinn Lee", None, "pdf"),
    ]
    signed = [
        json.loads(row["detail"]) for row in rows if row["op"] == "sign_in" and row["account"] == pc.tech
    ]
    assert (
        signed and signed[-1]["name"] == "Quinn Lee" and QUINN_PIN not in json.dumps([dict(r) for r in rows])
    )
    # Reads allowed are not recorded (paging would fill the journal): none of the quality lead's pages is.
    assert not [row for row in rows if row["op"] in ("audit_units", "recent_units") and row["allowed"]]
