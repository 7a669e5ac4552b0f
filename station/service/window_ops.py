"""The station service's requests for the window (`station-gui` is only a client: it opens nothing in the home).

* ``window`` (technician): what the window shows — the station's name and mode, the line's settings the window
  needs (label file name, output folder, serial scanner on the line PC), the administrator's window settings,
  the fixtures on offer, the device profiles (as their TOML text), whether the CA is unlocked, and with
  ``[fleet]`` the fleet's server and database (``fleet``: no user, password or passfile — a quality lead's
  window logs in with its own role, :mod:`station.fleet.quality`).
* ``window_orders`` (technician): the open work orders and their progress (the fleet's with ``[fleet]``).
* ``window_plan`` (technician): a profile's step medians from the audit history (the time left).
* ``settings`` (administrator, recorded): ``show`` or ``set`` the window-facing station settings
  (HOME/station-settings.json: profile, fixtures file, auto-start, large font, label stock), checked before
  they are saved.
* ``admin_unlock`` (anyone, recorded): the shared admin PIN of demos checked here, with a lockout kept by the
  service (not by each window).  It opens nothing by itself: what the window then asks is still checked against
  the caller's role.

Everything the window gets is plain JSON; :mod:`station.service.window_client` turns it back into the
station's own types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from station.errors import StationError

if TYPE_CHECKING:
    from station.admin import StationSettings
    from station.config import FleetConfig
    from station.orders import OrderStatus
    from station.service.server import Connection, StationService

Handler = Callable[["Connection", dict[str, Any]], Any]


def handlers(service: StationService) -> dict[str, Handler]:
    """op name → handler, merged into the service's own (StationService.__init__)."""
    ops = _WindowOps(service)
    return {
        "window": ops.window,
        "window_orders": ops.orders,
        "window_plan": ops.plan,
        "settings": ops.settings,
        "admin_unlock": ops.admin_unlock,
    }


class _WindowOps:
    def __init__(self, service: StationService) -> None:
        from station.admin import AdminLock

        self.service = service
        # One lock for every window of this station: a lockout holds across windows (and a reopened one).
        self.admin_lock = AdminLock(service.home)

    # -- what the window shows -------------------------------------------------------------------------

    def window(self, conn: Connection, args: dict[str, Any]) -> Any:
        from station.admin import load_settings, pin_is_set, resolve_fixtures
        from station.profiles import SHIPPED_DIR, available_profiles

        service = self.service
        service._fresh_config()
        home, config = service.home, service.config
        settings = load_settings(home)
        problem = None
        try:
            source = resolve_fixtures(home, config, settings, None)
        except StationError as exc:  # a fixtures file that went away: the window says so, offers none
            from station.admin import FixtureSource

            source, problem = FixtureSource((), "none"), str(exc)
        profiles = {}
        for name in available_profiles(home.profiles_dir):
            for directory in (home.profiles_dir, SHIPPED_DIR):
                path = directory / f"{name}.toml"
                if path.is_file():
                    profiles[name] = path.read_text(encoding="utf-8")
                    break
        return {
            "station": {
                "name": config.name,
                "production": config.production,
                "default_profile": config.default_profile,
                "orders_required": config.orders_required,
                "fleet": config.fleet is not None,
                "home": str(home.root),
            },
            "label": asdict(config.label),
            "scanner": asdict(config.scanner),
            "output": asdict(config.output),
            "people": {
                "shared_admin_pin": config.people.shared_admin_pin,
                "session_minutes": config.people.session_minutes,
            },
            "admin_pin_set": pin_is_set(home),
            "settings": settings_record(settings),
            "fixtures": {
                "origin": source.origin,
                "path": str(source.path) if source.path else None,
                "fixtures": [asdict(fixture) for fixture in source.fixtures],
                "simulated": sorted(_simulated(service, source.fixtures)),
                "problem": problem,
            },
            "profiles": profiles,
            "ca_unlocked": service.scheduler is not None,
            "ca": _ca(service),
            "fleet": _fleet(config.fleet),
        }

    def orders(self, conn: Connection, args: dict[str, Any]) -> Any:
        from station.fleet.orders import order_book

        service = self.service
        book = order_book(service.station.audit, service.config)
        return {"orders": [order_status_record(status) for status in book.orders(state="open")]}

    def plan(self, conn: Connection, args: dict[str, Any]) -> Any:
        from station.flow import step_etas
        from station.profiles import load_profile

        profile = load_profile(str(args.get("profile") or ""), self.service.home.profiles_dir)
        return {"etas": step_etas(self.service.station.audit, profile)}

    # -- the administrator's settings ----------------------------------------------------------------------

    def settings(self, conn: Connection, args: dict[str, Any]) -> Any:
        """``show`` (the default) or ``set`` with ``settings`` (an object of StationSettings' fields)."""
        from station.admin import load_settings, resolve_fixtures, save_settings
        from station.profiles import load_profile

        service = self.service
        service._fresh_config()
        action = str(args.get("action") or "show")
        if action == "show":
            return {"settings": settings_record(load_settings(service.home))}
        if action != "set":
            raise StationError("a settings request is show or set")
        wanted = settings_from_record(args.get("settings"))
        # Checked before anything is saved: a profile that does not load, a fixtures file that is not there.
        load_profile(wanted.profile or service.config.default_profile, service.home.profiles_dir)
        resolve_fixtures(service.home, service.config, wanted, None)
        save_settings(service.home, wanted)
        return {"settings": settings_record(wanted)}

    def admin_unlock(self, conn: Connection, args: dict[str, Any]) -> Any:
        """The shared admin PIN (demos), checked by the service's one lock; refused in production mode."""
        service = self.service
        service._fresh_config()
        if service.config.production:
            raise StationError(
                "this station is in production mode, which refuses the shared admin PIN — sign in with your own "
                "administrator credential (an administrator enrols you with `station people add NAME --role admin`)"
            )
        pin = args.get("pin")
        if not isinstance(pin, str):
            raise StationError("the admin PIN is needed")
        self.admin_lock.unlock(pin)
        return {"unlocked": True}


def _fleet(fleet: FleetConfig | None) -> dict[str, Any] | None:
    """The fleet's server and database for a quality lead's window, which logs in with its own role: never the
    station's role, password or passfile."""
    if fleet is None:
        return None
    from station.fleet.quality import server_dsn

    return {"dsn": server_dsn(fleet.dsn), "station_name": fleet.station_name, "line": fleet.line}


def _ca(service: StationService) -> dict[str, Any]:
    """Whether the station has a CA, and where its key is (a file, or a token named by its label)."""
    from station.pki import CA_CERT_FILE

    if not (service.home.ca_dir / CA_CERT_FILE).exists():
        return {"exists": False, "kind": "none"}
    return {"exists": True, **service._ca_kind()}


def _simulated(service: StationService, fixtures: tuple[Any, ...]) -> set[str]:
    """Fixtures whose board is one of the simulated farm's (never in production mode)."""
    from station.config import load_fixtures

    path = service.home.sim_dir / "fixtures.toml"
    if service.config.production or not path.is_file():
        return set()
    try:
        simulated = {(f.name, f.device) for f in load_fixtures(path)}
    except StationError:
        return set()
    return {f.name for f in fixtures if (f.name, f.device) in simulated}


# -- plain records (the client turns them back: station.service.window_client) ----------------------------


def settings_record(settings: StationSettings) -> dict[str, Any]:
    return asdict(settings)


def settings_from_record(record: object) -> StationSettings:
    from station.admin import StationSettings

    if not isinstance(record, dict):
        raise StationError("the settings must be an object of station settings")
    known = {field.name for field in fields(StationSettings)}
    unknown = sorted(set(record) - known)
    if unknown:
        raise StationError(
            f"unknown station setting(s) {', '.join(unknown)} — known: {', '.join(sorted(known))}"
        )
    values = dict(record)
    for key in ("auto_start", "large_font"):
        if key in values and not isinstance(values[key], bool):
            raise StationError(f"{key} must be true or false")
    for key in ("profile", "fixtures_file", "label_layout"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise StationError(f"{key} must be text")
    return StationSettings(**values)


def order_status_record(status: OrderStatus) -> dict[str, Any]:
    order = status.order
    return {
        "order": {
            "order_id": order.order_id,
            "profile": order.profile,
            "quantity": order.quantity,
            "ranges": [asdict(r) for r in order.ranges],
            "serials": list(order.serials),
            "due": order.due.isoformat() if order.due else None,
        },
        "state": status.state,
        "imported_at": status.imported_at.isoformat(),
        "imported_by": status.imported_by,
        "source_file": status.source_file,
        "file_sha256": status.file_sha256,
        "closed_at": status.closed_at.isoformat() if status.closed_at else None,
        "closed_by": status.closed_by,
        "close_reason": status.close_reason,
        "passed": status.passed,
        "running": status.running,
        "failed": status.failed,
        "aborted": status.aborted,
    }


def order_status_from_record(record: dict[str, Any]) -> OrderStatus:
    from datetime import date, datetime

    from station.orders import Order, OrderStatus, SerialRange

    order = record["order"]

    def moment(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    imported_at = moment(record["imported_at"])
    assert imported_at is not None
    return OrderStatus(
        order=Order(
            order_id=str(order["order_id"]),
            profile=str(order["profile"]),
            quantity=int(order["quantity"]),
            ranges=tuple(SerialRange(**r) for r in order["ranges"]),
            serials=tuple(order["serials"]),
            due=date.fromisoformat(order["due"]) if order.get("due") else None,
        ),
        state=str(record["state"]),
        imported_at=imported_at,
        imported_by=str(record["imported_by"]),
        source_file=str(record["source_file"]),
        file_sha256=str(record["file_sha256"]),
        closed_at=moment(record.get("closed_at")),
        closed_by=record.get("closed_by"),
        close_reason=record.get("close_reason"),
        passed=int(record["passed"]),
        running=int(record["running"]),
        failed=int(record["failed"]),
        aborted=int(record["aborted"]),
    )
