"""Files people take away from the station: the technician's output folder, and the mode of exports.

A technician saves labels and PDFs only into the output folder (``[output] folder`` in station.toml;
default ``~/welma-station-output`` of the account running the window), never into the station home —
the home holds the audit log and the CA key, and a save dialog that can reach them can overwrite them.
:func:`check_output_path` is the one rule every save goes through: a path with ``..``, through a symbolic
link, outside the output folder or inside the station home is refused with a message saying where files
go; an existing file is never replaced (:func:`save_output` fails rather than overwrite, atomically).

Exports and reports (CSV, JSON Lines, PDF) name operators, so they are written readable by their owner
and group only (:data:`EXPORT_MODE`, 0640): :func:`write_export` for bytes, and
:func:`station.report.write_text_atomically` for text use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from station.config import StationConfig
from station.errors import StationError
from station.home import StationHome
from station.pki import write_file_atomically

# Exports, reports and saved labels: owner read-write, group read (a quality team's group), nobody else.
EXPORT_MODE = 0o640
DEFAULT_OUTPUT_FOLDER = Path.home() / "welma-station-output"


class OutputRefused(StationError):
    """A file may not be written there; the message says why and where files go instead."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def output_folder(config: StationConfig, home: StationHome) -> Path:
    """The technician's output folder, resolved: ``[output] folder``, else the older ``[label] folder``,
    else ``~/welma-station-output``.  Refused if it is inside the station home or holds it."""
    chosen = config.output.folder or config.label.folder
    key = (
        "[output] folder"
        if config.output.folder
        else "[label] folder"
        if chosen
        else "the default output folder"
    )
    folder = Path(chosen).expanduser() if chosen else DEFAULT_OUTPUT_FOLDER
    if not folder.is_absolute():
        raise OutputRefused(
            f"{key} {folder} must be an absolute path (such as /srv/labels) — fix station.toml"
        )
    folder = folder.resolve()
    station_home = home.root.expanduser().resolve()
    if _inside(folder, station_home) or _inside(station_home, folder):
        raise OutputRefused(
            f"{key} {folder} {'is inside' if _inside(folder, station_home) else 'holds'} the station home "
            f"{station_home} (audit log, CA key) — an administrator sets [output] folder in station.toml to a "
            "folder outside it, such as ~/welma-station-output"
        )
    return folder


def ensure_output_folder(config: StationConfig, home: StationHome) -> Path:
    """:func:`output_folder`, created if missing (owner and group may read what is saved there)."""
    folder = output_folder(config, home)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise OutputRefused(
            f"the output folder {folder} could not be created ({exc.strerror}) — an administrator creates it or sets "
            "[output] folder in station.toml"
        ) from None
    return folder


def check_output_path(
    path: str | os.PathLike[str], *, folder: Path, home: StationHome, suffix: str = ""
) -> Path:
    """The file a technician asked to write, if it may be written: inside ``folder`` (a relative name is
    taken inside it), not through ``..`` or a symbolic link, not in the station home, not existing yet,
    ending in ``suffix`` when given.  Raises :class:`OutputRefused` saying why not."""
    raw = os.fspath(path)
    where = f"files you save go to the output folder {folder}"
    if not raw.strip():
        raise OutputRefused(f"no file name given — {where}; type a file name")
    if "\x00" in raw or not raw.isprintable():
        raise OutputRefused(f"that file name contains control characters — {where}; type a plain name")
    given = Path(raw).expanduser()
    if ".." in given.parts:
        raise OutputRefused(f"{raw}: a path with '..' is refused — {where}; type a plain file name")
    candidate = given if given.is_absolute() else folder / given
    normal = Path(os.path.normpath(candidate))
    real = Path(os.path.realpath(normal))
    station_home = Path(os.path.realpath(home.root.expanduser()))
    if _inside(real, station_home) or _inside(normal, station_home):
        raise OutputRefused(
            f"{raw} is inside the station home {station_home}, which holds the audit log and the CA key — nothing "
            f"was written; {where}"
        )
    if real != normal:
        raise OutputRefused(f"{raw} goes through a symbolic link — nothing was written; {where}")
    if not _inside(real, folder) or real == folder:
        raise OutputRefused(f"{raw} is outside the output folder — nothing was written; {where}")
    if suffix and real.suffix.lower() != suffix:
        raise OutputRefused(
            f"{raw}: the file name must end in {suffix} — type a name such as label-SERIAL{suffix}"
        )
    if os.path.lexists(real):
        raise OutputRefused(
            f"{real} already exists and is never replaced — choose another name (or move the old "
            "file away first)"
        )
    if not real.parent.is_dir():
        raise OutputRefused(f"the folder {real.parent} does not exist — {where}")
    return real


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-2``, ``name-3``… so that a proposed name never replaces a file."""
    first = folder / name
    stem, suffix = first.stem, first.suffix
    candidate, n = first, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate


def save_output(
    path: str | os.PathLike[str], data: bytes, *, folder: Path, home: StationHome, suffix: str = ""
) -> Path:
    """Write ``data`` to a file the technician chose (checked by :func:`check_output_path`), whole or not at
    all, mode 0640; an existing file is never replaced, even one that appeared since the check."""
    target = check_output_path(path, folder=folder, home=home, suffix=suffix)
    try:
        write_file_atomically(target, data, mode=EXPORT_MODE, replace=False)
    except FileExistsError:
        raise OutputRefused(f"{target} already exists and is never replaced — choose another name") from None
    except OSError as exc:
        raise OutputRefused(
            f"could not write {target} ({exc.strerror}) — check the folder is writable and has "
            "space, then save again"
        ) from None
    return target


def write_export(path: Path, data: bytes) -> None:
    """Write an export or report (it names operators) whole, replacing an older one, mode 0640."""
    write_file_atomically(path, data, mode=EXPORT_MODE, replace=True)
