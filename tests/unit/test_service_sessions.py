"""Kiosk sessions of the station service and the production-mode switch of station.toml (no service process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.audit import AuditLog
from station.config import load_config
from station.errors import ConfigError
from station.home import StationHome
from station.people import Actor, People
from station.roles import Role
from station.service.sessions import SessionError, Sessions
from station.station_settings import set_production

ROOT = Actor(name="root", account="root", administrator=True)


def test_a_session_is_bound_to_the_account_that_signed_in_and_ends_with_the_person(tmp_path: Path) -> None:
    home = StationHome(tmp_path / "home").create()
    with AuditLog(home.audit_db) as audit:
        now = [1_000_000.0]
        people = People(home, audit, clock=lambda: now[0])
        people.enrol("Quinn Lee", Role.QUALITY, "4812", by=ROOT)
        sessions = Sessions()
        token = sessions.open(people.verify("Quinn Lee", "4812", account="kiosk"), uid=1001)
        assert sessions.check(token, uid=1001, people=people).person == "Quinn Lee"
        with pytest.raises(SessionError, match="another OS account"):
            sessions.check(token, uid=1002, people=people)
        with pytest.raises(SessionError, match="unknown"):
            sessions.check("not-a-token", uid=1001, people=people)
        assert sessions.close(token, uid=1002) is None  # not that account's to end
        now[0] += 16 * 60  # past [people] session_minutes (15)
        with pytest.raises(Exception, match="session ended"):
            sessions.check(token, uid=1001, people=people)
        with pytest.raises(SessionError, match="unknown"):  # an ended session is forgotten
            sessions.check(token, uid=1001, people=people)
        again = sessions.open(people.verify("Quinn Lee", "4812", account="kiosk"), uid=1001)
        people.remove("Quinn Lee", by=ROOT)
        with pytest.raises(Exception, match="no longer enrolled"):
            sessions.check(again, uid=1001, people=people)


@pytest.mark.parametrize(
    "text",
    [
        "",
        '[station]\nname = "line-1"\n',
        '# a comment\n[station]\nname = "line-1"\nproduction = false  # demo\n\n[people]\nsession_minutes = 5\n',
        "[people]\nsession_minutes = 5\n",
    ],
)
def test_production_mode_is_switched_in_place_keeping_the_rest(tmp_path: Path, text: str) -> None:
    config = tmp_path / "station.toml"
    if text:
        config.write_text(text)
        config.chmod(0o640)
    assert set_production(config, True) is False
    after = config.read_text()
    assert load_config(config).production is True and after.count("production =") == 1
    for line in text.splitlines():
        if "production" not in line:
            assert line in after.splitlines()
    if text:
        assert config.stat().st_mode & 0o777 == 0o640
    assert set_production(config, False) is True and load_config(config).production is False


def test_a_station_toml_that_does_not_read_is_left_as_it_was(tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text("[station]\nname = 'line-1'\nbogus = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        set_production(config, True)
    assert config.read_text() == "[station]\nname = 'line-1'\nbogus = 1\n"
