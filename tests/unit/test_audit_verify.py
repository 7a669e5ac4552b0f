"""`station audit verify` notices any record changed behind the station's back.

Each tamper test edits the real SQLite file the way somebody with a DB browser would (after removing the
append-only guard triggers, as a determined editor would) and expects verify() to name the broken record.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from station.audit import AuditLog
from station.cli import main
from tests.helpers.audit import make_certificate, start

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A log with a bit of everything: passed, failed, reprovisioned, certified and revoked units."""
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for n in range(3):
            unit = start(log, f"20260000000000{n}")
            log.pin_host_key(unit.id, key_type="ssh-ed25519", fingerprint=f"SHA256:{n}")
            for step in ("identify", "guard", "wipe"):
                log.record_step(unit.id, step=step, attempt=1, outcome="passed", started_at=T0, ended_at=T0)
            log.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{n}"))
            log.finish_unit(unit.id, result="passed")
        failed = start(log, "202600000000009")
        log.finish_unit(failed.id, result="failed", failed_step="keygen")
        start(log, "202600000000000", reprovision_reason="rework")
        log.revoke(serial="202600000000001", reason="keyCompromise", by="qa")
        assert log.verify().ok
    return path


@contextmanager
def tamper(path: Path) -> Iterator[sqlite3.Connection]:
    """Edit the file directly, as a DB browser would, guard triggers removed first."""
    raw = sqlite3.connect(path)
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute(f'DROP TRIGGER "{name}"')
    yield raw
    raw.commit()
    raw.close()


def verify(path: Path) -> str:
    with AuditLog(path) as log:
        report = log.verify()
    assert not report.ok
    assert report.problem is not None
    return report.problem


def chain_hash(prev_hash: str, seq: int, at: str, kind: str, payload: str) -> str:
    """The published chain formula, written out independently of the station's code."""
    return hashlib.sha256("\n".join((prev_hash, str(seq), at, kind, payload)).encode()).hexdigest()


# ------------------------------------------------------------------------------------ clean logs


def test_a_clean_log_with_many_events_verifies(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        for n in range(150):
            unit = start(log, f"2026{n:011d}")
            for step in ("identify", "guard", "wipe", "reboot"):
                log.record_step(unit.id, step=step, attempt=1, outcome="passed", started_at=T0, ended_at=T0)
            log.finish_unit(
                unit.id, result="passed" if n % 7 else "failed", failed_step=None if n % 7 else "wipe"
            )
        report = log.verify()
    assert report.ok, report.problem
    assert report.events == 150 * 6
    assert report.problem is None


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        assert (log.verify().ok, log.verify().events) == (True, 0)


def test_the_journal_hashes_follow_the_published_formula(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    previous = "0" * 64
    for seq, at, kind, payload, prev_hash, digest in raw.execute(
        "SELECT seq, at, kind, payload, prev_hash, hash FROM events ORDER BY seq"
    ):
        assert prev_hash == previous
        assert digest == chain_hash(prev_hash, seq, at, kind, payload)
        assert payload == json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":"))
        previous = digest
    raw.close()


def test_the_journal_refuses_honest_mistakes(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM events WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE steps SET outcome = 'passed'")
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        raw.execute("DELETE FROM units")
    raw.close()


# -------------------------------------------------------------------------------- edited tables


def test_an_edited_unit_row_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute("UPDATE units SET state = 'passed', failed_step = NULL WHERE serial = '202600000000009'")
    assert verify(db_path) == (
        "unit 4 was edited outside the station: state is 'passed' but event 23 recorded 'failed'; "
        "failed_step is None but event 23 recorded 'keygen'"
    )


def test_an_edited_certificate_revocation_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute("UPDATE certificates SET revoked_at = NULL, revocation_reason = NULL")
    assert verify(db_path).startswith(
        "certificate record 2 was edited outside the station: revoked_at is None but event 26 recorded '20"
    )


def test_a_deleted_step_row_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute("DELETE FROM steps WHERE id = 5")
    assert verify(db_path).startswith("step record 5 was deleted outside the station")


def test_an_inserted_unit_row_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute(
            "INSERT INTO units (serial, profile, device, operator, station, state, attempt, started_at) "
            "VALUES ('202600000000077', 'welma-optee', 'd', 'ann', 'line-1', 'passed', 1, '2026-03-02')"
        )
    assert verify(db_path) == "unit 6 was added outside the station (no event records it)"


def test_an_added_table_column_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute("ALTER TABLE units ADD COLUMN note TEXT")
    assert verify(db_path) == (
        "unit 1 has column note, which event 24 did not record — the table was altered outside the station"
    )


# -------------------------------------------------------------------------------- edited journal


def test_an_edited_event_payload_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute(
            'UPDATE events SET payload = replace(payload, \'"state":"failed"\', \'"state":"passed"\')'
        )
        assert raw.total_changes > 0
    problem = verify(db_path)
    assert problem.endswith(": hash does not match its content — the record was edited outside the station")
    assert problem.startswith("event ")


def test_an_edited_event_unit_number_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute("UPDATE events SET unit_id = 3 WHERE seq = 2")
    assert verify(db_path) == (
        "event 2: its unit number does not match its content — the record was edited outside the station"
    )


def test_a_deleted_event_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute("DELETE FROM events WHERE seq = 7")
    assert verify(db_path).startswith("event 7 is missing (the journal jumps to event 8)")


def test_deleting_the_newest_events_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute("DELETE FROM events WHERE seq > (SELECT max(seq) - 2 FROM events)")
    assert "the newest events were deleted" in verify(db_path)


def test_deleting_the_newest_events_and_their_trace_is_still_caught_by_the_tables(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute("DELETE FROM events WHERE seq = (SELECT max(seq) FROM events)")  # the revocation
        raw.execute("UPDATE sqlite_sequence SET seq = seq - 1 WHERE name = 'events'")
    assert verify(db_path).startswith(
        "certificate record 2 was edited outside the station: revoked_at is '20"
    )


def test_swapped_events_are_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        raw.execute("UPDATE events SET seq = -1 WHERE seq = 3")
        raw.execute("UPDATE events SET seq = 3 WHERE seq = 4")
        raw.execute("UPDATE events SET seq = 4 WHERE seq = -1")
    assert verify(db_path) == (
        "event 3 does not follow event 2 (its link to the previous event is broken) — events were inserted, "
        "deleted or reordered outside the station"
    )


def test_an_event_inserted_in_the_middle_is_caught(db_path: Path) -> None:
    with tamper(db_path) as raw:
        last = raw.execute("SELECT max(seq) FROM events").fetchone()[0]
        for seq in range(last, 4, -1):  # make room after event 4
            raw.execute("UPDATE events SET seq = seq + 1 WHERE seq = ?", [seq])
        at, kind, payload, prev_hash = raw.execute(
            "SELECT at, kind, payload, hash FROM events WHERE seq = 4"
        ).fetchone()
        raw.execute(
            "INSERT INTO events (seq, at, kind, unit_id, payload, prev_hash, hash) VALUES (5, ?, ?, 1, ?, ?, ?)",
            [at, kind, payload, prev_hash, chain_hash(prev_hash, 5, at, kind, payload)],
        )
    assert verify(db_path).startswith("event 6 does not follow event 5")


def test_a_forged_event_appended_with_a_correct_hash_is_caught_by_the_tables(db_path: Path) -> None:
    """Somebody who knows the formula appends an event that 'passes' the failed board, but leaves its row."""
    with tamper(db_path) as raw:
        seq, prev_hash, payload = raw.execute(
            "SELECT seq, hash, payload FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        failed_unit = raw.execute("SELECT * FROM units WHERE serial = '202600000000009'").fetchone()
        columns = [d[0] for d in raw.execute("SELECT * FROM units LIMIT 0").description]
        row = dict(zip(columns, failed_unit, strict=True)) | {"state": "passed", "failed_step": None}
        forged = json.dumps(
            {"table": "units", "pk": row["id"], "unit_id": row["id"], "row": row},
            sort_keys=True,
            separators=(",", ":"),
        )
        at = "2026-03-02T09:00:00.000000+00:00"
        raw.execute(
            "INSERT INTO events (seq, at, kind, unit_id, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                seq + 1,
                at,
                "unit.passed",
                row["id"],
                forged,
                prev_hash,
                chain_hash(prev_hash, seq + 1, at, "unit.passed", forged),
            ],
        )
    problem = verify(db_path)
    assert problem == (
        f"unit {row['id']} was edited outside the station: state is 'failed' but event {seq + 1} recorded "
        f"'passed'; failed_step is 'keygen' but event {seq + 1} recorded None"
    )


# ----------------------------------------------------------------------------- station audit verify


def test_station_audit_verify_reports_ok(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = db_path.parent
    with AuditLog(db_path) as log:
        events = log.verify().events
    assert main(["--home", str(home), "audit", "verify"]) == 0
    assert capsys.readouterr().out == f"audit log OK: {events} events\n"


def test_station_audit_verify_names_the_problem_and_fails(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tamper(db_path) as raw:
        raw.execute("DELETE FROM events WHERE seq = 7")
    assert main(["--home", str(db_path.parent), "audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "NOT intact: event 7 is missing" in out


def test_station_audit_verify_without_a_log_explains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), "audit", "verify"]) == 1
    assert "There is no audit log" in capsys.readouterr().err


def test_verify_reads_a_snapshot_while_the_station_keeps_writing(db_path: Path) -> None:
    with AuditLog(db_path) as log:
        unit = log.find_unit("202600000000000")
        assert unit is not None
        for n in range(20):
            log.record_step(
                unit.id,
                step="keygen",
                attempt=n + 1,
                outcome="retrying",
                started_at=T0,
                ended_at=T0 + timedelta(seconds=n),
            )
            assert log.verify().ok
