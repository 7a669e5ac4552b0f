"""The station service gives way to the window: its session's CPU group weighs less (autogroup nice)."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.home import StationHome
from tests.helpers.service import running_service

AUTOGROUP = Path("/proc/self/autogroup")


@pytest.mark.skipif(not AUTOGROUP.exists(), reason="this kernel has no autogroup scheduling")
@pytest.mark.parametrize(("setting", "expected"), [(None, "nice 5"), ("0", "nice 0"), ("12", "nice 12")])
def test_the_service_session_weighs_below_the_window(tmp_path, setting, expected) -> None:
    home = StationHome(tmp_path / "home").create()
    env = {"STATION_SERVICE_AUTOGROUP_NICE": setting} if setting is not None else {}
    with running_service(home, tmp_path / "station.sock", env=env) as service:
        group = Path(f"/proc/{service.pid}/autogroup").read_text()
        assert group.split()[-2:] == expected.split(), group
        # Its own session's group, not its starter's (the window's, here the test's).  The kernel prints
        # nothing for the default group (sessions that never called setsid, as under CI's runner).
        assert group.split()[:1] != AUTOGROUP.read_text().split()[:1]


def test_a_bad_setting_is_said_and_the_service_runs_at_the_windows_weight(tmp_path) -> None:
    home = StationHome(tmp_path / "home").create()
    log = tmp_path / "service.log"
    with running_service(
        home, tmp_path / "station.sock", env={"STATION_SERVICE_AUTOGROUP_NICE": "-3"}, log=log
    ) as service:
        if AUTOGROUP.exists():
            assert Path(f"/proc/{service.pid}/autogroup").read_text().split()[-1] == "0"
    assert "STATION_SERVICE_AUTOGROUP_NICE='-3' is not a niceness from 0 to 19" in log.read_text()
