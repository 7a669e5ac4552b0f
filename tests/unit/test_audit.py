"""The audit log records every board's units, steps and certificates — and one board has one current unit.

Real SQLite files in tmp_path; "two processes" are two AuditLog instances on one file, or real processes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from station.audit import (
    AuditLog,
    AuditLogUnavailable,
    PublicKeyReused,
    SerialAlreadyPassed,
    UnitAlreadyActive,
)
from station.audit import core as audit_module
from station.cli import main
from station.errors import StationError
from tests.helpers.audit import T0, Clock, make_certificate, start


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(tmp_path: Path, clock: Clock) -> Iterator[AuditLog]:
    audit = AuditLog(tmp_path / "home" / "audit.db", clock=clock)
    yield audit
    audit.close()


# ------------------------------------------------------------------------------------- the file


def test_the_audit_database_is_private_and_durable(tmp_path: Path) -> None:
    path = tmp_path / "home" / "audit.db"
    with AuditLog(path) as log:
        start(log, "202600000000001")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    assert modes["audit.db"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_opening_twice_keeps_the_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as first:
        unit = start(first, "202600000000001")
    with AuditLog(path) as again:
        assert again.unit(unit.id) == unit
        assert again.verify().ok


def test_a_newer_schema_is_refused_instead_of_misread(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditLog(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StationError, match="newer version"):
        AuditLog(path)


# ----------------------------------------------------------------------------------- a unit's life


def test_a_board_goes_through_its_steps_to_passed(log: AuditLog, clock: Clock) -> None:
    unit = start(log, "202600000000001", fixture="slot-2", batch="B-17")
    assert (unit.state, unit.attempt, unit.started_at, unit.ended_at) == ("running", 1, T0, None)
    assert (unit.fixture, unit.batch, unit.operator, unit.station) == ("slot-2", "B-17", "ann", "line-1")

    for step in ("identify", "guard", "wipe"):
        began = clock()
        clock.advance(seconds=1.5)
        log.record_step(unit.id, step=step, attempt=1, outcome="passed", started_at=began, ended_at=clock())
    clock.advance(seconds=1)
    done = log.finish_unit(unit.id, result="passed")

    assert done.state == "passed"
    assert done.ended_at == clock()
    assert done.duration_s == pytest.approx(5.5)
    assert [s.step for s in log.steps(unit.id)] == ["identify", "guard", "wipe"]
    assert [s.duration_s for s in log.steps(unit.id)] == [1.5, 1.5, 1.5]
    assert log.find_unit("202600000000001") == done


def test_timestamps_come_back_as_aware_utc_with_microseconds(log: AuditLog, tmp_path: Path) -> None:
    local = datetime(2026, 3, 2, 10, 0, 0, 654321, tzinfo=UTC).astimezone()
    unit = start(log, "202600000000001")
    log.record_step(unit.id, step="identify", attempt=1, outcome="passed", started_at=local, ended_at=local)
    [record] = log.steps(unit.id)
    assert record.started_at == local
    assert record.started_at.tzinfo is not None and record.started_at.microsecond == 654321
    raw = sqlite3.connect(tmp_path / "home" / "audit.db")
    assert raw.execute("SELECT started_at FROM steps").fetchone()[0] == "2026-03-02T10:00:00.654321+00:00"
    raw.close()


def test_a_naive_time_is_refused(log: AuditLog) -> None:
    unit = start(log, "202600000000001")
    naive = datetime(2026, 3, 2, 10, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        log.record_step(
            unit.id, step="identify", attempt=1, outcome="passed", started_at=naive, ended_at=naive
        )


def test_a_board_that_passed_is_not_provisioned_again_by_mistake(log: AuditLog) -> None:
    unit = start(log, "202600000000001")
    log.finish_unit(unit.id, result="passed")
    with pytest.raises(SerialAlreadyPassed, match="--reprovision") as refused:
        start(log, "202600000000001")
    assert refused.value.unit.id == unit.id
    assert isinstance(refused.value, StationError)
    assert len(log.units()) == 1


def test_reprovision_supersedes_the_passed_unit(log: AuditLog) -> None:
    old = start(log, "202600000000001")
    log.finish_unit(old.id, result="passed")

    new = start(log, "202600000000001", reprovision_reason="key lost after rework")

    assert new.state == "running"
    assert new.reprovision_reason == "key lost after rework"
    superseded = log.unit(old.id)
    assert (superseded.state, superseded.superseded_by) == ("superseded", new.id)
    assert log.find_unit("202600000000001") == new
    assert log.verify().ok


def test_a_reprovision_that_fails_halfway_leaves_the_old_unit_as_it_was(
    log: AuditLog, tmp_path: Path
) -> None:
    old = start(log, "202600000000001")
    log.finish_unit(old.id, result="passed")
    events_before = log.verify().events
    # Something refuses the new unit's row after the old one was already marked superseded.
    raw = sqlite3.connect(tmp_path / "home" / "audit.db")
    raw.execute(
        "CREATE TRIGGER refuse_new_unit BEFORE INSERT ON units "
        "BEGIN SELECT RAISE(ABORT, 'disk full, say'); END"
    )
    raw.commit()
    raw.close()

    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        start(log, "202600000000001", reprovision_reason="rework")

    unchanged = log.unit(old.id)
    assert (unchanged.state, unchanged.superseded_by) == ("passed", None)
    assert len(log.units()) == 1
    assert log.verify().events == events_before


def test_an_unfinished_unit_blocks_a_new_start_even_with_a_reason(log: AuditLog) -> None:
    running = start(log, "202600000000001")
    with pytest.raises(UnitAlreadyActive, match=f"--resume to continue unit {running.id}"):
        start(log, "202600000000001")
    log.finish_unit(running.id, result="failed", failed_step="keygen", message="token busy")
    with pytest.raises(UnitAlreadyActive, match="failed at step keygen") as refused:
        start(log, "202600000000001", reprovision_reason="try again")
    assert refused.value.unit is not None and refused.value.unit.id == running.id


def test_a_failed_unit_resumes_with_the_next_attempt(log: AuditLog, clock: Clock) -> None:
    unit = start(log, "202600000000001")
    clock.advance(seconds=30)
    log.finish_unit(unit.id, result="failed", failed_step="keygen", message="token busy")

    resumed = log.resume_unit(unit.id)

    assert (resumed.state, resumed.attempt) == ("running", 2)
    assert (resumed.failed_step, resumed.message, resumed.ended_at) == (None, None, None)
    assert log.unfinished_units() == [resumed]


def test_a_unit_left_running_by_a_crash_can_be_resumed(log: AuditLog) -> None:
    unit = start(log, "202600000000001")
    assert log.resume_unit(unit.id).attempt == 2


def test_a_finished_unit_cannot_be_resumed_or_finished_again(log: AuditLog) -> None:
    unit = start(log, "202600000000001")
    log.finish_unit(unit.id, result="passed")
    with pytest.raises(StationError, match="cannot be resumed"):
        log.resume_unit(unit.id)
    with pytest.raises(StationError, match="cannot be marked failed"):
        log.finish_unit(unit.id, result="failed", failed_step="push")


def test_a_failed_unit_can_only_be_aborted_and_that_frees_the_board(log: AuditLog) -> None:
    unit = start(log, "202600000000001")
    log.finish_unit(unit.id, result="failed", failed_step="wipe")
    with pytest.raises(StationError, match="Resume it first"):
        log.finish_unit(unit.id, result="passed")

    assert log.finish_unit(unit.id, result="aborted").state == "aborted"
    assert log.find_unit("202600000000001") is None
    assert start(log, "202600000000001").id != unit.id


def test_unknown_units_and_results_are_explained(log: AuditLog) -> None:
    with pytest.raises(StationError, match="no unit 42"):
        log.unit(42)
    unit = start(log, "202600000000001")
    with pytest.raises(ValueError, match="result must be one of"):
        log.finish_unit(unit.id, result="ok")
    with pytest.raises(ValueError, match="outcome must be one of"):
        log.record_step(unit.id, step="wipe", attempt=1, outcome="fine", started_at=T0, ended_at=T0)


# ------------------------------------------------------------------------ one current unit per board


def test_the_database_itself_refuses_a_second_current_unit(log: AuditLog, tmp_path: Path) -> None:
    start(log, "202600000000001")
    raw = sqlite3.connect(tmp_path / "home" / "audit.db")
    with pytest.raises(sqlite3.IntegrityError, match="units.serial"):
        raw.execute(
            "INSERT INTO units (serial, profile, device, operator, station, state, attempt, started_at) "
            "VALUES ('202600000000001', 'p', 'd', 'o', 's', 'running', 1, 'x')"
        )
    raw.close()


def test_two_stations_on_one_file_cannot_both_start_a_board(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as station_a, AuditLog(path) as station_b:
        unit = start(station_a, "202600000000001", station="line-1")
        with pytest.raises(UnitAlreadyActive, match=f"unit {unit.id}"):
            start(station_b, "202600000000001", station="line-2")
        assert station_b.find_unit("202600000000001") == unit


@pytest.mark.parametrize("sharing", ["one shared AuditLog", "one AuditLog per thread"])
def test_eight_fixtures_scanning_the_same_board_start_exactly_one_unit(tmp_path: Path, sharing: str) -> None:
    path = tmp_path / "audit.db"
    shared = AuditLog(path)
    logs = [shared] * 8 if sharing == "one shared AuditLog" else [AuditLog(path) for _ in range(8)]
    barrier = threading.Barrier(8)
    started: list[int] = []
    refused: list[BaseException] = []
    other: list[BaseException] = []

    def fixture(index: int) -> None:
        barrier.wait()
        try:
            started.append(start(logs[index], "202600000000001", fixture=f"slot-{index}").id)
        except UnitAlreadyActive as exc:
            refused.append(exc)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            other.append(exc)

    threads = [threading.Thread(target=fixture, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert other == []
    assert len(started) == 1
    assert len(refused) == 7
    assert [u.id for u in shared.units()] == started
    assert shared.verify().ok
    for log in {id(x): x for x in logs}.values():
        log.close()


def _station_process(path: str, index: int, start_together: Any, results: Any) -> None:
    """One station process: enrol its own boards and also scan the one board every station scans."""
    log = AuditLog(Path(path))
    start_together.wait(timeout=60)
    outcome = "refused"
    try:
        for n in range(10):
            unit = start(log, f"2026{index:02d}{n:04d}", station=f"line-{index}")
            log.record_step(unit.id, step="identify", attempt=1, outcome="passed", started_at=T0, ended_at=T0)
            log.finish_unit(unit.id, result="passed")
        try:
            start(log, "202699999999999", station=f"line-{index}")
            outcome = "started"
        except UnitAlreadyActive:
            outcome = "refused"
    except BaseException as exc:  # noqa: BLE001 - sent back to the test
        outcome = f"error: {exc!r}"
    finally:
        log.close()
    results.put(outcome)


def test_station_processes_writing_at_once_keep_one_unbroken_journal(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditLog(path).close()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_together = context.Barrier(4)
    processes = [
        context.Process(target=_station_process, args=(str(path), i, start_together, results))
        for i in range(4)
    ]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=30)

    assert outcomes == ["refused", "refused", "refused", "started"]
    with AuditLog(path) as log:
        report = log.verify()
        assert report.ok, report.problem
        # Each station: 10 × (start, step, finish) events, plus the one board that only one could start.
        assert report.events == 4 * 10 * 3 + 1


def test_a_write_blocked_too_long_by_another_program_records_nothing_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_module, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        other_program = sqlite3.connect(path, isolation_level=None)
        other_program.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(AuditLogUnavailable, match="Nothing was recorded. Press Retry"):
                start(log, "202600000000001")
        finally:
            other_program.execute("ROLLBACK")
            other_program.close()
        assert log.units() == []
        assert start(log, "202600000000001").state == "running"


# ------------------------------------------------------------------------------------- host keys


def test_the_host_key_is_pinned_once_per_unit(log: AuditLog) -> None:
    unit = start(log, "202600000000001")
    log.pin_host_key(unit.id, key_type="ssh-ed25519", fingerprint="SHA256:aaaa")
    events = log.verify().events
    log.pin_host_key(unit.id, key_type="ssh-ed25519", fingerprint="SHA256:aaaa")  # resumed: same board
    assert log.verify().events == events

    with pytest.raises(StationError, match="Another machine may be answering"):
        log.pin_host_key(unit.id, key_type="ssh-ed25519", fingerprint="SHA256:bbbb")
    pinned = log.unit(unit.id)
    assert (pinned.host_key_type, pinned.host_key_fingerprint) == ("ssh-ed25519", "SHA256:aaaa")


# ---------------------------------------------------------------------------------- certificates


def test_a_certificate_is_recorded_with_its_identity(log: AuditLog, tmp_path: Path) -> None:
    unit = start(log, "202600000000001")
    big_serial = (1 << 158) + 12345  # far beyond SQLite's 64-bit integers
    pem = make_certificate("serial:202600000000001", serial_number=big_serial)
    certificate = x509.load_pem_x509_certificate(pem)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    record = log.record_certificate(unit.id, certificate_pem=pem)

    assert record.serial_number == big_serial
    assert record.serial_hex == format(big_serial, "x")
    assert record.fingerprint_sha256 == certificate.fingerprint(hashes.SHA256()).hex()
    assert record.spki_sha256 == hashlib.sha256(spki).hexdigest()
    assert record.subject == "CN=serial:202600000000001"
    assert record.not_after == certificate.not_valid_after_utc
    assert record.pem == pem.decode("ascii")
    assert (record.unit_id, record.issued_at, record.revoked_at) == (unit.id, T0, None)
    assert log.certificate_for_unit(unit.id) == record
    assert log.unit(unit.id).certificate_serial == record.serial_hex
    assert log.public_key_seen(record.spki_sha256)
    assert not log.public_key_seen("0" * 64)
    # Recorded (committed) before it returns: another process sees it at once.
    with AuditLog(tmp_path / "home" / "audit.db") as other_process:
        assert other_process.certificate_for_unit(unit.id) == record


def test_only_the_certificate_is_kept_from_the_pem_text(log: AuditLog) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    unit = start(log, "202600000000001")
    record = log.record_certificate(unit.id, certificate_pem=key_pem + make_certificate(key=key))
    assert "PRIVATE KEY" not in record.pem
    assert record.pem.startswith("-----BEGIN CERTIFICATE-----")


def test_a_public_key_gets_one_certificate_only(log: AuditLog) -> None:
    shared_key = ec.generate_private_key(ec.SECP256R1())
    first = start(log, "202600000000001")
    issued = log.record_certificate(first.id, certificate_pem=make_certificate("serial:1", key=shared_key))
    second = start(log, "202600000000002")
    events = log.verify().events

    with pytest.raises(PublicKeyReused, match=f"issued to unit {first.id}") as refused:
        log.record_certificate(second.id, certificate_pem=make_certificate("serial:2", key=shared_key))

    assert refused.value.holder == issued
    assert log.certificate_for_unit(second.id) is None
    assert log.verify().events == events


def test_certificates_are_issued_to_running_units_only(log: AuditLog) -> None:
    unit = start(log, "202600000000001")
    log.finish_unit(unit.id, result="failed", failed_step="sign")
    with pytest.raises(StationError, match="do not push"):
        log.record_certificate(unit.id, certificate_pem=make_certificate())
    assert log.certificate_for_unit(unit.id) is None


def test_revoking_a_board_revokes_its_newest_certificate(log: AuditLog, clock: Clock) -> None:
    unit = start(log, "202600000000001")
    issued = log.record_certificate(unit.id, certificate_pem=make_certificate())
    log.finish_unit(unit.id, result="passed")
    clock.advance(days=3)

    revoked = log.revoke(serial="202600000000001", reason="keyCompromise", by="qa-bob")

    assert (revoked.revoked_at, revoked.revocation_reason, revoked.revoked_by) == (
        clock(),
        "keyCompromise",
        "qa-bob",
    )
    assert revoked.serial_number == issued.serial_number
    [listed] = log.revoked_certificates()
    assert (listed.serial_number, listed.revoked_at, listed.reason) == (
        issued.serial_number,
        clock(),
        "keyCompromise",
    )
    assert log.unit(unit.id).certificate_revoked_at == clock()
    with pytest.raises(StationError, match="already revoked"):
        log.revoke(serial="202600000000001", reason="keyCompromise", by="qa-bob")
    with pytest.raises(StationError, match="No certificate was issued to board 999"):
        log.revoke(serial="999", reason="keyCompromise", by="qa-bob")


# ------------------------------------------------------------------------------------- queries


def test_step_durations_feed_the_eta_from_recent_passed_runs(log: AuditLog) -> None:
    durations = [3.0, 4.0, 5.0, 6.0]
    for n, seconds in enumerate(durations):
        unit = start(log, f"20260000000000{n}")
        log.record_step(
            unit.id,
            step="keygen",
            attempt=1,
            outcome="passed",
            started_at=T0,
            ended_at=T0 + timedelta(seconds=seconds),
        )
        log.record_step(
            unit.id,
            step="keygen",
            attempt=2,
            outcome="failed",
            started_at=T0,
            ended_at=T0 + timedelta(seconds=99),
        )
    other = start(log, "202611111111111", profile="other-board")
    log.record_step(
        other.id, step="keygen", attempt=1, outcome="passed", started_at=T0, ended_at=T0 + timedelta(1)
    )

    assert log.step_durations(profile="welma-optee", step="keygen") == [6.0, 5.0, 4.0, 3.0]
    assert log.step_durations(profile="welma-optee", step="keygen", limit=2) == [6.0, 5.0]
    assert log.step_durations(profile="welma-optee", step="sign") == []


def test_units_are_listed_newest_first_and_filtered(log: AuditLog, clock: Clock) -> None:
    ids = {}
    for n, (operator, batch, fixture, result) in enumerate(
        [
            ("ann", "B-1", "slot-1", "passed"),
            ("bob", "B-1", "slot-2", "failed"),
            ("ann", "B-2", "slot-1", "passed"),
            ("bob", "B-2", "slot-2", "aborted"),
        ]
    ):
        unit = start(log, f"2026000{n}", operator=operator, batch=batch, fixture=fixture)
        log.finish_unit(unit.id, result=result, failed_step=None if result == "passed" else "wipe")
        ids[n] = unit.id
        clock.advance(hours=1)
    start(log, "3000", operator="cy")

    assert [u.serial for u in log.units()] == ["3000", "20260003", "20260002", "20260001", "20260000"]
    assert [u.serial for u in log.units(limit=2, offset=1)] == ["20260003", "20260002"]
    assert [u.id for u in log.units(serial_prefix="2026")] == [ids[3], ids[2], ids[1], ids[0]]
    assert [u.id for u in log.units(result="passed")] == [ids[2], ids[0]]
    assert [u.id for u in log.units(operator="bob")] == [ids[3], ids[1]]
    assert [u.id for u in log.units(batch="B-1")] == [ids[1], ids[0]]
    assert [u.id for u in log.units(fixture="slot-2")] == [ids[3], ids[1]]
    assert [u.id for u in log.units(failed_step="wipe")] == [ids[3], ids[1]]
    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    assert [u.id for u in log.units(since=since, until=until)] == [ids[2], ids[1]]
    assert [u.serial for u in log.unfinished_units()] == ["20260001", "3000"]  # oldest first


def test_a_serial_prefix_is_literal_not_a_pattern(log: AuditLog) -> None:
    start(log, "AB*1")
    start(log, "ABC1")
    assert [u.serial for u in log.units(serial_prefix="AB*")] == ["AB*1"]
    assert [u.serial for u in log.units(serial_prefix="AB?")] == []


# ----------------------------------------------------------------------------------- station units


def test_station_units_lists_the_latest_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        passed = start(log, "202600000000001", operator="ann")
        log.finish_unit(passed.id, result="passed")
        failed = start(log, "202600000000002", operator="bob")
        log.finish_unit(failed.id, result="failed", failed_step="keygen")
        start(log, "309900000000003", operator="cy")

    assert main(["--home", str(tmp_path), "units", "--serial", "2026"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "SERIAL", "STATE", "FAILED", "STEP", "OPERATOR", "STARTED", "DURATION"]
    assert lines[1].split()[:5] == [str(failed.id), "202600000000002", "failed", "keygen", "bob"]
    assert lines[2].split()[:4] == [str(passed.id), "202600000000001", "passed", "ann"]
    assert len(lines) == 3

    assert main(["--home", str(tmp_path), "units", "--result", "running"]) == 0
    assert "309900000000003" in capsys.readouterr().out


def test_station_units_without_an_audit_log_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), "units"]) == 0
    assert "No units recorded yet" in capsys.readouterr().out
    assert not (tmp_path / "audit.db").exists()
