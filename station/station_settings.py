"""Changing station.toml's settings in place (``station settings …``, the station service's ``production_mode``).

A change rewrites one line of the file (or adds it under its table), keeps the rest exactly as it was, and is
checked by reading the whole file back before it replaces the old one: a change that would make station.toml
unreadable is refused and nothing is written.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from station.config import load_config
from station.errors import StationError
from station.files import write_file_atomically
from station.tomlfile import find_line

_STATION_HEADER = re.compile(r"^\s*\[\s*station\s*\]\s*(#.*)?$")
_PRODUCTION_LINE = re.compile(r"^\s*production\s*=")


def set_production(config_file: Path, on: bool) -> bool:
    """Set ``[station] production`` in ``config_file``; returns the value it had before."""
    text = config_file.read_text(encoding="utf-8") if config_file.exists() else ""
    before = load_config(config_file).production if config_file.exists() else False
    value = f"production = {'true' if on else 'false'}"
    lines = text.splitlines()
    line = find_line(text, "station.production") if text else None
    if line is not None and _PRODUCTION_LINE.match(lines[line - 1]):
        lines[line - 1] = value
    else:
        header = next(
            (number for number, line_text in enumerate(lines) if _STATION_HEADER.match(line_text)), None
        )
        if header is None:
            lines = ["[station]", value, *([""] if lines else []), *lines]
        else:
            lines.insert(header + 1, value)
    new_text = "\n".join(lines) + "\n"
    # Read the new text back as station.toml before it replaces the file: a broken result is never written.
    fd, scratch = tempfile.mkstemp(prefix=".station-toml-", suffix=".toml", dir=config_file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new_text)
        if load_config(Path(scratch)).production is not on:
            raise StationError(
                f"could not set production = {str(on).lower()} in {config_file} — edit it by hand"
            )
    finally:
        Path(scratch).unlink(missing_ok=True)
    mode = config_file.stat().st_mode & 0o777 if config_file.exists() else 0o600
    write_file_atomically(config_file, new_text.encode("utf-8"), mode=mode, replace=True)
    return before
