"""Quality leads' own login roles in the fleet database (``station fleet grant-quality NAME``).

A quality lead logs in as a role of their own, member of the database's *reader* group (SELECT only on the
fleet's tables, see :mod:`station.fleet.schema`), and read-only by default on top of that. The password reaches
the server only as a SCRAM verifier — never in clear in a statement, a log line or an argv.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from station.errors import StationError
from station.fleet.schema import role_names, schema_version, scram_verifier

# PostgreSQL identifiers as a person types them: lower case, no quoting needed.
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MIN_PASSWORD_LENGTH = 12


@dataclass(frozen=True)
class QualityGrant:
    role: str
    group: str
    created: bool


def check_role_name(name: str) -> str:
    if not ROLE_NAME.match(name):
        raise StationError(
            f"{name!r} is not a usable role name — use lower-case letters, digits and _ (at most 63, not starting "
            f"with a digit), e.g. alice or qa_alice."
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StationError(
            f"The password is too short — use at least {MIN_PASSWORD_LENGTH} characters. Nothing was changed."
        )
    return password


def grant_quality(conn: Any, name: str, password: str) -> QualityGrant:
    """Create (or give a new password to) the login role ``name`` and make it a member of the reader group only.

    Refuses a name that is a station's role, a group of the fleet, a superuser or a role that can write — a
    quality lead's login must not carry more rights than reading.
    """
    from psycopg import sql

    check_role_name(name)
    check_password(password)
    if schema_version(conn) == 0:
        raise StationError(
            f"The database {conn.info.dbname} holds no fleet yet — run `station fleet init --dsn …` on a "
            f"station first, then grant quality leads."
        )
    groups = role_names(conn.info.dbname)
    if name in (groups.writers, groups.readers):
        raise StationError(f"{name} is one of the fleet's groups, not a person's login — pick another name.")
    with conn.transaction():
        existing = conn.execute(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls, "
            "pg_has_role(oid, %s, 'MEMBER'), EXISTS (SELECT 1 FROM fleet_stations WHERE role_name = %s) "
            "FROM pg_roles WHERE rolname = %s",
            [groups.writers, name, name],
        ).fetchone()
        if existing is not None and any(existing):
            raise StationError(
                f"The role {name} already exists with more rights than reading (an administrator, a station or a "
                f"member of {groups.writers}) — give the quality lead a login of their own, e.g. qa_{name}."
            )
        role = sql.Identifier(name)
        if existing is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(role))
        conn.execute(
            sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(scram_verifier(password)))
        )
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(groups.readers), role))
        # Read-only sessions too: even a table someone grants by mistake later is not written through this login.
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
    return QualityGrant(name, groups.readers, existing is None)


def revoke_quality(conn: Any, name: str) -> None:
    """Take the reader group from ``name`` and stop it logging in (the role stays: the server's logs name it)."""
    from psycopg import sql

    check_role_name(name)
    groups = role_names(conn.info.dbname)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone() is None:
            raise StationError(f"There is no role {name} — nothing was changed.")
        role = sql.Identifier(name)
        conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(groups.readers), role))
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
