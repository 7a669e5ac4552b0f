"""Who may do what at the station: technicians sign in by name or badge; an administrator's PIN
guards the station's settings.

Technicians provision; an administrator chooses the device profile, the fixtures file, whether a
scan starts provisioning by itself, the font size and the label stock.  Those choices live in
``HOME/station-settings.json``; the PIN that unlocks them is stored in ``HOME/admin.pin`` (mode 0600)
as a salted PBKDF2-HMAC-SHA256 hash, never in clear.  ``station admin set-pin`` sets it.

A PIN is short, so the hash alone would not stop someone who can read the file: the file's
permissions do that, and :class:`AdminLock` slows down guessing at the station itself — one lock in the station
service for every window (``admin_unlock``, station/service/window_ops.py), so reopening a window does not reset it.
The shared PIN is a demo-mode option; production mode refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from station.config import Fixture, StationConfig, load_fixtures
from station.errors import ConfigError, StationError
from station.home import StationHome
from station.label import DEFAULT_LAYOUT, LABEL_LAYOUTS
from station.pki import write_file_atomically

PIN_FILE = "admin.pin"
SETTINGS_FILE = "station-settings.json"
PIN_SCHEME = "pbkdf2-sha256"
# OWASP's 2023 figure for PBKDF2-HMAC-SHA256; about 0.15 s per check on a line PC, so the GUI checks
# a PIN on a worker thread.
PBKDF2_ITERATIONS = 600_000
MIN_PIN_LENGTH = 4
MAX_PIN_LENGTH = 64
# After this many wrong PINs in a row the station refuses every PIN for LOCKOUT_S seconds.
MAX_WRONG_PINS = 5
LOCKOUT_S = 60.0


class AdminPinError(StationError):
    """The admin PIN was not accepted; the message says why and what to do."""


# -- the technician ---------------------------------------------------------------------------

MAX_OPERATOR_LENGTH = 64


def operator_name(entry: str) -> str:
    """The operator recorded with every unit, from a typed name or a scanned badge."""
    name = " ".join(entry.split())
    if not name:
        raise StationError("type your name or scan your badge to sign in")
    if len(name) > MAX_OPERATOR_LENGTH:
        raise StationError(
            f"that sign-in is {len(name)} characters long (at most {MAX_OPERATOR_LENGTH}) — the badge reader "
            "probably read twice; scan your badge again"
        )
    if not name.isprintable():
        raise StationError(
            "that sign-in contains control characters — type your name or scan your badge again"
        )
    return name


# -- the PIN ----------------------------------------------------------------------------------


def pin_path(home: StationHome) -> Path:
    return home.root / PIN_FILE


def check_new_pin(pin: str) -> None:
    """Raise :class:`AdminPinError` if ``pin`` may not become the admin PIN."""
    if len(pin) < MIN_PIN_LENGTH:
        raise AdminPinError(
            f"the admin PIN must be at least {MIN_PIN_LENGTH} characters long — choose a longer one"
        )
    if len(pin) > MAX_PIN_LENGTH:
        raise AdminPinError(f"the admin PIN may be at most {MAX_PIN_LENGTH} characters long")
    if not pin.isprintable() or pin != pin.strip():
        raise AdminPinError("the admin PIN may not contain control characters or start or end with a space")
    if len(set(pin)) == 1:
        raise AdminPinError("the admin PIN may not repeat one character only (such as 0000) — choose another")


def hash_pin(pin: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``pbkdf2-sha256$ITERATIONS$SALT$HASH`` (salt and hash in hex)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, iterations)
    return f"{PIN_SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def pin_matches(pin: str, stored: str) -> bool:
    """Whether ``pin`` is the PIN ``stored`` (as written by :func:`hash_pin`) was made from."""
    try:
        scheme, iterations_text, salt_hex, digest_hex = stored.strip().split("$")
        iterations = int(iterations_text)
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        raise AdminPinError(
            "the stored admin PIN is damaged — an administrator sets it again with `station admin set-pin`"
        ) from None
    if scheme != PIN_SCHEME or iterations < 1 or not salt or not expected:
        raise AdminPinError(
            "the stored admin PIN is in a format this station does not know — set it again with "
            "`station admin set-pin`"
        )
    actual = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(actual, expected)


def set_pin(home: StationHome, pin: str) -> None:
    """Store a new admin PIN (hashed) in ``HOME/admin.pin``, readable by the station's user only."""
    check_new_pin(pin)
    home.create()
    write_file_atomically(pin_path(home), (hash_pin(pin) + "\n").encode("ascii"), mode=0o600, replace=True)


def pin_is_set(home: StationHome) -> bool:
    return pin_path(home).is_file()


def verify_pin(home: StationHome, pin: str) -> bool:
    """Whether ``pin`` is this station's admin PIN.  Raises :class:`AdminPinError` if none can be checked."""
    path = pin_path(home)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise AdminPinError(
            "no admin PIN is set on this station, so settings stay locked — an administrator sets one "
            "with `station admin set-pin`"
        ) from None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # Anyone who can write the file can choose the PIN: refuse it rather than trust it.
        raise AdminPinError(
            f"{path} can be changed by other users (mode {stat.S_IMODE(info.st_mode):04o}) — an administrator "
            "sets the PIN again with `station admin set-pin`"
        )
    return pin_matches(pin, path.read_text(encoding="ascii", errors="replace"))


class AdminLock:
    """Unlocks admin settings with the PIN, refusing every PIN for a while after repeated wrong ones."""

    def __init__(self, home: StationHome, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.home = home
        self._clock = clock
        self._wrong = 0
        self._locked_until = 0.0

    def unlock(self, pin: str) -> None:
        """Return if ``pin`` is right; raise :class:`AdminPinError` saying why not."""
        wait = self._locked_until - self._clock()
        if wait > 0:
            raise AdminPinError(
                f"too many wrong PINs — settings are locked for another {wait:.0f} s; ask an administrator"
            )
        if verify_pin(self.home, pin):
            self._wrong = 0
            return
        self._wrong += 1
        if self._wrong >= MAX_WRONG_PINS:
            self._wrong = 0
            self._locked_until = self._clock() + LOCKOUT_S
            raise AdminPinError(
                f"wrong PIN, {MAX_WRONG_PINS} times in a row — settings are locked for {LOCKOUT_S:.0f} s"
            )
        left = MAX_WRONG_PINS - self._wrong
        raise AdminPinError(
            f"wrong PIN — settings stay locked ({left} tries left before a {LOCKOUT_S:.0f} s lockout)"
        )


# -- the settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StationSettings:
    """The administrator's choices for this station's technician screen."""

    # None: station.toml's default_profile (a fixture's own profile still wins for that fixture).
    profile: str | None = None
    # None: station.toml's fixtures, else the simulator's HOME/sim/fixtures.toml.
    fixtures_file: str | None = None
    auto_start: bool = False
    large_font: bool = False
    label_layout: str = DEFAULT_LAYOUT

    def profile_for(self, config: StationConfig, fixture: Fixture | None) -> str:
        """The profile a board on ``fixture`` is provisioned with."""
        from station.engine.selection import choose_profile

        return choose_profile(config, fixture, setting=self.profile)


def settings_path(home: StationHome) -> Path:
    return home.root / SETTINGS_FILE


def load_settings(home: StationHome) -> StationSettings:
    """The saved settings; a missing file means every default."""
    path = settings_path(home)
    if not path.exists():
        return StationSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: not valid JSON ({exc}) — fix it or delete it to go back to the defaults"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object — delete it to go back to the defaults")
    settings = StationSettings()
    known = {field.name: field for field in fields(StationSettings)}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown setting {key!r} — known: {', '.join(known)}")
        if key in ("auto_start", "large_font"):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: {key} must be true or false")
        elif key == "label_layout":
            if value not in LABEL_LAYOUTS:
                raise ConfigError(f"{path}: label_layout must be one of {', '.join(LABEL_LAYOUTS)}")
        elif value is not None and not (isinstance(value, str) and value):
            raise ConfigError(f"{path}: {key} must be a non-empty string or null")
        settings = replace(settings, **{key: value})
    return settings


def save_settings(home: StationHome, settings: StationSettings) -> None:
    """Write the settings atomically (the file is replaced whole, never half-written)."""
    if settings.label_layout not in LABEL_LAYOUTS:
        raise ConfigError(f"label layout must be one of {', '.join(LABEL_LAYOUTS)}")
    home.create()
    text = json.dumps(asdict(settings), indent=2, sort_keys=True) + "\n"
    write_file_atomically(settings_path(home), text.encode("utf-8"), mode=0o600, replace=True)


# -- which fixtures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FixtureSource:
    """The fixtures the station offers and where they came from (shown to the technician)."""

    fixtures: tuple[Fixture, ...]
    origin: str
    path: Path | None = None


def resolve_fixtures(
    home: StationHome,
    config: StationConfig,
    settings: StationSettings,
    explicit: str | os.PathLike[str] | None = None,
) -> FixtureSource:
    """The fixtures to offer: a file named on the command line, else the administrator's fixtures
    file, else station.toml's ``[[fixture]]`` tables, else the simulator's ``HOME/sim/fixtures.toml``."""
    for chosen, origin in ((explicit, "command line"), (settings.fixtures_file, "station settings")):
        if chosen:
            path = Path(chosen).expanduser()
            if not path.is_file():
                raise ConfigError(f"fixtures file {path} (from the {origin}) does not exist — check the path")
            return FixtureSource(load_fixtures(path), origin, path)
    if config.fixtures:
        return FixtureSource(config.fixtures, "station.toml", config.source)
    sim_file = home.sim_dir / "fixtures.toml"
    # Production mode never falls back to simulated boards.
    if not config.production and sim_file.is_file():
        return FixtureSource(load_fixtures(sim_file), "simulated farm", sim_file)
    return FixtureSource((), "none")
