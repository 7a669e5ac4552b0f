"""Quality leads' own login roles in the fleet database (``station fleet grant-quality NAME``).

A quality lead logs in as a role of their own, member of the database's *reader* group (SELECT only on the
fleet's tables, see :mod:`station.fleet.schema`), and read-only by default on top of that. The password reaches
the server only as a SCRAM verifier — never in clear in a statement, a log line or an argv.

The window's "Whole fleet" scope reads with that login (:class:`QualityLogin`): the station service names only
the server and database (:func:`server_dsn`), the role is the one of the OS account running the window
(:func:`role_for_account`), the password is in that account's own ``~/.pgpass``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
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


# -- the quality lead's own login, as the window uses it ------------------------------------------------------

# What names a login (and must never travel from the station to a window): the station's role, its password or
# passfile, its client certificate and key.
LOGIN_KEYS = ("user", "password", "passfile", "sslcert", "sslkey", "sslpassword")
# libpq's words when the server (or libpq itself) refuses a login rather than the network failing.
LOGIN_REFUSED = (
    "authentication failed",
    "no password supplied",
    "is not permitted to log in",
    "pg_hba.conf",
    "permission denied for database",
)


def server_dsn(dsn: str) -> str:
    """The fleet's server and database from a station's ``[fleet] dsn``, with no login in it (no user, password,
    passfile or client certificate): what the station service tells a window (``window``'s ``fleet`` entry)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise StationError("the [fleet] dsn of station.toml does not parse — fix it there") from None
    for key in LOGIN_KEYS:
        params.pop(key, None)
    return make_conninfo("", **params)


def role_for_account(account: str) -> str:
    """The role ``station fleet grant-quality`` should give the OS account ``account``: its name when that is a
    usable role name (alice → alice), else in lower case with every other character as _ (Jean.Dupont →
    jean_dupont; a name starting with a digit gets qa_ in front)."""
    role = re.sub(r"[^a-z0-9_]", "_", account.lower())
    if not role or not re.match(r"[a-z_]", role[0]):
        role = f"qa_{role}"
    return role[:63]


def current_account() -> str:
    """The OS account this process runs as (by its uid, never by what the environment says)."""
    import os
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid{os.getuid()}"


@dataclass(frozen=True)
class QualityLogin:
    """A quality lead's own read-only login to the fleet: the server the station service named, the role of the
    OS account running the window, the password from that account's own libpq sources (``~/.pgpass``,
    ``$PGPASSFILE``) — or ``passfile`` (a demo's). Never the station's role or passfile."""

    server: str
    role: str
    account: str
    passfile: Path | None = None
    # Where the quality lead keeps the password, for the refusal's words: passfile, $PGPASSFILE or ~/.pgpass.
    password_in: str = "~/.pgpass"

    @property
    def dsn(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.server, user=self.role)

    def connect(self, **options: Any) -> Any:
        """A connection as this login, with every deadline of :func:`station.fleet.connection.connect`; a refused
        login raises :class:`QualityLoginRefused` saying what to ask for and where the password goes."""
        from station.fleet.connection import FleetError, FleetUnavailable, connect

        try:
            return connect(self.dsn, passfile=self.passfile, **options)
        except (FleetUnavailable, FleetError) as exc:
            # libpq's own words (connect raises "from None"): one line per address tried.
            cause = exc.__context__
            for words in str(cause if cause is not None else exc).splitlines():
                if any(marker in words.lower() for marker in LOGIN_REFUSED):
                    raise QualityLoginRefused(self.refusal(words)) from None
            raise

    def pgpass_line(self) -> str:
        """The ~/.pgpass line this login needs (PASSWORD in place of the password)."""
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(self.server)
        host = str(params.get("host") or "localhost").split(",")[0]
        port = str(params.get("port") or "5432").split(",")[0]
        return f"{host}:{port}:{params.get('dbname') or self.role}:{self.role}:PASSWORD"

    def refusal(self, words: str) -> str:
        reason = re.split(r"FATAL:|failed: ", words)[-1].strip()
        where = self.password_in
        if "no password supplied" in reason:
            reason = f"no password for {self.role} in {where}"
        return (
            f"The fleet refused the login {self.role} ({reason}). The Whole fleet scope reads with your own "
            f"quality-lead login: role {self.role} for your account {self.account}. Ask an administrator for "
            f"`station fleet grant-quality {self.role}`, put the password in {where} as the line "
            f"{self.pgpass_line()} (chmod 600 {where}), then press Apply in the Whole fleet scope."
        )


class QualityLoginRefused(StationError):
    """The fleet's server answered and refused the quality lead's login (no role, no or a wrong password)."""


def quality_login(
    server: str,
    *,
    account: str | None = None,
    passfile: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> QualityLogin:
    """The login the window reads the fleet with: the role of ``account`` (the OS account running this process),
    or ``$PGUSER`` when set (libpq's own override); the password as libpq finds it, or in ``passfile``."""
    import os

    account = account or current_account()
    env = os.environ if environ is None else environ
    role = env.get("PGUSER") or role_for_account(account)
    where = str(passfile) if passfile is not None else (env.get("PGPASSFILE") or "~/.pgpass")
    return QualityLogin(server=server, role=role, account=account, passfile=passfile, password_in=where)
