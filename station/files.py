"""The station's one way to write a file that must never be seen half-written.

Keys, certificates, serial counters, exports, reports, settings, the MES outbox, the simulator's board files:
each is written to a temporary file of its own in the same directory (a unique name per write, so parallel
writers never share one), created with its final mode (never a moment with wider permissions), fsynced, moved
into place, and the directory fsynced so the rename itself survives a power cut.  A reader sees the old file or
the whole new one; a failed write leaves the old file and no temporary behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

T = TypeVar("T")


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(path: Path, mode: int) -> tuple[Path, int]:
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; keys must be exactly 0600, exports 0644
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    return temporary, fd


def _move_into_place(temporary: Path, path: Path, *, replace: bool) -> None:
    try:
        if replace:
            os.replace(temporary, path)
        else:
            # os.link fails if ``path`` exists: two stations initialising one directory cannot overwrite a key.
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)


def write_file_atomically(path: Path, data: bytes, *, mode: int = 0o644, replace: bool = True) -> None:
    """Write ``data`` to ``path``: readers see nothing/the old file or the whole new one.

    Without ``replace`` an existing ``path`` is an error (:class:`FileExistsError`), never overwritten.
    """
    temporary, fd = _temporary(path, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _move_into_place(temporary, path, replace=replace)


def write_text_atomically(
    path: Path, write: Callable[[TextIO], T], *, mode: int = 0o644, replace: bool = True
) -> T:
    """Write a UTF-8 text file through ``write(out)`` (an export streams its rows); return what it returns.

    If ``write`` raises, the old file stays as it was and no temporary file is left.
    """
    temporary, fd = _temporary(path, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            result = write(out)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _move_into_place(temporary, path, replace=replace)
    return result
