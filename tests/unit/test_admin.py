"""Who may do what: technicians sign in by name or badge; the admin PIN (stored only as a salted
PBKDF2 hash, owner-only) guards the station's settings; guessing is slowed down by a lockout."""

from __future__ import annotations

import argparse
import json
import os
import stat

import pytest

from station.admin import (
    LOCKOUT_S,
    MAX_WRONG_PINS,
    PIN_SCHEME,
    AdminLock,
    AdminPinError,
    StationSettings,
    check_new_pin,
    hash_pin,
    load_settings,
    operator_name,
    pin_is_set,
    pin_matches,
    pin_path,
    resolve_fixtures,
    save_settings,
    set_pin,
    settings_path,
    verify_pin,
)
from station.cli import admin as admin_cli
from station.config import Fixture, StationConfig
from station.errors import ConfigError, StationError
from station.home import StationHome


@pytest.fixture
def home(tmp_path) -> StationHome:
    return StationHome(tmp_path / "home").create()


def test_a_pin_is_stored_salted_and_hashed_readable_by_the_station_only(home):
    set_pin(home, "2468")
    stored = pin_path(home).read_text()
    assert "2468" not in stored and stored.startswith(f"{PIN_SCHEME}$")
    assert stat.S_IMODE(pin_path(home).stat().st_mode) == 0o600
    assert verify_pin(home, "2468") and not verify_pin(home, "2469")
    set_pin(home, "2468")
    assert pin_path(home).read_text() != stored  # a new salt every time


def test_hashing_is_deterministic_for_a_given_salt_and_checks_in_constant_form():
    salt = bytes(16)
    assert hash_pin("1357", salt=salt, iterations=1000) == hash_pin("1357", salt=salt, iterations=1000)
    assert pin_matches("1357", hash_pin("1357", salt=salt, iterations=1000))
    assert not pin_matches("1358", hash_pin("1357", salt=salt, iterations=1000))


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        ("123", "at least 4"),
        ("0000", "repeat one character"),
        (" 1234", "space"),
        ("12\t34", "control"),
        ("9" * 65 + "1", "at most 64"),
    ],
)
def test_a_weak_or_odd_pin_is_refused_with_the_reason(home, pin, reason):
    with pytest.raises(AdminPinError, match=reason):
        check_new_pin(pin)
    with pytest.raises(AdminPinError):
        set_pin(home, pin)
    assert not pin_is_set(home)


def test_without_a_pin_nothing_unlocks_and_the_message_says_how_to_set_one(home):
    with pytest.raises(AdminPinError, match="station admin set-pin"):
        verify_pin(home, "2468")


def test_a_pin_file_others_can_write_is_not_trusted(home):
    set_pin(home, "2468")
    os.chmod(pin_path(home), 0o666)
    with pytest.raises(AdminPinError, match="can be changed by other users"):
        verify_pin(home, "2468")


def test_a_damaged_pin_file_says_to_set_the_pin_again(home):
    pin_path(home).write_text("garbage\n")
    with pytest.raises(AdminPinError, match="damaged"):
        verify_pin(home, "2468")


def test_repeated_wrong_pins_lock_the_settings_then_the_lock_expires(home):
    set_pin(home, "2468")
    now = [1000.0]
    lock = AdminLock(home, clock=lambda: now[0])
    for attempt in range(1, MAX_WRONG_PINS):
        with pytest.raises(AdminPinError, match=f"{MAX_WRONG_PINS - attempt} tries left"):
            lock.unlock("1111")
    with pytest.raises(AdminPinError, match="locked for"):
        lock.unlock("1111")
    with pytest.raises(AdminPinError, match="too many wrong PINs"):
        lock.unlock("2468")  # even the right PIN waits out the lockout
    now[0] += LOCKOUT_S + 1
    lock.unlock("2468")


@pytest.mark.parametrize(
    ("entry", "name"),
    [("alice", "alice"), ("  Alice   Martin ", "Alice Martin"), ("BADGE-000123", "BADGE-000123")],
)
def test_an_operator_signs_in_by_name_or_badge(entry, name):
    assert operator_name(entry) == name


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "type your name"),
        ("   ", "type your name"),
        ("x" * 65, "read twice"),
        ("al\x07ice", "control characters"),
    ],
)
def test_a_sign_in_that_is_not_a_name_is_refused_with_the_reason(entry, reason):
    with pytest.raises(StationError, match=reason):
        operator_name(entry)


def test_settings_default_then_round_trip_atomically(home):
    assert load_settings(home) == StationSettings()
    chosen = StationSettings(
        profile="welma-optee-ec",
        fixtures_file="/x.toml",
        auto_start=True,
        large_font=True,
        label_layout="100x50",
    )
    save_settings(home, chosen)
    assert load_settings(home) == chosen
    assert stat.S_IMODE(settings_path(home).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"colour": "red"}', "unknown setting 'colour'"),
        ('{"auto_start": "yes"}', "true or false"),
        ('{"label_layout": "A4"}', "label_layout must be one of"),
        ('{"profile": ""}', "non-empty string"),
    ],
)
def test_a_malformed_settings_file_is_reported_with_its_path(home, content, problem):
    settings_path(home).write_text(content)
    with pytest.raises(ConfigError, match=problem) as raised:
        load_settings(home)
    assert str(settings_path(home)) in str(raised.value)


def test_a_fixture_profile_wins_over_the_settings_which_win_over_station_toml():
    config = StationConfig(name="s", default_profile="welma-optee")
    assert StationSettings().profile_for(config, None) == "welma-optee"
    assert StationSettings(profile="welma-optee-ec").profile_for(config, None) == "welma-optee-ec"
    fixture = Fixture(name="f", device="ssh://root@h:1", profile="special")
    assert StationSettings(profile="welma-optee-ec").profile_for(config, fixture) == "special"


def write_fixtures(path, name):
    path.write_text(f'[[fixture]]\nname = "{name}"\ndevice = "ssh://root@127.0.0.2:2222"\n')
    return path


def test_fixtures_come_from_the_command_line_then_settings_then_station_toml_then_the_simulator(
    home, tmp_path
):
    sim = home.sim_dir / "fixtures.toml"
    sim.parent.mkdir(parents=True)
    write_fixtures(sim, "sim-01")
    config = StationConfig(name="s", fixtures=(Fixture("line-1", "ssh://root@10.0.0.5:22"),))
    settings = StationSettings(fixtures_file=str(write_fixtures(tmp_path / "admin.toml", "admin-1")))
    explicit = write_fixtures(tmp_path / "cli.toml", "cli-1")
    assert resolve_fixtures(home, config, settings, explicit).fixtures[0].name == "cli-1"
    assert resolve_fixtures(home, config, settings).fixtures[0].name == "admin-1"
    assert resolve_fixtures(home, config, StationSettings()).origin == "station.toml"
    source = resolve_fixtures(home, StationConfig(name="s"), StationSettings())
    assert (source.origin, source.path, source.fixtures[0].name) == ("simulated farm", sim, "sim-01")
    sim.unlink()
    assert resolve_fixtures(home, StationConfig(name="s"), StationSettings()).fixtures == ()
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_fixtures(home, config, StationSettings(fixtures_file=str(tmp_path / "nope.toml")))


def run_admin_cli(home: StationHome, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="station")
    parser.add_argument("--home")
    admin_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--home", str(home.root), "admin", *argv])
    return int(args.handler(args))


def test_station_admin_set_pin_takes_the_pin_from_the_environment(home, monkeypatch, capsys):
    monkeypatch.setenv("STATION_ADMIN_PIN", "8642")
    assert run_admin_cli(home, "set-pin") == 0
    assert verify_pin(home, "8642")
    assert "admin PIN set" in capsys.readouterr().out
    monkeypatch.setenv("STATION_ADMIN_PIN", "9753")
    run_admin_cli(home, "set-pin")
    assert verify_pin(home, "9753") and "admin PIN changed" in capsys.readouterr().out
    assert json.dumps("9753") not in pin_path(home).read_text()


def test_station_admin_set_pin_without_a_terminal_or_variable_says_what_to_do(home, monkeypatch):
    monkeypatch.delenv("STATION_ADMIN_PIN", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(StationError, match="STATION_ADMIN_PIN"):
        run_admin_cli(home, "set-pin")
