"""The administrator's requests (and the technician's label and fixture list): admin PIN, production mode,
fixtures, labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from station.errors import StationError
from station.roles import Role
from station.service.connection import Connection, Handler, bind

if TYPE_CHECKING:
    from station.service.server import StationService


def handlers(service: StationService) -> dict[str, Handler]:
    """The administration requests: op name → handler."""
    return {
        "admin_set_pin": bind(service, admin_set_pin),
        "production_mode": bind(service, production_mode),
        "labels": bind(service, labels),
        "fixtures_list": bind(service, fixtures_list),
        "fixtures": bind(service, fixtures),
    }


def labels(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """`station label print`: the board's label printed (or reprinted) by the service, recorded by whom."""
    from station.line.labels import LabelDesk

    service._fresh_config()
    serial = str(args.get("serial") or "").strip()
    unit = service.station.audit.find_unit(serial)
    if unit is None:
        raise StationError(
            f"no unit of board {serial} is in the audit log — check the serial (station units)"
        )
    typed = str(args.get("by") or "").strip()
    signed = args.get("_signed_in")
    by = typed or (signed.person if signed is not None else conn.caller.account)
    desk = LabelDesk(config=service.config, audit=service.station.audit)
    outcome = desk.print_unit(unit.id, by=by, reprint=bool(service.station.audit.label_prints(unit.id)))
    return {"message": outcome.message, "printed": outcome.printed}


def fixtures_list(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """`station fixtures list`: the lines it prints, made from the home the service owns."""
    from station.cli.fixtures import fixture_lines

    service._fresh_config()
    return {"lines": fixture_lines(service.station)}


def fixtures(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """`station fixtures pin`: ``fetch`` reads the key the fixture's board answers with; ``pin`` writes it
    (only if the board still answers with the key the administrator confirmed) and records it."""
    from station.cli.fixtures import fixture_key, pin_fixture_key

    service._fresh_config()
    name = str(args.get("name") or "")
    known, key_type, fingerprint = fixture_key(service.station, name)
    if args.get("action") == "fetch":
        return {
            "device": known.fixture.device,
            "pinned": known.fixture.host_key,
            "key_type": key_type,
            "fingerprint": fingerprint,
            "file": str(known.file),
        }
    if args.get("action") != "pin":
        raise StationError("a fixtures request is fetch or pin")
    if args.get("fingerprint") != fingerprint:
        raise StationError(
            f"the board now shows {fingerprint}, not the key you confirmed — nothing was pinned; "
            "check the fixture's cabling and run the command again"
        )
    typed = str(args.get("by") or "").strip()
    signed = args.get("_signed_in")
    by = typed or (signed.person if signed is not None else conn.caller.account)
    return {"message": pin_fixture_key(service.station, known, key_type, fingerprint, by=by)}


def admin_set_pin(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """`station admin set-pin` for an administrator: the PIN is set here (the home is the service's)."""
    from station.admin import pin_is_set, set_pin
    from station.audit.people import record_people_event
    from station.people import PeopleAction

    service._fresh_config()
    if service.config.production:
        raise StationError(
            "this station is in production mode, which refuses the shared admin PIN (a demo-mode option) — enrol "
            "each quality lead and administrator with their own credential: station people add NAME --role "
            "quality|admin"
        )
    pin = args.get("pin")
    if not isinstance(pin, str):
        raise StationError("the new admin PIN is needed")
    replacing = pin_is_set(service.home)
    set_pin(service.home, pin)
    actor = service._actor(conn, args)
    record_people_event(
        service.station.audit,
        action=PeopleAction.ADMIN_PIN_SET.value,
        person="",
        role=Role.ADMIN.value,
        by=actor.name,
        account=actor.account,
        detail="by an administrator account" if replacing else "first PIN",
    )
    return {"replaced": replacing, "path": str(service.home.root / "admin.pin")}


def production_mode(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """Production mode read, or turned on/off in station.toml (the service reads the file again)."""
    from station.station_settings import set_production

    service._fresh_config()
    was = service.config.production
    wanted = args.get("on")
    if wanted is None:
        return {"production": was, "changed": False}
    set_production(service.home.config_file, bool(wanted))
    service._fresh_config()
    return {"production": service.config.production, "changed": was != service.config.production}
