"""`station sim …` on the command line: tables, fixtures file, faults, clear errors."""

from __future__ import annotations

import socket
import tomllib

import pytest

from station.cli import main
from tests.helpers.farm import free_port

pytestmark = pytest.mark.integration


def station(capsys, home, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home.root), "sim", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_up_status_fault_down(sim_home, start_farm, capsys):
    # start_farm is requested for its teardown: the farm is stopped even if an assertion fails.
    port = str(free_port(2))
    code, out, err = station(
        capsys,
        sim_home,
        "up",
        "--count",
        "2",
        "--port",
        port,
        "--boot-delay",
        "0.2",
        "--serial-console",
        "--fault",
        "sim-02=drop-ssh",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SSH", "CONSOLE", "HOST", "KEY"]
    assert lines[1].startswith("sim-01") and f"root@127.0.0.2:{port}" in lines[1] and "SHA256:" in lines[1]
    assert f"fixtures: {sim_home.sim_dir / 'fixtures.toml'}" in out

    fixtures = tomllib.loads((sim_home.sim_dir / "fixtures.toml").read_text())["fixture"]
    assert [f["device"] for f in fixtures] == [f"ssh://root@127.0.0.2:{port}", f"ssh://root@127.0.0.3:{port}"]
    assert all(f["console"].startswith(str(sim_home.sim_dir)) for f in fixtures)

    code, out, _ = station(capsys, sim_home, "status")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(row[0], row[1], row[5]) for row in rows] == [("sim-01", "up", "-"), ("sim-02", "up", "drop-ssh")]

    assert station(capsys, sim_home, "fault", "sim-02", "--clear")[0] == 0
    assert station(capsys, sim_home, "fault", "sim-01", "no-module")[0] == 0
    rows = [line.split() for line in station(capsys, sim_home, "status")[1].splitlines()[1:]]
    assert [row[5] for row in rows] == ["no-module", "-"]

    code, out, _ = station(capsys, sim_home, "down")
    assert code == 0 and "stopped 2" in out
    rows = [line.split() for line in station(capsys, sim_home, "status")[1].splitlines()[1:]]
    assert [row[1] for row in rows] == ["down", "down"]


def test_up_names_the_address_that_is_already_in_use(sim_home, start_farm, capsys):
    port = free_port(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.3", port))
        squatter.listen()
        code, _, err = station(capsys, sim_home, "up", "--count", "2", "--port", str(port))
    assert code == 1
    assert f"127.0.0.3:{port} (sim-02)" in err and "--port" in err
    assert station(capsys, sim_home, "status")[1].startswith("no simulated devices")


def test_clear_errors_for_wrong_names_and_faults(sim_home, start_farm, capsys):
    start_farm(1)
    code, _, err = station(capsys, sim_home, "fault", "sim-07", "no-boot")
    assert code == 1 and "no simulated device named 'sim-07'" in err
    code, _, err = station(capsys, sim_home, "fault", "sim-01")
    assert code == 1 and "--clear" in err
    code, _, err = station(capsys, sim_home, "up", "--count", "1")
    assert code == 1 and "already running" in err and "station sim down" in err
    code, _, err = station(capsys, sim_home, "up", "--count", "2", "--fault", "sim-09=no-boot")
    assert code == 1 and "sim-09" in err
