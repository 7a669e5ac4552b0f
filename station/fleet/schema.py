"""The fleet's central schema, as a numbered list of migrations, its roles, and station registration.

Migrations are applied in order, each in its own transaction, and recorded in ``fleet_schema_migrations``; a
later issue adds a table by appending to :data:`MIGRATIONS` (never by editing an applied one). An advisory lock
keeps two ``station fleet init`` runs from migrating at once.

Trust: each station connects as its own login role, member of the database's *writer* group, which may read
the fleet and **insert** into the journal — no UPDATE or DELETE anywhere, and a trigger refuses rows written in
another station's name. The derived tables (units, certificates, claims, flags) are written only by
``SECURITY DEFINER`` functions owned by the schema owner. Quality leads log in as members of the *reader* group:
SELECT only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.errors import StationError
from station.fleet.connection import FleetError

MIGRATION_LOCK = 0x77656C6D  # "welm": pg_advisory_xact_lock key for migrations


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


_V1 = r"""
CREATE TABLE fleet_stations (
    name text PRIMARY KEY,
    line text NOT NULL,
    ca_fingerprint text NOT NULL,
    role_name text NOT NULL UNIQUE,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- Every station's audit events, exactly as the station's hash chain holds them (text kept verbatim so that the
-- chain can be recomputed here). (station, seq) makes forwarding idempotent.
CREATE TABLE fleet_journal (
    station text NOT NULL REFERENCES fleet_stations(name),
    seq bigint NOT NULL CHECK (seq >= 1),
    at text NOT NULL,
    kind text NOT NULL,
    unit_id bigint,
    payload text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station, seq)
);
CREATE INDEX fleet_journal_unit ON fleet_journal (station, unit_id, seq);

-- The newest state of every unit of every station, derived from the journal by a trigger.
CREATE TABLE fleet_units (
    station text NOT NULL,
    unit_id bigint NOT NULL,
    line text NOT NULL DEFAULT '',  -- the station's line when the unit arrived (a station moved later keeps history)
    serial text NOT NULL,
    state text NOT NULL,
    profile text,
    device text,
    fixture text,
    batch text,
    operator text,
    attempt integer,
    started_at timestamptz,
    ended_at timestamptz,
    failed_step text,
    message text,
    host_key_type text,
    host_key_fingerprint text,
    reprovision_reason text,
    last_seq bigint NOT NULL,
    PRIMARY KEY (station, unit_id)
);
CREATE INDEX fleet_units_serial ON fleet_units (serial, started_at);
CREATE INDEX fleet_units_started ON fleet_units (started_at, station, unit_id);
CREATE INDEX fleet_units_state ON fleet_units (state, started_at);
CREATE INDEX fleet_units_line ON fleet_units (line, started_at);
CREATE INDEX fleet_units_line_state ON fleet_units (line, state, started_at);
CREATE INDEX fleet_units_station ON fleet_units (station, started_at);
CREATE INDEX fleet_units_batch ON fleet_units (batch, started_at);
CREATE INDEX fleet_units_operator ON fleet_units (operator, started_at);
CREATE INDEX fleet_units_host_key ON fleet_units (host_key_fingerprint) WHERE host_key_fingerprint IS NOT NULL;

CREATE TABLE fleet_certificates (
    station text NOT NULL,
    cert_id bigint NOT NULL,
    unit_id bigint NOT NULL,
    serial_hex text NOT NULL,
    fingerprint_sha256 text NOT NULL,
    spki_sha256 text NOT NULL,
    subject text NOT NULL,
    issued_at timestamptz,
    revoked_at timestamptz,
    revocation_reason text,
    last_seq bigint NOT NULL,
    PRIMARY KEY (station, cert_id)
);
CREATE INDEX fleet_certificates_spki ON fleet_certificates (spki_sha256);
CREATE INDEX fleet_certificates_unit ON fleet_certificates (station, unit_id);

-- One row per board being or having been provisioned online: the primary key is what lets exactly one of two
-- stations that scan the same serial at the same moment proceed.
CREATE TABLE fleet_claims (
    serial text PRIMARY KEY,
    station text NOT NULL,
    unit_id bigint NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);

-- Units provisioned while their station could not reach the fleet (offline = "allow-and-flag").
CREATE TABLE fleet_flags (
    station text NOT NULL,
    unit_id bigint NOT NULL,
    serial text,
    reason text NOT NULL,
    flagged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station, unit_id, reason)
);

CREATE FUNCTION fleet_journal_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    own text;
BEGIN
    SELECT name INTO own FROM fleet_stations WHERE role_name = current_user;
    IF own IS NOT NULL AND own <> NEW.station THEN
        RAISE EXCEPTION 'role % writes the journal of station % only, not of %', current_user, own, NEW.station
            USING ERRCODE = '42501';
    END IF;
    NEW.received_at := now();
    RETURN NEW;
END $$;

CREATE FUNCTION fleet_journal_apply() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp AS $$
DECLARE
    p jsonb := NEW.payload::jsonb;
    r jsonb := p->'row';
    board text;
BEGIN
    IF p->>'table' = 'units' THEN
        INSERT INTO fleet_units AS f (station, unit_id, line, serial, state, profile, device, fixture, batch, operator,
                                      attempt, started_at, ended_at, failed_step, message, host_key_type,
                                      host_key_fingerprint, reprovision_reason, last_seq)
        VALUES (NEW.station, (p->>'pk')::bigint,
                coalesce((SELECT line FROM fleet_stations WHERE name = NEW.station), ''), r->>'serial', r->>'state', r->>'profile', r->>'device',
                r->>'fixture', r->>'batch', r->>'operator', (r->>'attempt')::integer,
                (r->>'started_at')::timestamptz, (r->>'ended_at')::timestamptz, r->>'failed_step', r->>'message',
                r->>'host_key_type', r->>'host_key_fingerprint', r->>'reprovision_reason', NEW.seq)
        ON CONFLICT (station, unit_id) DO UPDATE SET
            serial = EXCLUDED.serial, state = EXCLUDED.state, profile = EXCLUDED.profile,
            device = EXCLUDED.device, fixture = EXCLUDED.fixture, batch = EXCLUDED.batch,
            operator = EXCLUDED.operator, attempt = EXCLUDED.attempt, started_at = EXCLUDED.started_at,
            ended_at = EXCLUDED.ended_at, failed_step = EXCLUDED.failed_step, message = EXCLUDED.message,
            host_key_type = EXCLUDED.host_key_type, host_key_fingerprint = EXCLUDED.host_key_fingerprint,
            reprovision_reason = EXCLUDED.reprovision_reason, last_seq = EXCLUDED.last_seq
        WHERE f.last_seq < EXCLUDED.last_seq;
    ELSIF p->>'table' = 'certificates' THEN
        INSERT INTO fleet_certificates AS f (station, cert_id, unit_id, serial_hex, fingerprint_sha256, spki_sha256,
                                             subject, issued_at, revoked_at, revocation_reason, last_seq)
        VALUES (NEW.station, (p->>'pk')::bigint, (r->>'unit_id')::bigint, r->>'serial_hex',
                r->>'fingerprint_sha256', r->>'spki_sha256', r->>'subject', (r->>'issued_at')::timestamptz,
                (r->>'revoked_at')::timestamptz, r->>'revocation_reason', NEW.seq)
        ON CONFLICT (station, cert_id) DO UPDATE SET
            revoked_at = EXCLUDED.revoked_at, revocation_reason = EXCLUDED.revocation_reason,
            last_seq = EXCLUDED.last_seq
        WHERE f.last_seq < EXCLUDED.last_seq;
    ELSIF p->>'table' = 'steps' AND r->>'step' = 'guard' AND strpos(r->>'excerpt', 'fleet: not checked') > 0 THEN
        SELECT serial INTO board FROM fleet_units WHERE station = NEW.station AND unit_id = (r->>'unit_id')::bigint;
        INSERT INTO fleet_flags (station, unit_id, serial, reason)
        VALUES (NEW.station, (r->>'unit_id')::bigint, board,
                'provisioned while the fleet was unreachable (offline = allow-and-flag): not checked across stations')
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER fleet_journal_check BEFORE INSERT ON fleet_journal
    FOR EACH ROW EXECUTE FUNCTION fleet_journal_check();
CREATE TRIGGER fleet_journal_apply AFTER INSERT ON fleet_journal
    FOR EACH ROW EXECUTE FUNCTION fleet_journal_apply();

-- The guard step's question, answered in one round trip: may this station touch this board now?
CREATE FUNCTION fleet_check_unit(p_serial text, p_unit_id bigint, p_reprovision boolean, p_host_key text)
RETURNS TABLE (granted boolean, reason text, other_station text, other_line text, other_serial text,
               other_state text, since timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me text;
    c fleet_claims%ROWTYPE;
    o record;
    holder_state text;
    holder_step text;
BEGIN
    SELECT name INTO me FROM fleet_stations WHERE role_name = session_user;
    IF me IS NULL THEN
        RAISE EXCEPTION 'role % is not registered as a station of this fleet (run station fleet init)', session_user
            USING ERRCODE = '42501';
    END IF;
    IF p_host_key IS NOT NULL THEN
        SELECT u.station, s.line, u.serial, u.state, u.started_at INTO o
        FROM fleet_units u JOIN fleet_stations s ON s.name = u.station
        WHERE u.host_key_fingerprint = p_host_key AND u.serial <> p_serial AND u.state IN ('running', 'passed')
        ORDER BY u.started_at DESC LIMIT 1;
        IF FOUND THEN
            RETURN QUERY SELECT false, 'host key'::text, o.station, o.line, o.serial, o.state, o.started_at;
            RETURN;
        END IF;
    END IF;
    SELECT u.station, s.line, u.serial, u.state, u.started_at INTO o
    FROM fleet_units u JOIN fleet_stations s ON s.name = u.station
    -- A running unit elsewhere counts through its claim below: until its own guard claimed the serial it has
    -- not touched its board, and two units that both started must not refuse each other.
    WHERE u.serial = p_serial AND u.station <> me
      AND ((u.state = 'failed' AND coalesce(u.failed_step, '') NOT IN ('guard', 'identify'))
           OR (u.state = 'passed' AND NOT p_reprovision))
    ORDER BY u.started_at DESC LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT false, 'unit'::text, o.station, o.line, o.serial, o.state, o.started_at;
        RETURN;
    END IF;
    INSERT INTO fleet_claims (serial, station, unit_id) VALUES (p_serial, me, p_unit_id)
    ON CONFLICT (serial) DO NOTHING;
    IF FOUND THEN
        RETURN QUERY SELECT true, 'claimed'::text, NULL::text, NULL::text, NULL::text, NULL::text, now();
        RETURN;
    END IF;
    SELECT * INTO c FROM fleet_claims WHERE serial = p_serial FOR UPDATE;
    IF c.station <> me THEN
        SELECT u.state, u.failed_step INTO holder_state, holder_step
        FROM fleet_units u WHERE u.station = c.station AND u.unit_id = c.unit_id;
        IF NOT (holder_state IN ('aborted', 'superseded')
                OR (holder_state = 'failed' AND holder_step = 'guard')
                OR (holder_state = 'passed' AND p_reprovision)) OR holder_state IS NULL THEN
            RETURN QUERY SELECT false, 'claim'::text, c.station, (SELECT line FROM fleet_stations WHERE name = c.station),
                                p_serial, coalesce(holder_state, 'running'), c.claimed_at;
            RETURN;
        END IF;
    END IF;
    UPDATE fleet_claims SET station = me, unit_id = p_unit_id, claimed_at = now() WHERE serial = p_serial;
    RETURN QUERY SELECT true, 'claimed'::text, NULL::text, NULL::text, NULL::text, NULL::text, now();
END $$;

REVOKE ALL ON FUNCTION fleet_check_unit(text, bigint, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_check_unit(text, bigint, boolean, text) TO @writers@;
GRANT SELECT ON fleet_stations, fleet_journal, fleet_units, fleet_certificates, fleet_claims, fleet_flags,
                fleet_schema_migrations TO @writers@, @readers@;
GRANT INSERT ON fleet_journal TO @writers@;
"""

# Migration 3 (#15, the GUI's whole-fleet yield): every step attempt of every station, derived from the journal
# like fleet_units — what the yield's "failed attempts by step" and key-generation times are counted from. Its own
# trigger and function (fleet_journal_apply stays as migrations 1 and 2 left it); existing journals are backfilled.
_V3 = r"""
CREATE TABLE fleet_steps (
    station text NOT NULL,
    step_id bigint NOT NULL,
    unit_id bigint NOT NULL,
    step text NOT NULL,
    attempt integer,
    outcome text NOT NULL,
    started_at timestamptz,
    ended_at timestamptz,
    last_seq bigint NOT NULL,
    PRIMARY KEY (station, step_id)
);
CREATE INDEX fleet_steps_unit ON fleet_steps (station, unit_id);
-- outcome first: "failed attempts by step" asks for outcome = 'failed' of any step.
CREATE INDEX fleet_steps_outcome_step ON fleet_steps (outcome, step);

CREATE FUNCTION fleet_journal_steps() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp AS $$
DECLARE
    -- json, not jsonb: a few fields read once, where converting the whole row to jsonb costs more.
    p json := NEW.payload::json;
    r json := p->'row';
BEGIN
    IF p->>'table' = 'steps' THEN
        INSERT INTO fleet_steps AS f (station, step_id, unit_id, step, attempt, outcome, started_at, ended_at, last_seq)
        VALUES (NEW.station, (p->>'pk')::bigint, (r->>'unit_id')::bigint, r->>'step', (r->>'attempt')::integer,
                r->>'outcome', (r->>'started_at')::timestamptz, (r->>'ended_at')::timestamptz, NEW.seq)
        ON CONFLICT (station, step_id) DO UPDATE SET
            outcome = EXCLUDED.outcome, started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
            attempt = EXCLUDED.attempt, last_seq = EXCLUDED.last_seq
        WHERE f.last_seq < EXCLUDED.last_seq;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER fleet_journal_steps AFTER INSERT ON fleet_journal
    FOR EACH ROW WHEN (NEW.payload LIKE '%"table":"steps"%') EXECUTE FUNCTION fleet_journal_steps();

INSERT INTO fleet_steps (station, step_id, unit_id, step, attempt, outcome, started_at, ended_at, last_seq)
SELECT DISTINCT ON (j.station, (j.payload::jsonb->>'pk')::bigint)
       j.station, (j.payload::jsonb->>'pk')::bigint, (j.payload::jsonb->'row'->>'unit_id')::bigint,
       j.payload::jsonb->'row'->>'step', (j.payload::jsonb->'row'->>'attempt')::integer,
       j.payload::jsonb->'row'->>'outcome', (j.payload::jsonb->'row'->>'started_at')::timestamptz,
       (j.payload::jsonb->'row'->>'ended_at')::timestamptz, j.seq
FROM fleet_journal j WHERE j.payload::jsonb->>'table' = 'steps'
ORDER BY j.station, (j.payload::jsonb->>'pk')::bigint, j.seq DESC;

GRANT SELECT ON fleet_steps TO @writers@, @readers@;
"""

# Append-only list: a later migration (e.g. central work orders) is version 2, and so on.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "stations, journal, derived units/certificates, claims, flags, roles", _V1),
    Migration(3, "step attempts of every station (fleet_steps), for the fleet's yield", _V3),
)


@dataclass(frozen=True)
class RoleNames:
    writers: str
    readers: str


def role_names(database: str) -> RoleNames:
    """The group roles of one fleet database (roles are cluster-wide, so they carry the database's name)."""
    slug = _slug(database)
    return RoleNames(writers=f"{slug}_stations"[:63], readers=f"{slug}_quality"[:63])


def station_role(database: str, station: str) -> str:
    return f"{_slug(database)}_st_{_slug(station)}"[:63]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "x"


def schema_version(conn: Any) -> int:
    """The highest migration applied; 0 for an empty database."""
    row = conn.execute("SELECT to_regclass('fleet_schema_migrations') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM fleet_schema_migrations").fetchone()
    return int(row[0])


def migrate(conn: Any) -> list[int]:
    """Apply every migration not applied yet, in order; return the versions applied now."""
    from psycopg import sql

    database = conn.info.dbname
    roles = role_names(database)
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        for group in (roles.writers, roles.readers):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [group]).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS fleet_schema_migrations (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {int(row[0]) for row in conn.execute("SELECT version FROM fleet_schema_migrations").fetchall()}
        newest_known = MIGRATIONS[-1].version
        if done and max(done) > newest_known:
            raise FleetError(
                f"The fleet database {database} has schema version {max(done)}, newer than this station knows "
                f"({newest_known}). Update the station software."
            )
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            text = migration.sql.replace("@writers@", sql.Identifier(roles.writers).as_string(conn)).replace(
                "@readers@", sql.Identifier(roles.readers).as_string(conn)
            )
            conn.execute(text)
            conn.execute(
                "INSERT INTO fleet_schema_migrations (version, description) VALUES (%s, %s)",
                [migration.version, migration.description],
            )
            applied.append(migration.version)
    return applied


@dataclass(frozen=True)
class Registration:
    station: str
    line: str
    role: str
    ca_fingerprint: str
    created: bool


def register_station(
    conn: Any, *, station: str, line: str, ca_fingerprint: str, password: str, replace: bool = False
) -> Registration:
    """Create (or give a new password to) the station's role and record the station in ``fleet_stations``.

    A station name already registered with another CA is refused unless ``replace``: two PCs claiming one name
    would mix their journals.
    """
    from psycopg import sql

    database = conn.info.dbname
    roles = role_names(database)
    role = station_role(database, station)
    verifier = scram_verifier(password)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        existing = conn.execute(
            "SELECT line, ca_fingerprint, role_name FROM fleet_stations WHERE name = %s", [station]
        ).fetchone()
        if existing is not None and existing[1] != ca_fingerprint and not replace:
            raise StationError(
                f"Station {station!r} is already registered in the fleet with another CA (fingerprint "
                f"{existing[1][:16]}…, line {existing[0]}). Pick another station_name, or re-register it on purpose "
                f"with --replace (the old station's journal stays)."
            )
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        # The password goes to the server only as a SCRAM verifier: it never appears in clear in a statement.
        conn.execute(
            sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
        )
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(roles.writers), sql.Identifier(role)))
        conn.execute(
            """
            INSERT INTO fleet_stations (name, line, ca_fingerprint, role_name) VALUES (%s, %s, %s, %s)
            ON CONFLICT (name) DO UPDATE SET line = EXCLUDED.line, ca_fingerprint = EXCLUDED.ca_fingerprint,
                role_name = EXCLUDED.role_name
            """,
            [station, line, ca_fingerprint, role],
        )
    return Registration(station, line, role, ca_fingerprint, existing is None)


def new_password() -> str:
    return secrets.token_urlsafe(32)


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (what ``ALTER ROLE … PASSWORD`` stores)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def write_pgpass(path: Path, *, host: str, port: int, database: str, role: str, password: str) -> None:
    """Write the station's pgpass file (0600) — libpq reads the password from it; it is in no argv or env."""
    import os

    from station.pki import write_file_atomically

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace(":", "\\:")

    line = ":".join(escape(part) for part in (host, str(port), database, role, password)) + "\n"
    write_file_atomically(path, line.encode("utf-8"), mode=0o600, replace=True)
    os.chmod(path, 0o600)
