"""What one run of the window works with: a client of the station service, and what the window shows as the
service said it (no Qt here).  The window opens nothing in the station home: on a line PC the home belongs to
the service's account (0700) and the technician's window cannot read it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from station.admin import FixtureSource, StationSettings
from station.config import Fixture, StationConfig
from station.home import StationHome
from station.profiles import DeviceProfile
from ui.bridge import StationClient, WindowView, settings_record

if TYPE_CHECKING:
    from station.fleet.quality import QualityLogin


@dataclass
class Session:
    client: StationClient
    view: WindowView
    # --fixtures FILE from the command line (a file of the technician's); an administrator's later choice replaces it.
    fixtures_arg: str | None = None
    # What the window says about the service when it opens (it started one, say), for the status bar.
    startup_notes: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, home_arg: str | None, fixtures_arg: str | None = None) -> Session:
        """Reach the station service (started for this account outside production mode, and said so) and read
        what the window shows; raises StationError saying what to do."""
        client = StationClient.open(home_arg)
        view = client.view(fixtures_file=Path(fixtures_arg).expanduser() if fixtures_arg else None)
        notes = [client.started] if client.started else []
        return cls(client, view, fixtures_arg, startup_notes=notes)

    # -- what the window shows --------------------------------------------------------------------------

    @property
    def config(self) -> StationConfig:
        return self.view.config

    @property
    def settings(self) -> StationSettings:
        return self.view.settings

    @property
    def fixtures(self) -> FixtureSource:
        return self.view.fixtures

    @property
    def home(self) -> StationHome:
        """The station home's path, as the service named it (for the output folder's "not in the home" rule)."""
        return self.view.home

    def profile_name(self, fixture: Fixture | None) -> str:
        return self.settings.profile_for(self.config, fixture)

    def profile_for(self, fixture: Fixture | None) -> DeviceProfile:
        return self.view.profile(self.profile_name(fixture))

    def profile_names(self) -> list[str]:
        return self.view.profile_names()

    def read_view(self) -> WindowView:
        """What the service says now (blocking: a worker thread's call)."""
        fixtures = Path(self.fixtures_arg).expanduser() if self.fixtures_arg else None
        return self.client.view(fixtures_file=fixtures)

    def use_view(self, view: WindowView, *, saved_settings: bool = False) -> None:
        """Show ``view`` from now on (the GUI thread); after an administrator saved settings, their fixtures
        replace a --fixtures file."""
        self.view = view
        if saved_settings:
            self.fixtures_arg = None

    def save_settings(self, settings: StationSettings) -> WindowView:
        """An administrator's new settings, checked and saved by the service (``settings``, recorded), and what
        the window shows with them (blocking: a worker thread's call)."""
        self.client.call("settings", {"action": "set", "settings": settings_record(settings)})
        return self.client.view()  # the administrator's choice replaces --fixtures

    def fleet_for_view(self) -> QualityLogin | None:
        """The audit view's "Whole fleet" scope: the fleet's server and database as the service names them
        (``window``: no login in it), read with the quality lead's own read-only login — the role of the OS
        account running this window (``station fleet grant-quality``; ``$PGUSER`` names another), its password
        where libpq looks (``$PGPASSFILE``, ``~/.pgpass``).  In a demo (``station fleet demo``, this account
        can read the home) the demo's quality.pgpass.  Never the station's role or passfile.  None without
        [fleet]."""
        server = self.view.fleet_server
        if server is None:
            return None
        from station.fleet.demo import demo_quality_pgpass
        from station.fleet.quality import quality_login

        demo = demo_quality_pgpass(self.view.home)
        passfile = demo if not os.environ.get("PGPASSFILE") and os.access(demo, os.R_OK) else None
        return quality_login(server.dsn, passfile=passfile)

    def close(self) -> None:
        """Nothing to close: the window holds nothing of the home open (each service call has its own
        connection)."""
