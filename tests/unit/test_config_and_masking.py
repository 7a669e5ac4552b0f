"""station.toml, fixture files and secret masking."""

import pytest

from station.config import load_config, load_fixtures
from station.errors import ConfigError
from station.masking import Masker
from station.transport import DeviceAddress


def test_missing_station_toml_means_defaults(tmp_path):
    config = load_config(tmp_path / "station.toml")
    assert config.production is False and config.default_profile == "welma-optee"


def test_station_toml_with_fixtures(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text(
        '[station]\nname = "line1-st1"\nproduction = true\n\n'
        '[[fixture]]\nname = "A"\ndevice = "ssh://root@127.0.0.2:2222"\n\n'
        '[[fixture]]\nname = "B"\ndevice = "serial:///dev/ttyUSB0?baud=115200"\n'
    )
    config = load_config(path)
    assert config.name == "line1-st1" and config.production
    assert [fixture.name for fixture in config.fixtures] == ["A", "B"]
    assert load_fixtures(path) == config.fixtures


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[station]\nproduction = "yes"\n', r"station.toml, line 2: station.production"),
        ('[station\nname = "x"\n', r"station.toml: .*line 1"),
        ('[[fixture]]\nname = "A"\ndevice = "telnet://x"\n', r"station.toml, line 3: fixture.device"),
        (
            '[[fixture]]\nname = "A"\ndevice = "ssh://a"\n[[fixture]]\nname = "A"\ndevice = "ssh://b"\n',
            r"used twice",
        ),
        (
            '[station]\nname = "x"\nproducton = true\n',
            r"station.toml, line 3: station.producton: is not a setting",
        ),
        ('[stations]\nname = "x"\n', r"station.toml, line 1: stations: is not a setting"),
        ('[[fixture]]\nname = "A"\ndevice = "ssh://a"\nprofle = "x"\n', r"line 4: fixture.profle"),
    ],
)
def test_malformed_station_toml_names_file_and_line(tmp_path, text, expected):
    path = tmp_path / "station.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_pins_are_masked_as_whole_words_only():
    mask = Masker(["0000", "00000000"])
    line = (
        "--so-pin 00000000 --pin 0000 'pkcs11:object=key0;pin-value=0000' -subj /CN=serial:202600000000001/"
    )
    assert (
        mask(line)
        == "--so-pin **** --pin **** 'pkcs11:object=key0;pin-value=****' -subj /CN=serial:202600000000001/"
    )


def test_private_key_pem_is_removed_whole():
    text = "before\n-----BEGIN PRIVATE KEY-----\nMIIabc\n-----END PRIVATE KEY-----\nafter"
    assert "MIIabc" not in Masker([])(text)


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "path"),
    [
        ("ssh://root@127.0.0.2:2222", "ssh", "127.0.0.2", 2222, ""),
        ("ssh://board.local", "ssh", "board.local", 22, ""),
        ("serial:///dev/ttyUSB0?baud=115200", "serial", "", 22, "/dev/ttyUSB0"),
    ],
)
def test_device_addresses(url, scheme, host, port, path):
    address = DeviceAddress.parse(url)
    assert (address.scheme, address.host, address.port, address.path) == (scheme, host, port, path)


@pytest.mark.parametrize("url", ["127.0.0.2", "http://x", "ssh://", "ssh://h:99999", "serial://"])
def test_bad_device_addresses_say_how_to_write_them(url):
    from station.errors import StationError

    with pytest.raises(StationError, match="write it like|use ssh://|invalid port"):
        DeviceAddress.parse(url)


def test_how_much_a_board_may_send_is_a_setting_with_safe_defaults(tmp_path):
    defaults = load_config(tmp_path / "station.toml").limits
    assert (defaults.command_output_bytes, defaults.file_bytes) == (4 * 1024 * 1024, 64 * 1024)
    path = tmp_path / "station.toml"
    path.write_text("[limits]\ncommand_output_bytes = 16777216\n")
    limits = load_config(path).limits
    assert (limits.command_output_bytes, limits.file_bytes) == (16 * 1024 * 1024, 64 * 1024)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[limits]\nfile_bytes = 0\n",
            r"station\.toml, line 2: limits\.file_bytes: must be a whole number of bytes",
        ),
        (
            '[limits]\n\ncommand_output_bytes = "4 MiB"\n',
            r"line 3: limits\.command_output_bytes: must be a whole",
        ),
        ("[limits]\ncommand_output_bytes = 1099511627776\n", r"from 4096 to 1073741824"),
        ("[limits]\nfile_size = 65536\n", r"limits\.file_size: is not a setting the station knows"),
    ],
)
def test_a_bad_limit_names_file_line_and_range(tmp_path, text, expected):
    path = tmp_path / "station.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)
