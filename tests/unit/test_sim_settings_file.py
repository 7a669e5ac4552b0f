"""Both simulated farms keep their settings through station.sim.settings_file: round trip, no file, damaged file."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.errors import StationError
from station.home import StationHome
from station.sim.farm import Farm, FarmSettings
from station.sim.optee_farm import OpteeSettings
from station.sim.process import ProcessRef


def _farm(tmp_path: Path) -> Farm:
    return Farm(StationHome(tmp_path / "home").create())


def test_the_namespace_farm_reads_back_what_it_saved(tmp_path: Path) -> None:
    farm = _farm(tmp_path)
    assert farm._load_settings() is None
    settings = FarmSettings(
        count=3,
        port=2222,
        keygen_delay=0.5,
        boot_delay=1.0,
        serial_console=True,
        power={"dev-01": ProcessRef(7, 9)},
    )
    farm._save_settings(settings)
    assert farm._load_settings() == settings
    assert '"keygen_delay": 0.5' in farm.layout.settings_file.read_text()


def test_the_optee_farm_reads_back_what_it_saved(tmp_path: Path) -> None:
    optee = _farm(tmp_path).optee
    assert optee._load() is None
    settings = OpteeSettings(count=2, port=2300, tls_proof_port=8443, image="/images/a", qemu={})
    optee._save(settings)
    assert optee._load() == settings
    assert '"kind": "optee"' in optee.settings_file.read_text()


def test_a_damaged_settings_file_says_which_file_and_what_to_do(tmp_path: Path) -> None:
    farm = _farm(tmp_path)
    farm.layout.settings_file.parent.mkdir(parents=True, exist_ok=True)
    farm.layout.settings_file.write_text('{"count": 1}')  # no port, …: a KeyError inside
    with pytest.raises(StationError) as namespace_error:
        farm._load_settings()
    assert str(namespace_error.value).startswith(f"{farm.layout.settings_file} is damaged (")
    assert str(namespace_error.value).endswith(
        "; stop any simulated device with `station sim down` and delete that file"
    )
    farm.optee.settings_file.parent.mkdir(parents=True, exist_ok=True)
    farm.optee.settings_file.write_text("not json")
    with pytest.raises(StationError) as optee_error:
        farm.optee._load()
    assert str(optee_error.value).startswith(f"{farm.optee.settings_file} is damaged (")
    assert str(optee_error.value).endswith("; stop any QEMU it lists by hand and delete that file")
