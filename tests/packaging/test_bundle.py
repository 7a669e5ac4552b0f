"""The line PC's bundle (`make dist`): built with PyInstaller from packaging/station.spec, then run the way a line
PC runs it — from its folder, with an empty environment (no venv, no PYTHONPATH, PATH=/usr/bin:/bin).

The bundle is built once for this module into a temporary folder (about 20 s), never into the checkout's dist/.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from station import __version__
from station.home import StationHome
from station.sim.farm import Farm
from tests.helpers.engine_events import carries, descendants, forkserver, parent_of, worker_pids
from tests.helpers.farm import free_port

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "packaging" / "station.spec"
BUILD_TIMEOUT_S = 300
RUN_TIMEOUT_S = 60
PROVISION_TIMEOUT_S = 120
PASSPHRASE = "bundle-test-passphrase"
SERIAL = "202600000000042"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/station/ as `make dist` makes it, built from this checkout."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        pytest.fail(
            "PyInstaller is not installed in this venv, so the bundle cannot be built — install the packaging "
            "extra: .venv/bin/pip install -e '.[dev,packaging]'"
        )
    work = tmp_path_factory.mktemp("pyinstaller")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(work / "dist"),
            "--workpath",
            str(work / "build"),
            str(SPEC),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert built.returncode == 0, f"PyInstaller failed:\n{built.stdout[-3000:]}\n{built.stderr[-5000:]}"
    return work / "dist" / "station"


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a line PC's session that never saw the venv: a home, the system PATH, a UTF-8 locale."""
    user_home = tmp_path / "user"
    user_home.mkdir()
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(user_home),
        "LANG": "C.UTF-8",
        "STATION_HOME": str(tmp_path / "station-home"),
    }


def run(
    program: Path | str, *args: str, env: dict[str, str], timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_the_bundle_holds_both_programs_the_qt_platforms_and_the_package_data(bundle: Path) -> None:
    for program in ("station", "station-gui"):
        assert os.access(bundle / program, os.X_OK), f"{program} is missing from the bundle"
    internal = bundle / "_internal"
    platforms = {path.name for path in (internal / "PySide6" / "Qt" / "plugins" / "platforms").iterdir()}
    assert {"libqxcb.so", "libqoffscreen.so"} <= platforms
    assert {path.name for path in (internal / "station" / "profiles").glob("*.toml")} == {
        path.name for path in (ROOT / "station" / "profiles").glob("*.toml")
    }
    assert {path.name for path in (internal / "station" / "sim").glob("*.sh")} == {
        path.name for path in (ROOT / "station" / "sim").glob("*.sh")
    }
    assert not [link for link in bundle.rglob("*") if link.is_symlink() and not link.exists()], (
        "dangling links"
    )
    share = bundle / "share"
    for needed in (
        "welma-station.desktop",
        "apt-packages.txt",
        "kiosk/welma-station-kiosk",
        "kiosk/welma-station-kiosk.desktop",
        "udev/99-welma-station.rules",
        "icons/hicolor/scalable/apps/welma-station.svg",
        "icons/hicolor/48x48/apps/welma-station.png",
    ):
        assert (share / needed).is_file(), f"share/{needed} is missing from the bundle"
    assert os.access(bundle / "install.sh", os.X_OK)


def test_station_runs_without_the_venv(bundle: Path, bare_env: dict[str, str]) -> None:
    version = run(bundle / "station", "--version", env=bare_env)
    assert (version.returncode, version.stdout.strip()) == (0, f"station {__version__}"), version.stderr

    listed = run(bundle / "station", "--help", env=bare_env)
    assert listed.returncode == 0, listed.stderr
    for command in ("provision", "batch", "units", "ca", "sim", "audit", "revoke", "gui"):
        assert re.search(rf"^\s+{command}\s", listed.stdout, re.M), (
            f"`station --help` does not list {command}"
        )

    # The shipped device profile is read from inside the bundle: a serial it refuses proves it was loaded.
    refused = run(
        bundle / "station",
        "provision",
        "--serial",
        "12AB",
        "--device",
        "ssh://root@127.0.0.9:1",
        env=bare_env,
    )
    assert refused.returncode == 1
    assert "does not match profile welma-optee's pattern" in refused.stderr


def test_programs_the_station_starts_get_the_machines_libraries_not_the_bundles(
    bundle: Path, bare_env: dict[str, str], tmp_path: Path
) -> None:
    # PyInstaller's bootloader puts _internal/ on LD_LIBRARY_PATH; openssl, bash or sshd started with it would
    # load the bundle's libssl instead of their own. `station sim up` asks `openssl version -e` first (preflight);
    # a stand-in openssl records the environment it was given.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    seen = tmp_path / "openssl-env"
    (fake_bin / "openssl").write_text(f'#!/bin/sh\nenv > "{seen}"\n')
    (fake_bin / "openssl").chmod(0o755)
    env = dict(bare_env, PATH=f"{fake_bin}:/usr/bin:/bin", LD_LIBRARY_PATH="/opt/vendor/lib")
    run(bundle / "station", "sim", "up", "--count", "1", "--port", str(free_port(1)), env=env)
    assert seen.is_file(), "`station sim up` did not run openssl"
    variables = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert variables.get("LD_LIBRARY_PATH") == "/opt/vendor/lib", "the child saw the bundle's library path"


def test_the_window_opens_offscreen_from_the_bundle(bundle: Path, bare_env: dict[str, str]) -> None:
    env = dict(bare_env, STATION_CA_PASSPHRASE=PASSPHRASE)
    created = run(bundle / "station", "ca", "init", env=env)
    assert created.returncode == 0, created.stderr

    # --probe-startup signs in, reports when the scan field has focus, and closes the window (ui/app.py).
    env["QT_QPA_PLATFORM"] = "offscreen"
    for program in (
        [bundle / "station-gui"],
        [bundle / "station", "-m", "ui.app"],
    ):  # the second: `station gui`
        shown = run(*program, "--probe-startup", "technician", env=env)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"^ready-to-scan .* scan-focused=True$", shown.stdout, re.M), (
            shown.stdout + shown.stderr
        )


def test_the_window_opens_on_an_x_display_from_the_bundle(bundle: Path, bare_env: dict[str, str]) -> None:
    xvfb_run = shutil.which("xvfb-run", path="/usr/bin:/bin")
    assert xvfb_run, "xvfb-run is missing: apt-get install xvfb xauth (packaging/apt-packages.txt lists them)"
    env = dict(bare_env, STATION_CA_PASSPHRASE=PASSPHRASE)
    assert run(bundle / "station", "ca", "init", env=env).returncode == 0
    shown = run(
        xvfb_run,
        "-a",
        "-s",
        "-screen 0 1280x800x24",
        "env",
        "QT_QPA_PLATFORM=xcb",
        str(bundle / "station-gui"),
        "--probe-startup",
        "technician",
        env=env,
    )
    assert shown.returncode == 0, shown.stderr
    assert "scan-focused=True" in shown.stdout, shown.stdout + shown.stderr


@pytest.fixture
def farm_cleanup(bare_env: dict[str, str]) -> Iterator[None]:
    """Stops the bundle's simulated farm even when the test fails before its own `station sim down`."""
    try:
        yield
    finally:
        Farm(StationHome(Path(bare_env["STATION_HOME"]))).down()


@pytest.mark.integration
def test_the_bundle_provisions_a_simulated_board(
    bundle: Path, bare_env: dict[str, str], farm_cleanup: None
) -> None:
    env = dict(bare_env, STATION_CA_PASSPHRASE=PASSPHRASE)
    station = bundle / "station"
    port = str(free_port(1))
    assert run(station, "ca", "init", env=env).returncode == 0
    up = run(
        station,
        "sim",
        "up",
        "--count",
        "1",
        "--port",
        port,
        "--boot-delay",
        "0.2",
        "--keygen-delay",
        "2",
        env=env,
    )
    assert up.returncode == 0, up.stderr

    events = Path(env["STATION_HOME"]) / "events.jsonl"
    process = subprocess.Popen(
        [
            str(station),
            "provision",
            "--serial",
            SERIAL,
            "--device",
            f"ssh://root@127.0.0.2:{port}",
            "--operator",
            "bundle test",
            "--events",
            str(events),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        # Mid-keygen: the unit runs in the station service the CLI started (the bundle's executable again), its
        # worker a fork of the service's fork server (the bundle's executable started as multiprocessing's
        # server, never the window's or the CLI's code), and nothing below the station carries the passphrase.
        end = time.monotonic() + PROVISION_TIMEOUT_S
        while not (events.exists() and '"step": "keygen"' in events.read_text()):
            assert process.poll() is None and time.monotonic() < end, "the unit should reach key generation"
            time.sleep(0.1)
        below = descendants(process.pid)
        server = forkserver(below)
        assert server is not None and parent_of(parent_of(server)) == process.pid, below
        workers = worker_pids([json.loads(line) for line in events.read_text().splitlines()], SERIAL)
        assert workers and all(parent_of(pid) == server for pid in workers)
        assert not [pid for pid in below if carries(pid, PASSPHRASE)]
        out, err = process.communicate(timeout=PROVISION_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out + err
    assert f"PASS: serial {SERIAL} enrolled" in out

    verified = run(station, "audit", "verify", env=env)
    assert verified.returncode == 0 and verified.stdout.startswith("audit log OK"), verified.stdout
    down = run(station, "sim", "down", env=env)
    assert (down.returncode, down.stdout.strip()) == (0, "stopped 1 simulated device(s)"), down.stderr


def test_install_sh_lays_out_the_bundle_the_desktop_entry_and_the_kiosk_start(
    bundle: Path, tmp_path: Path
) -> None:
    staged = tmp_path / "root"
    env = {"PATH": "/usr/bin:/bin", "DESTDIR": str(staged)}
    installed = run(bundle / "install.sh", "--kiosk", env=env)
    assert installed.returncode == 0, installed.stderr
    prefix = staged / "opt" / "welma-station"
    assert os.access(prefix / "station", os.X_OK) and (prefix / "_internal").is_dir()
    assert os.readlink(staged / "usr/local/bin/station") == "/opt/welma-station/station"
    assert os.readlink(staged / "usr/local/bin/station-gui") == "/opt/welma-station/station-gui"
    assert (staged / "usr/share/icons/hicolor/256x256/apps/welma-station.png").is_file()

    entry = configparser.ConfigParser(interpolation=None)
    entry.read(staged / "usr/share/applications/welma-station.desktop")
    assert entry["Desktop Entry"]["Exec"] == "/opt/welma-station/station-gui"
    assert entry["Desktop Entry"]["Icon"] == "welma-station"
    kiosk = configparser.ConfigParser(interpolation=None)
    kiosk.read(staged / "etc/xdg/autostart/welma-station-kiosk.desktop")
    assert kiosk["Desktop Entry"]["Exec"] == "/opt/welma-station/share/kiosk/welma-station-kiosk"

    # Installing again replaces the previous version whole.
    (prefix / "left-over").write_text("from the previous version")
    assert run(bundle / "install.sh", env=env).returncode == 0
    assert not (prefix / "left-over").exists()
    assert not list(prefix.parent.glob("welma-station.*")), "staging folders were left behind"
