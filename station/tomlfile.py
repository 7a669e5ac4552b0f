"""Reading the station's TOML files (station.toml, device profiles, fixtures) with errors a line
engineer can act on: every problem names the file, the line and what is wrong."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from station.errors import ConfigError


def read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and its parsed content; undecodable bytes and syntax errors name the line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}, line {line}: is not UTF-8 text (byte 0x{raw[exc.start]:02x}) — save the file as UTF-8"
        ) from exc
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc} — fix the TOML syntax there") from exc


def _header(table: str) -> re.Pattern[str]:
    return re.compile(rf"\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")


_ANY_HEADER = re.compile(r"\s*\[")


def find_line(text: str, dotted_key: str, *, occurrence: int = 1) -> int | None:
    """The 1-based line where ``dotted_key`` is set, looking inside its own table.

    ``steps.guard.retries`` is the ``retries =`` line below ``[steps.guard]`` (not the first
    ``retries`` of the file); ``occurrence`` picks the n-th ``[[fixture]]`` of an array of tables.
    A key that is itself a table (``steps.frobnicate``) is found at its header.
    """
    lines = text.splitlines()
    table, _, leaf = dotted_key.rpartition(".")
    key_line = re.compile(rf"\s*\"?{re.escape(leaf)}\"?\s*=")
    if table:
        headers = [number for number, line in enumerate(lines) if _header(table).match(line)]
        if len(headers) >= occurrence:
            start = headers[occurrence - 1]
            for number in range(start + 1, len(lines)):
                if _ANY_HEADER.match(lines[number]):
                    break
                if key_line.match(lines[number]):
                    return number + 1
            return start + 1
    else:
        for number, line in enumerate(lines):
            if _ANY_HEADER.match(line):
                break
            if key_line.match(line):
                return number + 1
    whole = _header(dotted_key)
    for number, line in enumerate(lines):
        if whole.match(line):
            return number + 1
    return None


def config_error(
    path: Path, text: str, dotted_key: str, problem: str, *, occurrence: int = 1, shown_as: str | None = None
) -> ConfigError:
    """``<file>, line <n>: <key>: <problem>`` (without the line when it cannot be found)."""
    line = find_line(text, dotted_key, occurrence=occurrence)
    where = f"{path}, line {line}" if line else str(path)
    return ConfigError(f"{where}: {shown_as or dotted_key}: {problem}")


def refuse_unknown(
    path: Path,
    text: str,
    table: dict[str, Any],
    known: Iterable[str],
    *,
    prefix: str = "",
    occurrence: int = 1,
) -> None:
    """A key or table the reader does not know is an error naming its line: a typo (``timout_s = 90``) must
    not silently keep the default."""
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise config_error(
            path,
            text,
            f"{prefix}{unknown[0]}",
            f"is not a setting the station knows (known: {', '.join(sorted(known))}) — check the spelling",
            occurrence=occurrence,
        )
