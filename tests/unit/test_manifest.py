"""Batch manifests: serial,device[,fixture[,order]] — the order column is optional, old manifests keep working."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.batch import BatchJob, read_manifest
from station.errors import ConfigError

FIXTURES = {"sim-01": "ssh://root@127.0.0.2:2222"}


def manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "boards.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_existing_manifest_reads_as_before(tmp_path: Path) -> None:
    jobs = read_manifest(
        manifest(
            tmp_path, "serial,device,fixture\n202600000000001,ssh://root@h:22,A1\n202600000000002,sim-01\n"
        ),
        fixtures=FIXTURES,
    )
    assert jobs == [
        BatchJob("202600000000001", "ssh://root@h:22", "A1", 2),
        BatchJob("202600000000002", FIXTURES["sim-01"], "sim-01", 3),
    ]


def test_a_fourth_column_names_each_boards_order(tmp_path: Path) -> None:
    jobs = read_manifest(
        manifest(tmp_path, "202600000000001,sim-01,,WO-1\n202600000000002,sim-01\n"), fixtures=FIXTURES
    )
    assert [(job.serial, job.fixture, job.order) for job in jobs] == [
        ("202600000000001", "sim-01", "WO-1"),
        ("202600000000002", "sim-01", None),
    ]


def test_a_header_may_put_the_columns_in_any_order(tmp_path: Path) -> None:
    (job,) = read_manifest(
        manifest(tmp_path, "order,device,serial\nWO-9,sim-01,202600000000009\n"), fixtures=FIXTURES
    )
    assert (job.serial, job.device, job.order, job.line) == ("202600000000009", FIXTURES["sim-01"], "WO-9", 2)


def test_an_older_header_with_other_names_keeps_the_usual_column_order(tmp_path: Path) -> None:
    (job,) = read_manifest(manifest(tmp_path, "serial,address\n202600000000001,sim-01\n"), fixtures=FIXTURES)
    assert (job.serial, job.fixture, job.order) == ("202600000000001", "sim-01", None)


def test_a_row_without_a_device_names_file_and_line(tmp_path: Path) -> None:
    path = manifest(tmp_path, "order,serial,device\nWO-1,202600000000001,\n")
    with pytest.raises(ConfigError, match=r"boards.csv, line 2: expected serial,device"):
        read_manifest(path, fixtures=FIXTURES)
