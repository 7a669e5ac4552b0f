"""[fleet] in station.toml, the fleet's small pure pieces (DSN handling, SCRAM verifier, the forwarder's status
words) — no server here; the fleet against a real PostgreSQL is in tests/integration/test_fleet_*.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from station.cli.fleet import station_dsn, write_fleet_section
from station.config import FleetConfig, load_config
from station.errors import ConfigError
from station.fleet.connection import redact
from station.fleet.forwarder import FleetStatus, format_age
from station.fleet.schema import MIGRATIONS, role_names, scram_verifier, station_role


def test_no_fleet_section_means_no_fleet(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text('[station]\nname = "st1"\n')
    assert load_config(path).fleet is None


def test_a_fleet_section_is_read_with_its_defaults(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text('[station]\nname = "st1"\n\n[fleet]\ndsn = "postgresql://fleet_st_st1@db:5432/fleet"\n')
    fleet = load_config(path).fleet
    assert fleet == FleetConfig(
        dsn="postgresql://fleet_st_st1@db:5432/fleet",
        station_name="st1",
        line="",
        offline="allow-and-flag",
        passfile=tmp_path / "fleet" / "pgpass",
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'offline = "sometimes"\ndsn = "postgresql://a@b/c"\n',
            r"line \d+: fleet.offline: must be one of allow-and-flag, refuse",
        ),
        ('dsn = "postgresql://a:secret@b/c"\n', r"fleet.dsn: must not contain a password"),
        ('dsn = "mysql://a@b/c"\n', r"fleet.dsn: must be a URL postgresql://"),
        ('line = "L1"\n', r"needs dsn"),
        ('dsn = "postgresql://a@b/c"\nlien = "L1"\n', r"fleet.lien: is not a setting"),
        ('dsn = "postgresql://a@b/c"\nline = 3\n', r"fleet.line: must be a string"),
    ],
)
def test_a_bad_fleet_section_names_file_line_and_what_to_do(tmp_path, body, expected):
    path = tmp_path / "station.toml"
    path.write_text("[fleet]\n" + body)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_fleet_init_writes_or_replaces_only_the_fleet_section(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text(
        '[station]\nname = "st1"\n\n[fleet]\ndsn = "postgresql://old@x/y"\nline = "L0"\n\n'
        '[[fixture]]\nname = "A"\ndevice = "ssh://root@127.0.0.2:2222"\n'
    )
    fleet = FleetConfig(
        dsn="postgresql://fleet_st_st1@db:5432/fleet", station_name="st1", line="L3", offline="refuse"
    )
    write_fleet_section(path, fleet)
    config = load_config(path)
    assert config.fleet is not None and (config.fleet.dsn, config.fleet.line, config.fleet.offline) == (
        fleet.dsn,
        "L3",
        "refuse",
    )
    assert [f.name for f in config.fixtures] == ["A"] and config.name == "st1"
    assert path.read_text().count("[fleet]") == 1


def test_the_station_dsn_keeps_host_database_and_tls_options_but_takes_the_station_role():
    admin = "postgresql://fleet_admin@db.plant:5433/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert station_dsn(admin, "fleet_st_l3_1") == (
        "postgresql://fleet_st_l3_1@db.plant:5433/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    )
    assert redact("postgresql://u:s3cret@h/d") == "postgresql://u:***@h/d"


def test_role_names_are_per_database_and_safe():
    assert role_names("fleet").writers == "fleet_stations" and role_names("fleet").readers == "fleet_quality"
    assert station_role("fleet", "Line 3 / PC-1") == "fleet_st_line_3_pc_1"
    assert len(station_role("f" * 60, "s" * 60)) <= 63


def test_migrations_are_a_numbered_list_from_one():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_the_scram_verifier_is_what_postgresql_computes_for_the_password():
    verifier = scram_verifier("pencil")
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored, server = keys.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", base64.b64decode(salt), int(iterations))
    assert method == "SCRAM-SHA-256" and iterations == "4096"
    assert (
        base64.b64decode(stored)
        == hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    )
    assert base64.b64decode(server) == hmac.new(salted, b"Server Key", "sha256").digest()
    assert "pencil" not in verifier


def test_the_status_says_state_backlog_and_age_in_words():
    now = datetime.now(UTC)
    status = FleetStatus("offline", 42, now - timedelta(minutes=3), 10, 52)
    assert status.summary() == "fleet OFFLINE · 42 events to send, oldest 3 min old"
    assert FleetStatus("online", 0, None, 5, 5).summary() == "fleet online · 0 events to send"
    assert [format_age(s) for s in (5, 600, 7200, 3 * 86400)] == ["5 s", "10 min", "2.0 h", "3.0 days"]


def test_an_unreachable_fleet_refuses_or_flags_the_unit_as_the_offline_policy_says(tmp_path):
    import socket
    import time

    from station.fleet.guard import FleetGuard, FleetRefusal

    with socket.socket() as probe:  # a port with nobody listening: connection refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dsn = f"postgresql://fleet_st_x@127.0.0.1:{port}/fleet"
    refusing = FleetGuard(FleetConfig(dsn=dsn, station_name="x", line="L1", offline="refuse"))
    with pytest.raises(FleetRefusal, match=r'offline policy is "refuse".*press Retry'):
        refusing.check_unit(serial="202600000000001", unit_id=1, reprovision=False, host_key=None)
    flagging = FleetGuard(FleetConfig(dsn=dsn, station_name="x", line="L1", offline="allow-and-flag"))
    began = time.monotonic()
    verdict = flagging.check_unit(serial="202600000000001", unit_id=1, reprovision=False, host_key=None)
    assert not verdict.checked and verdict.text.startswith("fleet: not checked")
    # Within the back-off the next unit does not wait for another connection attempt.
    again = flagging.check_unit(serial="202600000000002", unit_id=2, reprovision=False, host_key=None)
    assert not again.checked and time.monotonic() - began < 4
    assert flagging.public_key_holder("ab" * 32) is None
