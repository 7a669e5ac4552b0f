"""The window's side of the station service (no Qt): find and reach the service as the CLI does, ask it, and turn
its plain answers (:mod:`station.service.window_ops`) back into the station's own types.

Each :meth:`StationClient.call` opens its own short connection (calls come from the window's worker threads,
never its GUI thread), every socket call bounded by the client's deadlines.  A kiosk's sign-in session token,
once given, goes with every request (the service adds the person's role and records both names).
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station.admin import FixtureSource, StationSettings
from station.config import (
    Fixture,
    LabelSettings,
    OrdersConfig,
    OutputSettings,
    PeopleSettings,
    ScannerSettings,
    StationConfig,
)
from station.errors import ConfigError, StationError
from station.home import StationHome
from station.profiles import DeviceProfile
from station.service.audit_wire import LabelHistory, MalformedAnswer, label_history_from_wire
from station.service.client import ServiceClient, ServiceRefused, ServiceUnavailable, connect, find_socket
from station.service.window_ops import order_status_from_record, settings_from_record

# How long the label prints of a unit may take to come (one indexed read): the tooltip then says the service is slow.
LABEL_PRINTS_DEADLINE_S = 20.0


def profile_from_text(name: str, text: str) -> DeviceProfile:
    """A device profile from the TOML text the service sent (checked as a file would be)."""
    from station.profiles import _ProfileReader

    where = Path(f"<station service>/{name}.toml")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return _ProfileReader(where, text, data).read()


@dataclass(frozen=True)
class FleetServer:
    """The fleet as the service names it to a window (``window``'s ``fleet``): server and database, no login."""

    dsn: str
    station_name: str
    line: str


@dataclass(frozen=True)
class WindowView:
    """What the window shows, as the station service said it (``window``)."""

    config: StationConfig  # the window-facing part of station.toml (no [fleet] credentials, no [mes])
    home: StationHome  # its path only: the window never opens anything there
    settings: StationSettings
    fixtures: FixtureSource
    simulated: frozenset[str]
    profile_texts: dict[str, str]
    admin_pin_set: bool
    ca_unlocked: bool
    fleet: bool
    fixtures_problem: str | None = None
    # {"exists": bool, "kind": "file" | "token" | "none", "label": token label}
    ca: dict[str, Any] = field(default_factory=dict)
    # With [fleet]: its server and database, for the quality lead's own login (ui.session.fleet_for_view).
    fleet_server: FleetServer | None = None
    _profiles: dict[str, DeviceProfile] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_record(cls, record: dict[str, Any], *, fixtures_file: Path | None = None) -> WindowView:
        station = record["station"]
        config = StationConfig(
            name=str(station["name"]),
            production=bool(station["production"]),
            default_profile=str(station["default_profile"]),
            label=LabelSettings(**record["label"]),
            scanner=ScannerSettings(**record["scanner"]),
            output=OutputSettings(**record["output"]),
            people=PeopleSettings(**record["people"]),
            orders=OrdersConfig(required=bool(station["orders_required"])),
        )
        offered = record["fixtures"]
        source = FixtureSource(
            tuple(Fixture(**fixture) for fixture in offered["fixtures"]),
            str(offered["origin"]),
            Path(offered["path"]) if offered.get("path") else None,
        )
        if fixtures_file is not None:  # --fixtures FILE: a file of the technician's, read by the window
            from station.config import load_fixtures

            source = FixtureSource(load_fixtures(fixtures_file), "command line", fixtures_file)
        return cls(
            config=config,
            home=StationHome(Path(station["home"])),
            settings=settings_from_record(record["settings"]),
            fixtures=source,
            simulated=frozenset(offered.get("simulated") or ()),
            profile_texts=dict(record["profiles"]),
            admin_pin_set=bool(record["admin_pin_set"]),
            ca_unlocked=bool(record["ca_unlocked"]),
            fleet=bool(station["fleet"]),
            fixtures_problem=offered.get("problem"),
            ca=dict(record.get("ca") or {}),
            fleet_server=_fleet_server(record.get("fleet")),
        )

    def profile_names(self) -> list[str]:
        return sorted(self.profile_texts)

    def profile(self, name: str) -> DeviceProfile:
        if name not in self._profiles:
            if name not in self.profile_texts:
                raise ConfigError(
                    f"no device profile named {name!r} — available: {', '.join(self.profile_names())}"
                )
            self._profiles[name] = profile_from_text(name, self.profile_texts[name])
        return self._profiles[name]


def _fleet_server(record: object) -> FleetServer | None:
    if not isinstance(record, dict) or not record.get("dsn"):
        return None
    return FleetServer(
        str(record["dsn"]), str(record.get("station_name") or ""), str(record.get("line") or "")
    )


class StationClient:
    """The window's way to the station service: where it is, and one call at a time per worker thread."""

    def __init__(self, path: Path, home_arg: str | None, *, started: str | None = None) -> None:
        self.path = path
        self.home_arg = home_arg
        # What the window says when it started a per-user service (outside production mode), else None.
        self.started = started
        self._token_lock = threading.Lock()
        self._token: str | None = None

    @classmethod
    def open(cls, home_arg: str | None) -> StationClient:
        """Find the service like the CLI (the system socket when present and no home named, else the home's
        per-user one), starting a per-user service outside production mode and saying so; raises
        :class:`ServiceUnavailable` saying how to start it otherwise."""
        path, _system = find_socket(home_arg)
        started = None
        try:
            ServiceClient.connect(path).close()
        except OSError:
            client = connect(home_arg, start=True)
            assert client is not None
            path = client.path
            client.close()
            started = f"no station service was running; started one for this account on {path}"
        return cls(path, home_arg, started=started)

    @property
    def token(self) -> str | None:
        with self._token_lock:
            return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        with self._token_lock:
            self._token = value

    def call(self, op: str, args: dict[str, Any] | None = None, *, deadline_s: float | None = None) -> Any:
        """One request on its own connection (blocks up to the deadline: never on the GUI thread)."""
        sent = dict(args or {})
        token = self.token
        if token is not None and "session" not in sent:
            sent["session"] = token
        try:
            client = ServiceClient.connect(self.path)
        except OSError as exc:
            raise ServiceUnavailable(
                f"the station service does not answer on {self.path} ({exc.strerror or exc}) — on a line PC an "
                "administrator runs `systemctl start welma-station`; elsewhere start the window again"
            ) from None
        with client:
            if deadline_s is None:
                return client.call(op, sent)
            return client.call(op, sent, deadline_s=deadline_s)

    def view(self, *, fixtures_file: Path | None = None) -> WindowView:
        return WindowView.from_record(self.call("window"), fixtures_file=fixtures_file)

    def orders(self) -> list[Any]:
        return [order_status_from_record(record) for record in self.call("window_orders")["orders"]]

    def plan(self, profile: str) -> dict[str, float | None]:
        etas = self.call("window_plan", {"profile": profile})["etas"]
        return {str(step): (None if eta is None else float(eta)) for step, eta in etas.items()}

    def label_prints(self, unit_id: int) -> LabelHistory:
        """A unit's newest label prints (``label_prints``: a technician's for this station's recent units, a
        signed-in quality lead's for any), checked and bounded; a refusal raises :class:`ServiceRefused` naming the
        role needed."""
        answer = self.call("label_prints", {"unit": unit_id}, deadline_s=LABEL_PRINTS_DEADLINE_S)
        if isinstance(answer, dict) and isinstance(answer.get("refused"), str):
            raise ServiceRefused(answer["refused"][:2000])
        history = label_history_from_wire(answer)
        if history.unit_id != unit_id:
            raise MalformedAnswer(
                f"the station service answered the label prints of unit {history.unit_id}, not {unit_id}"
            )
        return history


__all__ = ["FleetServer", "StationClient", "StationError", "WindowView", "profile_from_text"]
