"""What one run of the window works with: the station home, station.toml, the audit log, the
administrator's settings and the fixtures on offer (no Qt here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from station.admin import FixtureSource, StationSettings, load_settings, resolve_fixtures, save_settings
from station.audit import AuditLog
from station.config import Fixture, StationConfig, load_config
from station.home import StationHome
from station.line.handoff import LineHandOff
from station.permissions import secure_home
from station.profiles import DeviceProfile, available_profiles, load_profile

if TYPE_CHECKING:
    from station.fleet.forwarder import Forwarder


@dataclass
class Session:
    home: StationHome
    config: StationConfig
    audit: AuditLog
    settings: StationSettings
    fixtures: FixtureSource
    # --fixtures FILE from the command line; an administrator's later choice replaces it.
    fixtures_arg: str | None = None
    # What the start-up permission check changed, in words (station/permissions.py), for the window to show.
    startup_notes: list[str] = field(default_factory=list)
    _profiles: dict[str, DeviceProfile] = field(default_factory=dict)
    # [fleet]: the background sender of this window's audit events (None without a fleet).
    forwarder: Forwarder | None = None
    # Label printer and MES hand-off ([label], [mes] in station.toml), told of every finished unit.
    line: LineHandOff | None = None

    @classmethod
    def open(cls, home_arg: str | None, fixtures_arg: str | None = None) -> Session:
        """Open the station home (created if missing); raises StationError saying what to fix."""
        home = StationHome.resolve(home_arg).create()
        config = load_config(home.config_file)
        notes = secure_home(home)
        settings = load_settings(home)
        fixtures = resolve_fixtures(home, config, settings, fixtures_arg)
        # Opened here, on the GUI thread before any worker exists: the audit log sets a private umask.
        audit = AuditLog(home.audit_db)
        line = LineHandOff(config=config, home=home, audit=audit)
        session = cls(home, config, audit, settings, fixtures, fixtures_arg, line=line, startup_notes=notes)
        if config.fleet is not None:
            from station.fleet.forwarder import start_forwarder

            session.forwarder = start_forwarder(config.fleet, audit)
        return session

    def profile_name(self, fixture: Fixture | None) -> str:
        return self.settings.profile_for(self.config, fixture)

    def profile_for(self, fixture: Fixture | None) -> DeviceProfile:
        name = self.profile_name(fixture)
        if name not in self._profiles:
            self._profiles[name] = load_profile(name, self.home.profiles_dir)
        return self._profiles[name]

    def profile_names(self) -> list[str]:
        return available_profiles(self.home.profiles_dir)

    def check_settings(self, settings: StationSettings) -> FixtureSource:
        """Raise StationError if ``settings`` cannot be used (unknown profile, missing fixtures file)."""
        load_profile(settings.profile or self.config.default_profile, self.home.profiles_dir)
        return resolve_fixtures(self.home, self.config, settings, None)

    def apply_settings(self, settings: StationSettings) -> None:
        """Check, save and use an administrator's new settings."""
        fixtures = self.check_settings(settings)
        save_settings(self.home, settings)
        self.settings, self.fixtures, self.fixtures_arg = settings, fixtures, None
        self._profiles.clear()

    def close(self) -> None:
        if self.line is not None:
            self.line.close()
        if self.forwarder is not None:
            from station.fleet.forwarder import stop_forwarder

            stop_forwarder(self.forwarder)
            self.forwarder = None
        self.audit.close()
