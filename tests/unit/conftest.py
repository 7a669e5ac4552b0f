"""Fixtures of the unit tests: the flow's station with a FakeLink board (tests/helpers/flow_station.py)."""

from tests.helpers.flow_station import flow, flow_ca, refusals  # noqa: F401
