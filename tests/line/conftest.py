"""Fixtures of the line tests: an audit log with finished units, and the loopback servers (always stopped)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from station.audit import AuditLog, Unit
from station.config import LabelSettings, MesSettings, StationConfig
from station.home import StationHome
from tests.helpers.audit import make_certificate, start
from tests.helpers.line_servers import FakeZplPrinter, MesServer


@pytest.fixture
def home(tmp_path: Path) -> StationHome:
    return StationHome(tmp_path / "home").create()


@pytest.fixture
def audit(home: StationHome) -> Iterator[AuditLog]:
    with AuditLog(home.audit_db) as log:
        yield log


@pytest.fixture
def finish(audit: AuditLog) -> Callable[..., Unit]:
    """``finish(serial, passed=True)``: a unit of that board, ended as the flow would end it."""

    def make(serial: str, *, passed: bool = True, operator: str = "ann") -> Unit:
        unit = start(audit, serial, operator=operator)
        if passed:
            audit.record_certificate(unit.id, certificate_pem=make_certificate(f"serial:{serial}"))
            return audit.finish_unit(unit.id, result="passed")
        return audit.finish_unit(unit.id, result="failed", failed_step="keygen", message="keygen timed out")

    return make


@pytest.fixture
def printer() -> Iterator[FakeZplPrinter]:
    fake = FakeZplPrinter()
    yield fake
    fake.close()


@pytest.fixture
def mes_server() -> Iterator[MesServer]:
    server = MesServer()
    yield server
    server.close()


def line_config(
    *,
    printer: str = "",
    mes_url: str = "",
    drop_folder: str = "",
    timeout_s: float = 2.0,
    retry_s: float = 0.2,
    stock: str = "62x29",
) -> StationConfig:
    return replace(
        StationConfig(name="line-3"),
        label=LabelSettings(printer=printer, print_on_pass=True, timeout_s=timeout_s, stock=stock),
        mes=MesSettings(url=mes_url, drop_folder=drop_folder, timeout_s=timeout_s, retry_s=retry_s),
    )
