"""The serial console of a simulated board, driven with pyserial as a technician's terminal would."""

from __future__ import annotations

import re
import time
import uuid

import pytest
import serial

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 10.0


class Console:
    """Just enough of a serial terminal for the test: read until a pattern, send lines."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self.buffer = b""

    def expect(self, pattern: bytes, timeout_s: float = READ_TIMEOUT_S) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(pattern, self.buffer, re.S)
            if found:
                self.buffer = self.buffer[found.end() :]
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {pattern!r} on the console within {timeout_s:g} s; got {self.buffer!r}"
                )
            self.buffer += self.port.read(4096)

    def send(self, line: str) -> None:
        self.port.write(line.encode() + b"\r")

    def run(self, command: str) -> tuple[int, str]:
        """Marker protocol: output between a begin marker and the exit status."""
        nonce = uuid.uuid4().hex[:8]
        self.send(f"echo __BEGIN_{nonce}__; {command}; echo __RC_{nonce}_$?__")
        found = self.expect(
            rb"__BEGIN_" + nonce.encode() + rb"__\r?\n(.*?)__RC_" + nonce.encode() + rb"_(\d+)__"
        )
        return int(found.group(2)), found.group(1).decode().replace("\r\n", "\n")

    def login(self, hostname: str) -> None:
        self.send("")
        self.expect(re.escape(f"{hostname} login: ").encode())
        self.send("root")
        self.expect(rb"# ")
        # Quiet, unambiguous shell: no echo, no bracketed-paste escapes.
        self.send("stty -echo; bind 'set enable-bracketed-paste off'; PS1='__PROMPT__ '")
        self.expect(rb"__PROMPT__ ")


def test_console_shows_boot_and_login_and_runs_commands(start_farm, ssh):
    (device,) = start_farm(1, serial_console=True)
    assert device.console_path is not None and device.console_path.is_symlink()

    with serial.Serial(str(device.console_path), baudrate=115200, timeout=0.1) as port:
        console = Console(port)
        console.login(device.hostname)
        assert console.run("hostname") == (0, f"{device.hostname}\n")
        assert console.run("ls /var/lib/tee; false")[0] == 1

        # A reboot (here from SSH) shows the kernel's boot lines and a fresh login prompt.
        assert ssh(device, "reboot", check=False).returncode == 255
        console.expect(rb"reboot: Restarting system")
        console.expect(rb"\[    0\.000000\] Booting Linux on physical CPU 0x0")
        console.expect(re.escape(f"{device.hostname} login: ").encode())

        console.login(device.hostname)
        status, output = console.run("cat /proc/1/cmdline | tr '\\0' ' '; echo; tty")
        assert status == 0 and "init.sh" in output and "/dev/pts/" in output

        # Logging out respawns the login prompt, as getty does.
        console.send("exit")
        console.expect(re.escape(f"{device.hostname} login: ").encode())


def test_console_path_survives_reboots_and_is_in_the_fixtures(start_farm, ssh, sim_home, wait_for_state):
    (device,) = start_farm(1, serial_console=True)
    target = device.console_path.resolve()
    ssh(device, "reboot", check=False)
    wait_for_state(device.name, "up")
    assert device.console_path.resolve() == target
    assert f'console = "{device.console_path}"' in (sim_home.sim_dir / "fixtures.toml").read_text()
