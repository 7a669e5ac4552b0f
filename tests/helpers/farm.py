"""Simulated-farm pieces shared by the integration, GUI, packaging and soak tests: a free port for a farm,
and the ``sim_home`` / ``sim_farm`` / ``start_farm`` fixtures (a conftest imports them to offer them).

``start_farm(count=1, **up_options)`` boots a farm in a fresh station home (``sim_home``) on a
free TCP port and always stops it at teardown.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from station.home import StationHome
from station.sim.farm import Farm, SimDevice
from station.sim.layout import FIRST_HOST_OCTET
from station.sim.preflight import address_in_use

# Small boot delay: reboots in tests should cost little, and still go through the power-off gap.
TEST_BOOT_DELAY_S = 0.2


def free_port(count: int) -> int:
    """A TCP port free on every address the farm will use (127.0.0.2 … 127.0.0.count+1)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        addresses = (f"127.0.0.{FIRST_HOST_OCTET + i}" for i in range(count))
        if not any(address_in_use(address, port) for address in addresses):
            return port
    raise RuntimeError("no free TCP port found for the simulated farm")


@pytest.fixture
def sim_home(tmp_path: Path) -> StationHome:
    """The station home that ``start_farm`` uses in this test."""
    return StationHome(tmp_path / "home").create()


@pytest.fixture
def sim_farm(sim_home: StationHome) -> Farm:
    return Farm(sim_home)


@pytest.fixture
def start_farm(sim_farm: Farm) -> Iterator[Callable[..., list[SimDevice]]]:
    """Boot simulated devices; calling it again in the same test restarts the farm (same home).

    Keyword options go to ``Farm.up``; the boot delay defaults to a short one and the port to a
    free one.  The farm is always stopped at teardown.
    """
    started = False

    def start(count: int = 1, **up_options: Any) -> list[SimDevice]:
        nonlocal started
        if started:
            sim_farm.down()
        up_options.setdefault("boot_delay", TEST_BOOT_DELAY_S)
        up_options.setdefault("port", free_port(count))
        started = True
        return sim_farm.up(count, **up_options)

    try:
        yield start
    finally:
        sim_farm.down()
