"""Names, addresses and configuration files of simulated boards (no namespaces needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from station.home import StationHome
from station.sim.layout import FarmLayout, render_device_env, render_sshd_config


def farm(root: Path) -> FarmLayout:
    return FarmLayout(StationHome(root))


def test_boards_are_numbered_like_the_tutorial_board(tmp_path):
    layout = farm(tmp_path)
    first, tenth = layout.device(1), layout.device(10)
    assert (first.name, first.hostname, first.address) == ("sim-01", "sm2s-imx8plus-mbep5-01", "127.0.0.2")
    assert (tenth.name, tenth.address) == ("sim-10", "127.0.0.11")
    assert first.root == tmp_path / "sim" / "devices" / "sim-01"
    assert layout.device_named("sim-10") == tenth
    assert layout.device_named("sim-1") is None
    assert layout.device_named("board-01") is None
    assert layout.device_named("sim-00") is None


def test_sshd_config_is_the_boards_own(tmp_path):
    config = render_sshd_config(farm(tmp_path).device(3), 2299)
    assert "ListenAddress 127.0.0.4:2299\n" in config
    for line in (
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "UsePAM no",
        "PidFile /run/sshd.pid",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ):
        assert f"{line}\n" in config


def test_device_env_survives_awkward_paths_when_sourced_by_bash(tmp_path):
    awkward = tmp_path / "it's $HOME `x`"
    device = farm(awkward).device(2)
    env_file = tmp_path / "device.env"
    env_file.write_text(render_device_env(device, boot_delay=0.25, serial_console=True))
    shown = subprocess.run(
        [
            "bash",
            "-c",
            'set -u; . "$1"; printf "%s\\n" "$SIM_BOARD_DIR" "$SIM_BOOT_DELAY" "$SIM_CONSOLE_LINK"',
            "-",
            str(env_file),
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.splitlines()
    assert shown == [str(device.board_dir), "0.25", str(device.console_link)]


def test_no_console_variables_without_serial_console(tmp_path):
    text = render_device_env(farm(tmp_path).device(1), boot_delay=1.0, serial_console=False)
    assert "SIM_CONSOLE_LINK=''" in text
