"""`station audit backup`: a copy of the audit log that holds every committed record, made while stations work.

Copying audit.db by hand is not a backup: the latest commits live in audit.db-wal until SQLite checkpoints them.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from station.audit import AuditLog
from station.cli import main
from station.errors import StationError
from tests.helpers.audit import make_certificate, start

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def provision(log: AuditLog, serial: str) -> None:
    unit = start(log, serial)
    log.record_step(unit.id, step="identify", attempt=1, outcome="passed", started_at=T0, ended_at=T0)
    log.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{serial}"))
    log.finish_unit(unit.id, result="passed")


def serials(path: Path) -> list[str]:
    raw = sqlite3.connect(path)
    try:
        return [row[0] for row in raw.execute("SELECT serial FROM units ORDER BY id")]
    finally:
        raw.close()


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    opened = AuditLog(tmp_path / "home" / "audit.db")
    for n in range(3):
        provision(opened, f"20260000000000{n}")
    return opened


def test_the_backup_holds_the_boards_a_copy_of_the_file_would_miss(log: AuditLog, tmp_path: Path) -> None:
    # The last commits are still in audit.db-wal: a file copy taken now does not have them.
    assert Path(f"{log.path}-wal").stat().st_size > 0
    shutil.copyfile(log.path, tmp_path / "copied.db")
    raw = sqlite3.connect(tmp_path / "copied.db")
    try:
        copied = raw.execute("SELECT count(*) FROM units").fetchone()[0]
    except sqlite3.OperationalError:  # so new a log that even its tables are only in the WAL
        copied = 0
    finally:
        raw.close()
    assert copied < 3

    written = log.backup(tmp_path / "backup.db")

    assert serials(written.path) == ["202600000000000", "202600000000001", "202600000000002"]
    assert written.report.ok and written.report.events == log.verify().events
    assert written.size_bytes == written.path.stat().st_size
    log.close()


def test_the_backup_is_one_private_file_that_verifies_on_its_own(log: AuditLog, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    written = log.backup(backups / "audit-2026-03-02.db")
    log.close()

    assert [p.name for p in backups.iterdir()] == ["audit-2026-03-02.db"], "temporary or journal files left"
    assert stat.S_IMODE(written.path.stat().st_mode) == 0o600
    raw = sqlite3.connect(written.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # no -wal needed to read it
    raw.close()
    scratch = tmp_path / "check" / "audit.db"
    scratch.parent.mkdir()
    shutil.copyfile(written.path, scratch)
    with AuditLog(scratch) as restored:
        assert restored.verify().ok
        assert [unit.serial for unit in restored.units(limit=10)] == [
            "202600000000002",
            "202600000000001",
            "202600000000000",
        ]


def test_a_backup_taken_while_another_station_writes_is_consistent(log: AuditLog, tmp_path: Path) -> None:
    # A second connection stands for the GUI or a batch in another process, provisioning meanwhile.
    other = AuditLog(log.path)
    stop = threading.Event()
    written_by_other: list[str] = []

    def keep_provisioning() -> None:
        n = 100
        while not stop.is_set() and n < 400:
            provision(other, f"2026000000{n:05d}")
            written_by_other.append(f"2026000000{n:05d}")
            n += 1

    writer = threading.Thread(target=keep_provisioning)
    writer.start()
    try:
        while len(written_by_other) < 5:
            stop.wait(0.01)
        backups = [log.backup(tmp_path / f"backup-{i}.db") for i in range(3)]
    finally:
        stop.set()
        writer.join(30)
        other.close()
    for backup in backups:
        assert backup.report.ok, backup.report.problem
    assert len(serials(backups[-1].path)) >= 3 + 5
    log.close()


def test_a_backup_replaces_the_old_one_whole(log: AuditLog, tmp_path: Path) -> None:
    target = tmp_path / "backup.db"
    target.write_text("yesterday's backup")
    log.backup(target)
    assert len(serials(target)) == 3
    log.close()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("missing-folder/backup.db", "the folder"),
        (".", "it is a folder"),
        ("home/audit.db", "is the live audit log itself"),
        ("home/audit.db-wal", "is the live audit log itself"),
    ],
)
def test_a_backup_that_cannot_be_written_says_why_and_leaves_the_log_alone(
    log: AuditLog, tmp_path: Path, out: str, message: str
) -> None:
    before = log.verify()
    with pytest.raises(StationError, match=message):
        log.backup(tmp_path / out)
    assert log.verify() == before
    log.close()


def test_a_tampered_log_is_still_backed_up_and_the_copy_says_what_is_wrong(
    log: AuditLog, tmp_path: Path
) -> None:
    log.close()
    raw = sqlite3.connect(log.path)
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute(f'DROP TRIGGER "{name}"')
    raw.execute("UPDATE units SET operator = 'mallory' WHERE serial = '202600000000001'")
    raw.commit()
    raw.close()

    with AuditLog(log.path) as reopened:
        written = reopened.backup(tmp_path / "evidence.db")
    assert not written.report.ok
    assert written.report.problem is not None and "unit" in written.report.problem
    assert serials(written.path) == serials(log.path)


# ------------------------------------------------------------------------------------------ the command


def test_station_audit_backup_then_verify_the_copy_as_the_readme_says(
    log: AuditLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.close()
    home = log.path.parent
    out = tmp_path / "audit-backup.db"
    assert main(["--home", str(home), "audit", "backup", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"backed up the audit log to {out} (")
    assert printed.rstrip().endswith("copy verified")

    check = tmp_path / "check"
    check.mkdir()
    shutil.copyfile(out, check / "audit.db")
    assert main(["--home", str(check), "audit", "verify"]) == 0
    assert capsys.readouterr().out.startswith("audit log OK")


def test_station_audit_backup_without_a_log_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path / "empty"), "audit", "backup", "--out", str(tmp_path / "b.db")]) == 1
    assert "There is no audit log at" in capsys.readouterr().err
    assert not (tmp_path / "b.db").exists()
    assert not os.path.exists(tmp_path / "empty" / "audit.db")
