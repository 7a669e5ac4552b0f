"""Start-up check of the station home's permissions: the home, the audit log and exports kept in it.

The audit log names every board, operator and certificate; an export or backup left readable by
everyone on the line PC hands that out.  At start the station makes them private to its own user
again (and says so), and refuses to run on files another user owns — it cannot make those private.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from station.errors import StationError
from station.home import StationHome

EXPORTS_DIR = "exports"
# Files in the home that hold what exports and backups hold.
EXPORT_SUFFIXES = (".csv", ".jsonl", ".pdf", ".db", ".db-wal", ".db-shm", ".bak")


def _candidates(home: StationHome) -> list[Path]:
    paths = [home.root]
    audit = home.audit_db
    paths += [audit, audit.with_name(audit.name + "-wal"), audit.with_name(audit.name + "-shm")]
    exports = home.root / EXPORTS_DIR
    if exports.is_dir():
        paths.append(exports)
        paths += sorted(p for p in exports.rglob("*") if p.is_file() or p.is_dir())
    if home.root.is_dir():
        paths += sorted(p for p in home.root.iterdir() if p.is_file() and p.name.endswith(EXPORT_SUFFIXES))
    seen: list[Path] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen


def secure_home(home: StationHome) -> list[str]:
    """Make the home, the audit log and kept exports private to this user; return what was changed, in words.

    Raises :class:`StationError` (nothing changed after the first refusal) when a file is owned by
    another user, or its mode cannot be changed.
    """
    changes: list[str] = []
    me = os.geteuid()
    for path in _candidates(home):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            continue
        mode = stat.S_IMODE(info.st_mode)
        loose = mode & 0o077
        if not loose:
            continue
        if info.st_uid != me:
            raise StationError(
                f"{path} is readable by others (mode {mode:04o}) and owned by another user (uid {info.st_uid}), so "
                f"the station cannot make it private — as its owner or root, run `chmod go-rwx {path}`, then start "
                "the station again"
            )
        wanted = mode & 0o700
        try:
            path.chmod(wanted)
        except OSError as exc:
            raise StationError(
                f"{path} is readable by others (mode {mode:04o}) and could not be made private ({exc.strerror}) — "
                f"run `chmod go-rwx {path}`, then start the station again"
            ) from exc
        changes.append(
            f"{path} was open to other users (mode {mode:04o}); made private to this user ({wanted:04o})"
        )
    return changes
