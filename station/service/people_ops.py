"""People at a kiosk window: sign in and out with their own credential, change a credential.

The station service's requests of :mod:`station.people`; the secrets are checked here and never recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from station.errors import StationError
from station.roles import Role, allowed
from station.service.connection import Connection, Handler, bind

if TYPE_CHECKING:
    from station.service.server import StationService


def handlers(service: StationService) -> dict[str, Handler]:
    """The people requests: op name → handler."""
    return {
        "sign_in": bind(service, sign_in),
        "sign_out": bind(service, sign_out),
        "people_change": bind(service, people_change),
    }


def sign_in(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """A person signs in at a kiosk window with their own credential, checked here (station.people: the
    lockout is kept in the store and outlives restarts).  The answer is their time-limited session; the
    secret is never recorded (service_requests keeps the name only)."""

    name = str(args.get("name") or "").strip()
    secret = args.get("secret")
    if not name or not isinstance(secret, str):
        return {"signed_in": conn.caller.account, "how": "os-account"}
    people = service._people()
    session = people.verify(name, secret, account=conn.caller.account)
    token = service.sessions.open(session, uid=conn.caller.uid)
    return {
        "signed_in": session.person,
        "how": "person",
        "role": session.role.value,
        "expires_at": session.expires_at,
        "account": conn.caller.account,
        "session": token,
    }


def sign_out(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    signed = service.sessions.close(str(args.get("_session_token") or ""), uid=conn.caller.uid)
    if signed is not None:
        # A window ends a session whose time is up by signing it out: the journal says it expired.
        service._people().sign_out(signed, expired=signed.expired())
    return {"signed_out": signed.person if signed else None}


def actor(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """Who acts: the person signed in at this kiosk (their role), else the OS account (its groups)."""
    from station.people import Actor

    signed = args.get("_signed_in")
    if signed is not None:
        return Actor.for_person(signed, account=conn.caller.account)
    return Actor(
        name=conn.caller.account,
        account=conn.caller.account,
        administrator=allowed(conn.roles, Role.ADMIN),
    )


def people_change(service: StationService, conn: Connection, args: dict[str, Any]) -> Any:
    """A person's credential changed: with their old one, or by an administrator (an OS account in
    welma-admin, or an administrator signed in at this kiosk)."""
    name = str(args.get("name") or "").strip()
    new = args.get("new_secret")
    old = args.get("old_secret")
    if not name or not isinstance(new, str) or (old is not None and not isinstance(old, str)):
        raise StationError("a credential change needs the person's name and the new credential (text)")
    person = service._people().change(name, new, by=actor(service, conn, args), old_secret=old)
    return {"person": person.name, "kind": person.kind.value}
