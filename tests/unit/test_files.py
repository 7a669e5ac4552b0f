"""The one atomic file writer: whole file or old file, exact mode, unique temporary names, nothing left over."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from station.files import write_file_atomically, write_text_atomically


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_a_key_gets_exactly_its_mode_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        write_file_atomically(tmp_path / "cert.pem", b"certificate", mode=0o644)
    finally:
        os.umask(old)
    old = os.umask(0)
    try:
        write_file_atomically(tmp_path / "ca.key", b"secret key", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cert.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert (tmp_path / "ca.key").read_bytes() == b"secret key"


def test_without_replace_an_existing_file_is_never_overwritten(tmp_path):
    path = tmp_path / "ca.key"
    write_file_atomically(path, b"first station's key", mode=0o600, replace=False)
    with pytest.raises(FileExistsError):
        write_file_atomically(path, b"second station's key", mode=0o600, replace=False)
    assert path.read_bytes() == b"first station's key"
    assert leftovers(tmp_path) == []


def test_a_text_write_that_fails_halfway_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "units.csv"
    path.write_text("previous export\n")

    def breaks(out):
        out.write("half a row,")
        raise OSError("USB stick pulled")

    with pytest.raises(OSError, match="USB stick pulled"):
        write_text_atomically(path, breaks)
    assert path.read_text() == "previous export\n"
    assert leftovers(tmp_path) == []


def test_a_text_write_returns_what_the_writer_returns(tmp_path):
    assert write_text_atomically(tmp_path / "n.txt", lambda out: out.write("three\n")) == 6
    assert (tmp_path / "n.txt").read_text() == "three\n"


def test_parallel_writers_of_one_file_never_share_a_temporary_name(tmp_path):
    path = tmp_path / "fixtures.toml"
    contents = [f"writer {n}\n".encode() * 1000 for n in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(20):
                write_file_atomically(path, data)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(data,)) for data in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert path.read_bytes() in contents  # one whole content, never a mix
    assert leftovers(tmp_path) == []
