"""The administrator's device-profile requests: list, show and install a profile in the service's home.

A profile installed here is checked first exactly as the station reads it (:mod:`station.profiles`: unknown
tables and keys refused with the line, every value checked); only a profile that loads is written, whole
(HOME/profiles/NAME.toml, replacing the station's own copy only when asked).  The shipped profiles stay as
they are: a station copy of the same name wins over a shipped one, as always.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.errors import ConfigError, StationError
from station.service.connection import Connection, Handler, bind

if TYPE_CHECKING:
    from station.service.server import StationService

# The most a profile's text may hold (the shipped ones are a few KiB).
PROFILE_LIMIT = 256 * 1024


def handlers(service: StationService) -> dict[str, Handler]:
    """The profile requests: op name → handler."""
    return {"profiles": bind(service, profiles)}


def profiles(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    action = args.get("action")
    if action == "list":
        return {"profiles": profile_list(service.home.profiles_dir)}
    name = _name(args.get("name"))
    if action == "show":
        path = _path_of(service.home.profiles_dir, name)
        return {
            "name": name,
            "source": _source(path, service.home.profiles_dir),
            "text": path.read_text("utf-8"),
        }
    if action == "install":
        return install(
            service.home.profiles_dir,
            name,
            args.get("profile_text"),
            replace=bool(args.get("replace")),
            source_name=str(args.get("source_name") or f"{name}.toml"),
        )
    raise StationError("a profiles request is list, show or install")


def profile_list(profiles_dir: Path) -> list[dict[str, str]]:
    """Every profile the station can use: name, where it comes from (the station's copy wins)."""
    from station.profiles import available_profiles

    return [
        {"name": name, "source": _source(_path_of(profiles_dir, name), profiles_dir)}
        for name in available_profiles(profiles_dir)
    ]


def install(profiles_dir: Path, name: str, text: Any, *, replace: bool, source_name: str) -> dict[str, Any]:
    """Check ``text`` as a profile; write it as HOME/profiles/NAME.toml only if it loads."""
    from station.files import write_file_atomically
    from station.profiles import SHIPPED_DIR, load_profile_file

    if not isinstance(text, str) or not text.strip():
        raise StationError("the profile's text is missing from the request — give its file to the command")
    data = text.encode("utf-8")
    if len(data) > PROFILE_LIMIT:
        raise StationError(
            f"{source_name} is over {PROFILE_LIMIT // 1024} KiB — a device profile is far smaller"
        )
    target = profiles_dir / f"{name}.toml"
    existed = target.exists()
    if existed and not replace:
        raise StationError(
            f"this station already has a profile {name!r} of its own — give --replace to replace it "
            f"(`station profiles show {name}` shows it), or choose another --name"
        )
    scratch = Path(tempfile.mkdtemp(prefix="profile-"))
    try:
        candidate = scratch / f"{name}.toml"
        candidate.write_bytes(data)
        try:
            profile = load_profile_file(candidate)
        except ConfigError as exc:
            # The check names the caller's file, not the service's scratch copy.
            raise ConfigError(str(exc).replace(str(candidate), source_name)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    profiles_dir.mkdir(parents=True, exist_ok=True)
    write_file_atomically(target, data, mode=0o644, replace=True)
    return {
        "name": name,
        "path": str(target),
        "replaced": existed,
        "overrides_shipped": (SHIPPED_DIR / f"{name}.toml").exists(),
        "serial_pattern": profile.serial_pattern.pattern,
    }


def _name(value: Any) -> str:
    name = str(value or "")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name.startswith("."):
        raise StationError(f"profile name {name!r} is not valid — use letters, digits, '.', '_' and '-'")
    return name


def _path_of(profiles_dir: Path, name: str) -> Path:
    from station.profiles import SHIPPED_DIR, available_profiles

    for directory in (profiles_dir, SHIPPED_DIR):
        if (directory / f"{name}.toml").is_file():
            return directory / f"{name}.toml"
    raise StationError(
        f"no device profile named {name!r} — available: {', '.join(available_profiles(profiles_dir))}"
    )


def _source(path: Path, profiles_dir: Path) -> str:
    return "station" if path.parent == profiles_dir else "shipped"
