"""What a technician saves goes only to the output folder — never into the station home, whose audit
log and CA key a crafted path would otherwise reach — and never replaces a file; exports and reports
(they name operators) are written 0640."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from station.audit import AuditLog
from station.config import LabelSettings, OutputSettings, StationConfig
from station.home import StationHome
from station.outputs import (
    DEFAULT_OUTPUT_FOLDER,
    EXPORT_MODE,
    OutputRefused,
    check_output_path,
    ensure_output_folder,
    free_name,
    output_folder,
    save_output,
)
from tests.helpers.audit import start

PDF = b"%PDF-1.4 label\n"


@pytest.fixture
def home(tmp_path) -> StationHome:
    station_home = StationHome(tmp_path / "home").create()
    (station_home.ca_dir).mkdir()
    (station_home.ca_dir / "ca.key").write_bytes(b"KEY")
    AuditLog(station_home.audit_db).close()
    return station_home


@pytest.fixture
def folder(tmp_path, home) -> Path:
    config = StationConfig(name="line-3", output=OutputSettings(folder=str(tmp_path / "labels")))
    return ensure_output_folder(config, home)


def test_the_output_folder_comes_from_station_toml_and_defaults_outside_the_home(tmp_path, home):
    assert output_folder(StationConfig(name="s"), home) == DEFAULT_OUTPUT_FOLDER.resolve()
    assert not str(DEFAULT_OUTPUT_FOLDER).startswith(str(home.root))
    chosen = StationConfig(name="s", output=OutputSettings(folder=str(tmp_path / "out")))
    assert output_folder(chosen, home) == (tmp_path / "out").resolve()
    # The older [label] folder key still works when [output] folder is not set.
    older = StationConfig(name="s", label=LabelSettings(folder=str(tmp_path / "old")))
    assert output_folder(older, home) == (tmp_path / "old").resolve()
    made = ensure_output_folder(chosen, home)
    assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) & 0o007 == 0


@pytest.mark.parametrize("where", ["labels", "."])
def test_an_output_folder_inside_the_home_is_refused(home, where):
    config = StationConfig(name="s", output=OutputSettings(folder=str(home.root / where)))
    with pytest.raises(OutputRefused, match="is inside the station home .* outside it"):
        output_folder(config, home)


def test_an_output_folder_holding_the_home_is_refused(tmp_path, home):
    config = StationConfig(name="s", output=OutputSettings(folder=str(tmp_path)))
    with pytest.raises(OutputRefused, match="holds the station home"):
        output_folder(config, home)


def test_a_label_is_saved_in_the_output_folder_0640_and_never_replaces_a_file(folder, home):
    saved = save_output("label-202600000000001.pdf", PDF, folder=folder, home=home, suffix=".pdf")
    assert saved == folder / "label-202600000000001.pdf" and saved.read_bytes() == PDF
    assert stat.S_IMODE(saved.stat().st_mode) == EXPORT_MODE
    with pytest.raises(OutputRefused, match="already exists and is never replaced"):
        save_output(saved, b"other", folder=folder, home=home, suffix=".pdf")
    assert saved.read_bytes() == PDF
    assert free_name(folder, saved.name) == folder / "label-202600000000001-2.pdf"
    (folder / "sub").mkdir()
    assert save_output(folder / "sub" / "x.pdf", PDF, folder=folder, home=home).parent == folder / "sub"


def crafted_paths(folder: Path, home: StationHome) -> list[tuple[str, str]]:
    (folder / "to-home").symlink_to(home.root)
    (folder / "to-key.pdf").symlink_to(home.ca_dir / "ca.key")
    return [
        (str(home.audit_db), "inside the station home"),
        (str(home.ca_dir / "ca.key"), "inside the station home"),
        (f"../{home.root.name}/audit.db", "'..'"),
        (str(folder / ".." / "home" / "ca" / "ca.key"), "'..'"),
        ("../elsewhere.pdf", "'..'"),
        (str(folder / "to-home" / "audit.db"), "inside the station home"),
        (str(folder / "to-key.pdf"), "inside the station home"),
        ("/tmp/anywhere.pdf", "outside the output folder"),
        ("label.txt", "must end in .pdf"),
        ("", "no file name"),
        ("bad\nname.pdf", "control characters"),
    ]


def test_crafted_paths_into_the_home_or_out_of_the_folder_are_refused_and_nothing_is_written(folder, home):
    before = {p: p.read_bytes() for p in (home.audit_db, home.ca_dir / "ca.key")}
    for path, words in crafted_paths(folder, home):
        with pytest.raises(OutputRefused, match=words):
            save_output(path, PDF, folder=folder, home=home, suffix=".pdf")
    assert {p: p.read_bytes() for p in before} == before
    assert not Path("/tmp/anywhere.pdf").exists()
    # A symbolic link inside the folder pointing elsewhere in it is refused too (the name is not the file).
    (folder / "alias.pdf").symlink_to(folder / "real.pdf")
    with pytest.raises(OutputRefused, match="symbolic link|already exists"):
        check_output_path("alias.pdf", folder=folder, home=home, suffix=".pdf")


def test_station_audit_export_writes_0640_whatever_the_umask(tmp_path):
    station_home = StationHome(tmp_path / "home").create()
    with AuditLog(station_home.audit_db) as log:
        log.finish_unit(start(log, "202600000000001", operator="Zoë").id, result="passed")
    for fmt in ("csv", "jsonl", "pdf"):
        out = tmp_path / f"units.{fmt}"
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os, sys; os.umask(0o022); from station.cli import main; sys.exit(main(sys.argv[1:]))",
                "--home",
                str(station_home.root),
                "audit",
                "export",
                "--format",
                fmt,
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ},
        )
        assert run.returncode == 0, run.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o640, fmt
