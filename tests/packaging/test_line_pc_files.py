"""The files a line PC gets besides the programs: the system package list, the desktop entries, the kiosk start
and the example udev rule. Each is read the way its consumer reads it (make, install.sh, a desktop, udev, sh)."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
from pathlib import Path

import pytest

from station.sim.preflight import requirements

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
APT_LIST = PACKAGING / "apt-packages.txt"
KIOSK = PACKAGING / "kiosk" / "welma-station-kiosk"
UDEV_RULES = PACKAGING / "udev" / "99-welma-station.rules"
DEBIAN_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")


def listed_packages(section: str | None = None) -> list[str]:
    """Packages as the Makefile reads them (every line not starting with #), or one `# == NAME` section."""
    lines = APT_LIST.read_text(encoding="utf-8").splitlines()
    if section is not None:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"# == {section}"))
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# == ")), len(lines))
        lines = lines[start:end]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_package_list_has_one_debian_package_per_line_in_its_sections() -> None:
    packages = listed_packages()
    assert [name for name in packages if not DEBIAN_PACKAGE.fullmatch(name)] == []
    assert len(packages) == len(set(packages)), "a package is listed twice"
    sections = [
        listed_packages(name) for name in ("runtime", "simulator:", "simulator, OP-TEE kind", "development")
    ]
    assert sorted(sum(sections, [])) == sorted(packages)
    assert "openssl" in sections[0] and "qemu-system-arm" in sections[2] and "binutils" in sections[3]


def test_install_sh_reads_the_runtime_section_as_the_test_does() -> None:
    shown = subprocess.run(
        ["sh", "-c", f"sed -n '/^# == runtime/,/^# == /p' {APT_LIST} | grep -v '^#'"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert shown.stdout.split() == listed_packages("runtime")


def test_every_package_the_simulator_checks_for_is_listed() -> None:
    needed = {requirement.package for requirement in requirements(serial_console=True)}
    assert needed - set(listed_packages()) == set()


@pytest.mark.parametrize(
    "path", [PACKAGING / "welma-station.desktop", PACKAGING / "kiosk" / "welma-station-kiosk.desktop"]
)
def test_desktop_entries_name_a_program_and_the_shipped_icon(path: Path) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Name"] and entry["Exec"]
    assert entry["Icon"] == "welma-station"
    assert (ROOT / "assets" / "icons" / "welma-station.svg").is_file()
    for size in (16, 32, 48, 64, 128, 256):
        assert (
            ROOT / "assets" / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "welma-station.png"
        ).is_file()


def fake_gui(tmp_path: Path, *, exit_status: int, fullscreen_option: bool) -> tuple[Path, Path]:
    """A stand-in station-gui that records each start's arguments and exits with ``exit_status``."""
    starts = tmp_path / "starts"
    gui = tmp_path / "station-gui"
    option = "  --fullscreen   show the window full screen" if fullscreen_option else ""
    gui.write_text(
        "#!/bin/sh\n"
        f'if [ "${{1:-}}" = --help ]; then echo "usage: station-gui [--home HOME]"; echo "{option}"; exit 0; fi\n'
        f'echo "$*" >> "{starts}"\n'
        f"exit {exit_status}\n"
    )
    gui.chmod(0o755)
    return gui, starts


def run_kiosk(gui: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "STATION_GUI": str(gui), "STATION_KIOSK_RESTART_DELAY": "0"}
    return subprocess.run(
        ["sh", str(KIOSK), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_the_kiosk_opens_the_window_full_screen_and_stays_closed_when_it_is_closed(tmp_path: Path) -> None:
    assert os.access(KIOSK, os.X_OK)
    gui, starts = fake_gui(tmp_path, exit_status=0, fullscreen_option=True)
    finished = run_kiosk(gui, "--fixtures", "/etc/welma/fixtures.toml")
    assert finished.returncode == 0, finished.stderr
    assert starts.read_text().splitlines() == ["--fullscreen --fixtures /etc/welma/fixtures.toml"]


def test_the_kiosk_does_not_pass_an_option_the_window_does_not_know(tmp_path: Path) -> None:
    gui, starts = fake_gui(tmp_path, exit_status=0, fullscreen_option=False)
    assert run_kiosk(gui).returncode == 0
    assert starts.read_text().splitlines() == [""]


def test_the_kiosk_restarts_a_crashed_window_and_gives_up_after_five_quick_crashes(tmp_path: Path) -> None:
    gui, starts = fake_gui(tmp_path, exit_status=3, fullscreen_option=True)
    finished = run_kiosk(gui)
    assert finished.returncode == 3
    assert len(starts.read_text().splitlines()) == 5
    assert "failed 5 times in a row (last exit status 3); giving up" in finished.stderr


RULE_PAIR = re.compile(r'\s*([A-Z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"\s*')


def test_the_udev_example_names_fixture_consoles_and_the_scanner() -> None:
    rules = [
        line
        for line in UDEV_RULES.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = []
    for rule in rules:
        pairs = [RULE_PAIR.fullmatch(part) for part in rule.split(",")]
        assert all(pairs), f'not a udev rule (KEY=="value", …): {rule}'
        keys = {pair.group(1): (pair.group(2), pair.group(3)) for pair in pairs if pair}
        assert keys["SUBSYSTEM"][0] == "==" and keys["SYMLINK"][0] == "+="
        if keys["SUBSYSTEM"][1] == "tty":
            assert keys["GROUP"] == ("=", "dialout") and keys["MODE"] == ("=", "0660")
        names.append(keys["SYMLINK"][1])
    fixtures = [name for name in names if name.startswith("welma-fixture-")]
    assert fixtures == [f"welma-fixture-{n}" for n in range(1, len(fixtures) + 1)]
    assert "welma-scanner" in names
