"""Which fixtures a station offers and which profile a board on a fixture gets — one rule for the CLI and
the window."""

from __future__ import annotations

from station.config import Fixture, StationConfig, load_fixtures
from station.home import StationHome


def choose_profile(
    config: StationConfig,
    fixture: Fixture | None,
    *,
    explicit: str | None = None,
    setting: str | None = None,
) -> str:
    """The profile for a board on ``fixture``: the one asked for (``--profile``), else the fixture's own,
    else the administrator's setting, else station.toml's ``default_profile``."""
    if explicit:
        return explicit
    if fixture is not None and fixture.profile:
        return fixture.profile
    return setting or config.default_profile


def known_fixtures(home: StationHome, config: StationConfig) -> dict[str, Fixture]:
    """Fixtures by name: station.toml's ``[[fixture]]`` tables, then the simulator's fixtures file (not in
    production mode: no simulated boards there)."""
    fixtures = {fixture.name: fixture for fixture in config.fixtures}
    sim_fixtures = home.sim_dir / "fixtures.toml"
    if sim_fixtures.exists() and not config.production:
        for fixture in load_fixtures(sim_fixtures):
            fixtures.setdefault(fixture.name, fixture)
    return fixtures
