"""A board's serial console for unit tests: a real pty pair with a real shell on the far side.

``socat`` joins two ptys: the station opens one (as it would open /dev/ttyUSB0), and a getty-like
script runs on the other as its controlling terminal, the way a board's console works.  The test
keeps the board side open too, to write kernel lines onto the console and so that the pair
survives a shell exiting.  Every process is stopped by PID (the board's whole session, then socat).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

# The far side: kernel boot lines, then a login loop in the manner of getty + login, then an
# interactive shell.  `reboot` (a fake on the board's PATH) kills the shell and leaves a flag; the
# loop then prints the shutdown and boot lines and comes back to the login prompt.
GETTY = r"""
set -u
boot() {
    stty sane
    printf '\n[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd034]\n'
    printf '[    0.412805] optee: initialized driver\n\nWelma test image\n'
}
boot
while :; do
    if [ -n "$BOARD_LOGIN" ]; then
        printf '\nbox login: '
        IFS= read -r user || exit 0
        user=${user%$'\r'}
        [ -z "$user" ] && continue
        printf '%s\n' "$user" >>"$BOARD_DIR/logins"  # what was typed as a user name, for the tests
        pass=
        if [ -n "$BOARD_PASSWORD" ]; then
            stty -echo  # before the prompt, as login does: the answer may already be on its way
            printf 'Password: '
            IFS= read -r pass
            stty echo
            printf '\n'
            pass=${pass%$'\r'}
        fi
        if [ "$user" != "$BOARD_LOGIN" ] || [ "$pass" != "$BOARD_PASSWORD" ]; then
            sleep 0.3
            printf '\nLogin incorrect\n'
            continue
        fi
    fi
    # Each login is a session of its own with the console as controlling terminal, as login
    # gives it; the loop itself is not in it, so a shell killed by `reboot` cannot take it along.
    setsid --ctty --wait $BOARD_SHELL
    if [ -e "$BOARD_DIR/rebooting" ]; then
        rm -f "$BOARD_DIR/rebooting"
        printf '[   99.100000] reboot: Restarting system\n'
        [ "$BOARD_COMES_BACK" = 1 ] || exec sleep infinity
        sleep "$BOARD_BOOT_DELAY"
        boot
    fi
done
"""

REBOOT = """#!/bin/sh
# The test board's reboot: init kills the console shell a moment later, as a real reboot does.
touch "$BOARD_DIR/rebooting"
( sleep 0.2; kill -KILL "$PPID" ) </dev/null >/dev/null 2>&1 &
"""

# A base64 that garbles what it carries, as a noisy line would.
CORRUPTING_BASE64 = """#!/bin/sh
/usr/bin/base64 "$@" | tr 'AB' 'BA'
"""

DRIBBLE = "while :; do printf .; sleep 0.5; done"
SILENT = "exec cat >/dev/null"

START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0


class PtyConsole:
    """One test board's console: ``station_path`` is the port the station opens."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.station_path = directory / "ttyS-station"
        self.board_path = directory / "ttyS-board"
        self.bin_dir = directory / "bin"
        self.home = directory / "home"
        self.bin_dir.mkdir()
        self.home.mkdir()
        (self.bin_dir / "reboot").write_text(REBOOT)
        (self.bin_dir / "reboot").chmod(0o755)
        self._socat: subprocess.Popen[bytes] | None = subprocess.Popen(
            ["socat", f"PTY,link={self.station_path},raw,echo=0", f"PTY,link={self.board_path},raw,echo=0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._boards: list[subprocess.Popen[bytes]] = []
        ready_by = time.monotonic() + START_TIMEOUT_S
        while not (self.station_path.is_symlink() and self.board_path.is_symlink()):
            if time.monotonic() > ready_by:
                self.stop()
                raise RuntimeError("socat did not create the console ptys within 5 s")
            time.sleep(0.02)
        # Held for the whole test: the pair survives the board's shell exiting, and the test can
        # write onto the console as the kernel does.
        self._board_fd: int | None = os.open(self.board_path, os.O_RDWR | os.O_NOCTTY)

    @property
    def url(self) -> str:
        return f"serial://{self.station_path}"

    def start(self, script: str, **env: str) -> None:
        """Run a bash script on the board side (as init runs getty: its own session, console on stdio)."""
        board_env = {
            "PATH": f"{self.bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "TERM": "vt100",
            "BOARD_DIR": str(self.directory),
            "BOARD_LOGIN": "",
            "BOARD_PASSWORD": "",
            "BOARD_SHELL": "bash --norc --noprofile -i",
            "BOARD_BOOT_DELAY": "0.5",
            "BOARD_COMES_BACK": "1",
            **env,
        }
        with open(self.board_path, "r+b", buffering=0) as tty:
            self._boards.append(
                subprocess.Popen(
                    # Every signal at its default, as on a board: a suite run in the background (`make
                    # test &`, nohup) ignores SIGINT, and the board's shell would inherit that and ignore
                    # the console's Ctrl-C.
                    ["env", "--default-signal", "bash", "-c", script],
                    stdin=tty,
                    stdout=tty,
                    stderr=tty,
                    env=board_env,
                    cwd=self.home,
                    start_new_session=True,
                )
            )

    def install(self, name: str, text: str) -> None:
        """Put a program on the board's PATH (ahead of the real ones)."""
        path = self.bin_dir / name
        path.write_text(text)
        path.chmod(0o755)

    def kernel_says(self, line: str) -> None:
        """Write a printk-like line onto the console, as the kernel does at any moment."""
        assert self._board_fd is not None
        os.write(self._board_fd, line.encode() + b"\n")

    def hang_up(self) -> None:
        """Pull the cable: the pty pair goes away under the station."""
        if self._socat is not None:
            self._socat.kill()
            self._socat.wait(timeout=STOP_TIMEOUT_S)
            self._socat = None

    def stop(self) -> None:
        for board in self._boards:
            # Logins get sessions and commands get process groups of their own, so the board's
            # whole process tree is collected first, then stopped by PID.
            for pid in [board.pid, *_descendants(board.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            board.wait(timeout=STOP_TIMEOUT_S)
        self._boards.clear()
        self.hang_up()
        if self._board_fd is not None:
            os.close(self._board_fd)
            self._board_fd = None


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces): state ppid ...
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found
