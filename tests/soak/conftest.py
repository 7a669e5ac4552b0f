"""The soak runs only when asked for (`make soak`, i.e. STATION_SOAK=1): it takes many minutes.

Its tests carry the ``soak`` marker (registered here) and are skipped in `make test`.
"""

from __future__ import annotations

import os

import pytest

SOAK_ENV = "STATION_SOAK"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: long reliability runs (make soak); skipped unless STATION_SOAK=1"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SOAK_ENV) == "1":
        return
    skip = pytest.mark.skip(reason="soak test: run it with `make soak` (STATION_SOAK=1)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)
