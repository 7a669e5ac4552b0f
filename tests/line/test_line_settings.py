"""[label], [scanner] and [mes] in station.toml: defaults, typed values, and mistakes named with file and line;
the ZPL printer's ~HS answer read into words; the saved label's file name."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from station.config import load_config
from station.errors import ConfigError
from station.label import LabelError, label_file_name
from station.line.zpl import host_status_answer, parse_host_status


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_line_sections_are_read_with_their_types(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[station]\nname = "line-3"\n\n[label]\nprinter = "zpl://10.0.0.5:9100"\n'
            'print_on_pass = true\ntimeout_s = 3\nstock = "50x25"\n\n'
            '[scanner]\ndevice = "/dev/ttyACM0"\nbaud = 115200\nterminator = "\\r\\n"\n\n'
            '[mes]\nurl = "https://mes.plant.local/api/units"\ndrop_folder = "/srv/mes"\n',
        )
    )
    assert (config.label.printer, config.label.print_on_pass, config.label.timeout_s, config.label.stock) == (
        "zpl://10.0.0.5:9100",
        True,
        3.0,
        "50x25",
    )
    assert (config.scanner.device, config.scanner.baud, config.scanner.terminator) == (
        "/dev/ttyACM0",
        115200,
        "\r\n",
    )
    assert (config.mes.url, config.mes.drop_folder) == ("https://mes.plant.local/api/units", "/srv/mes")


def test_without_the_sections_nothing_is_printed_scanned_or_sent(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[station]\nname = "line-3"\n'))
    assert config.label.printer == "" and not config.label.print_on_pass
    assert config.scanner.device == "" and config.mes.url == "" and config.mes.drop_folder == ""


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ('[label]\nprinter = "lpt1"\n', "line 2: label.printer", 'must look like "zpl://HOST:9100"'),
        ('[label]\nprint_on_pass = "yes"\n', "line 2: label.print_on_pass", "must be true or false"),
        ('[label]\nstock = "A4"\n', "line 2: label.stock", "choose one of: 62x29, 50x25, 100x50"),
        ("[scanner]\nbaud = -9600\n", "line 2: scanner.baud", "must be a positive number"),
        (
            '[scanner]\nterminator = "#"\n',
            "line 2: scanner.terminator",
            "what the scanner sends after a code",
        ),
        ('[mes]\nurl = "mes.local"\n', "line 2: mes.url", "http:// or https://"),
        ("[mes]\nretries = 3\n", "line 2: mes.retries", "is not a setting the station knows"),
    ],
)
def test_a_mistake_in_a_line_section_is_named_with_its_line(
    tmp_path: Path, text: str, where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert where in str(error.value) and words in str(error.value)


def test_the_printers_host_status_is_read_into_words() -> None:
    assert parse_host_status(host_status_answer()).ready
    status = parse_host_status(host_status_answer(paper_out=True, head_open=True, paused=True))
    assert status.problems == (
        "out of labels — load a new roll and close the print head",
        "print head open — close the print head",
        "paused — press PAUSE on the printer to resume",
    )
    # Ribbon out matters only when the printer prints with a ribbon (thermal transfer).
    assert parse_host_status(host_status_answer(ribbon_out=True)).ready
    assert not parse_host_status(host_status_answer(ribbon_out=True, thermal_transfer=True)).ready
    with pytest.raises(LabelError, match="not ZPL host status"):
        parse_host_status(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def test_the_saved_labels_name_comes_from_the_setting() -> None:
    day = date(2026, 3, 2)
    assert label_file_name("label-{serial}.pdf", "202600000000001", day) == "label-202600000000001.pdf"
    assert label_file_name("{date}_{serial}", "2026/01", day) == "2026-03-02_2026_01.pdf"
    assert label_file_name("{nonsense}.pdf", "S1", day) == "label-S1.pdf"
