"""The serial-console link against a real pty with a real shell on the far side (no simulator).

A technician plugs a USB-serial cable into a board that has no network: the station wakes the
console, logs in like a person would, and from then on every command comes back with its exact
output and exit status — whatever the kernel prints in between, however slow the line.
"""

from __future__ import annotations

import getpass
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.shell import UnsafeArgument, command
from station.transport import (
    CommandFailed,
    CommandTimedOut,
    Deadline,
    DeviceAddress,
    LinkCancelled,
    LinkError,
    LinkLost,
    OutputTooLarge,
    open_link,
)
from station.transport.serial import SerialLink
from tests.helpers.deadlines import assert_within_deadline
from tests.helpers.pty_console import CORRUPTING_BASE64, DRIBBLE, GETTY, SILENT, PtyConsole

pytestmark = pytest.mark.timeout(60)

SHELLS = {
    "bash": "bash --norc --noprofile -i",
    # dash is an ash, like the busybox sh of a Yocto image: no readline, no `bind`.
    "dash": "dash -i",
    "busybox": "busybox sh -i",
}


def available_shells() -> list[object]:
    return [
        pytest.param(
            line,
            id=name,
            marks=pytest.mark.skipif(
                shutil.which(line.split()[0]) is None, reason=f"{name} is not installed"
            ),
        )
        for name, line in SHELLS.items()
    ]


@pytest.fixture
def console(tmp_path: Path) -> Iterator[PtyConsole]:
    rig = PtyConsole(tmp_path)
    try:
        yield rig
    finally:
        rig.stop()


@pytest.fixture
def links() -> Iterator[list[SerialLink]]:
    made: list[SerialLink] = []
    yield made
    for link in made:
        link.close()


def connect(console: PtyConsole, links: list[SerialLink], *, seconds: float = 10, **login: str) -> SerialLink:
    link = SerialLink(DeviceAddress.parse(console.url), cancel=threading.Event(), **login)
    links.append(link)
    link.open(Deadline(seconds, what="open"))
    return link


def run(link: SerialLink, *argv: str, seconds: float = 10, check: bool = True):
    return link.run(command(*argv), Deadline(seconds, what="test"), check=check)


# -- logging in -------------------------------------------------------------------------------


def test_logs_in_with_the_profiles_user_and_password(console, links):
    console.start(GETTY, BOARD_LOGIN="welma", BOARD_PASSWORD="s3cret pass")
    link = connect(console, links, login_user="welma", login_password="s3cret pass")
    assert run(link, "echo", "logged in").stdout == "logged in\n"
    assert link.host_key() is None and link.local_address() is None


def test_a_development_image_needs_no_password(console, links):
    console.start(GETTY, BOARD_LOGIN="root")
    link = connect(console, links, login_user="root")
    assert run(link, "id", "-un").stdout.strip() == getpass.getuser()


def test_a_wrong_password_is_reported_as_a_profile_problem(console, links):
    console.start(GETTY, BOARD_LOGIN="root", BOARD_PASSWORD="right")
    with pytest.raises(LinkError, match="refused the login as 'root'.*login_password"):
        connect(console, links, login_user="root", login_password="wrong")


def test_a_password_prompt_without_a_password_in_the_profile_says_so(console, links):
    console.start(GETTY, BOARD_LOGIN="root", BOARD_PASSWORD="right")
    with pytest.raises(LinkError, match="asks for a password, but the profile has none"):
        connect(console, links, login_user="root")


@pytest.mark.parametrize("shell", available_shells())
def test_an_open_shell_needs_no_login(console, links, shell):
    console.start(GETTY, BOARD_SHELL=shell)
    link = connect(console, links)
    assert run(link, "echo", "ready").stdout == "ready\n"


def test_a_coloured_prompt_with_bracketed_paste_is_recognised(console, links):
    rc = console.home / "rc"
    rc.write_text("PS1='\\[\\e[1;32m\\]box:\\w\\[\\e[0m\\]\\$ '\nbind 'set enable-bracketed-paste on'\n")
    console.start(GETTY, BOARD_SHELL=f"bash --noprofile --rcfile {rc} -i")
    link = connect(console, links)
    assert run(link, "echo", "ok").stdout == "ok\n"


def test_the_prompt_pattern_comes_from_the_profile(console, links):
    rc = console.home / "rc"
    rc.write_text("PS1='welma> '\n")
    console.start(GETTY, BOARD_SHELL=f"bash --noprofile --rcfile {rc} -i")
    with pytest.raises(LinkLost, match="no login or shell prompt within 2 s.*welma>"):
        connect(console, links, seconds=2)  # the default pattern wants '#' or '$'
    link = connect(console, links, prompt_pattern=r"welma> $")
    assert run(link, "echo", "ok").stdout == "ok\n"


def test_logging_out_leaves_no_shell_and_no_history_behind(console, links):
    console.start(GETTY, BOARD_LOGIN="root")
    link = connect(console, links)
    first_shell = run(link, "sh", "-c", "echo $PPID").stdout
    run(link, "echo", "--pin", "0000")
    link.close()
    link.close()  # safe twice
    again = connect(console, links)
    assert run(again, "sh", "-c", "echo $PPID").stdout != first_shell  # a fresh login, fresh shell
    assert not (console.home / ".bash_history").exists()


def test_the_console_is_opened_exclusively(console, links):
    console.start(GETTY)
    connect(console, links)
    with pytest.raises(LinkLost, match="in use by another program"):
        connect(console, links, seconds=2)


def test_a_port_that_does_not_exist_is_named(tmp_path):
    link = SerialLink(DeviceAddress.parse(f"serial://{tmp_path}/ttyUSB9"), cancel=threading.Event())
    with pytest.raises(LinkLost, match=r"cannot open the serial console .*ttyUSB9.*plugged in"):
        link.open(Deadline(2))


def test_the_baud_rate_comes_from_the_address():
    cancel = threading.Event()
    link = open_link(
        DeviceAddress.parse("serial:///dev/ttyUSB0?baud=9600"),
        identity_file="",
        pinned_host_key=None,
        cancel=cancel,
    )
    assert isinstance(link, SerialLink) and link._baud == 9600
    assert SerialLink(DeviceAddress.parse("serial:///dev/ttyUSB0"), cancel=cancel)._baud == 115200
    with pytest.raises(LinkError, match="invalid baud rate"):
        SerialLink(DeviceAddress.parse("serial:///dev/ttyUSB0?baud=fast"), cancel=cancel)


# -- commands -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", available_shells())
def test_output_and_exit_status_are_exact(console, links, shell):
    console.start(GETTY, BOARD_SHELL=shell)
    link = connect(console, links)
    result = run(link, "sh", "-c", "printf 'a\\n\\n  b'; exit 3", check=False)
    assert (result.stdout, result.exit_status) == ("a\n\n  b", 3)
    assert run(link, "true").stdout == ""
    with pytest.raises(CommandFailed, match=r"`false` failed on the device with exit status 1") as failed:
        run(link, "false")
    assert failed.value.result.exit_status == 1
    # stderr comes merged into the one stream a console has.
    assert run(link, "sh", "-c", "echo out; echo err >&2").stdout == "out\nerr\n"
    # Values reach the board as one word each, quotes and all.
    assert run(link, "printf", "%s|", "1;reboot", "$(id)", "it's").stdout == "1;reboot|$(id)|it's|"


def test_line_ends_are_lf_and_escapes_are_gone(console, links):
    console.start(GETTY)
    link = connect(console, links)
    out = run(link, "sh", "-c", "printf 'one\\r\\ntwo\\n\\033[1;31mred\\033[0m\\n'").stdout
    assert out == "one\ntwo\nred\n"


def test_a_command_does_not_read_what_is_typed_next(console, links):
    # openssl s_client reads its stdin: on a console it would swallow the next command.
    console.start(GETTY)
    link = connect(console, links)
    assert run(link, "cat").stdout == ""
    assert run(link, "echo", "next").stdout == "next\n"


def test_20000_lines_arrive_intact(console, links):
    console.start(GETTY)
    link = connect(console, links)
    out = run(link, "seq", "1", "20000").stdout
    assert out.splitlines() == [str(n) for n in range(1, 20001)]


def test_kernel_lines_between_the_lines_of_a_command_are_removed(console, links):
    console.start(GETTY)
    link = connect(console, links)
    stop = threading.Event()

    def kernel() -> None:
        n = 0
        while not stop.wait(0.02):
            n += 1
            console.kernel_says(f"[   12.{n:06d}] usb 1-1: new high-speed USB device number {n}")

    chatter = threading.Thread(target=kernel)
    chatter.start()
    try:
        out = run(link, "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done").stdout
    finally:
        stop.set()
        chatter.join(5)
    assert out == "line1\nline2\nline3\nline4\nline5\n"
    assert any("usb 1-1: new high-speed USB device" in line for line in link.kernel_messages)


def test_a_kernel_line_cutting_into_a_line_is_removed(console, links):
    console.start(GETTY)
    link = connect(console, links)
    printed, go_on = console.home / "printed", console.home / "go-on"

    def kernel() -> None:
        wait_until = time.monotonic() + 10
        while not printed.exists() and time.monotonic() < wait_until:
            time.sleep(0.01)
        console.kernel_says("[   13.000001] optee: TA 4b5c loaded")
        go_on.touch()

    chatter = threading.Thread(target=kernel)
    chatter.start()
    try:
        out = run(
            link,
            "sh",
            "-c",
            f"printf abc; touch {printed}; until [ -e {go_on} ]; do sleep 0.01; done; echo def",
        ).stdout
    finally:
        chatter.join(10)
    assert out == "abcdef\n"


def test_a_dribbling_command_times_out_at_its_deadline_and_the_link_recovers(console, links):
    console.start(GETTY)
    link = connect(console, links)
    started = time.monotonic()
    with pytest.raises(
        CommandTimedOut, match=r"`sh` on the console .* did not finish within 2 s \(step keygen\)"
    ):
        link.run(command("sh", "-c", DRIBBLE), Deadline(2, what="step keygen"))
    assert_within_deadline(started, 2, "a dribbling command")
    assert run(link, "echo", "still here").stdout == "still here\n"  # Ctrl-C stopped the dribbler


def test_a_dribbling_console_without_a_prompt_fails_within_its_deadline(console, links):
    console.start(DRIBBLE)
    started = time.monotonic()
    with pytest.raises(
        LinkLost, match=r"no login or shell prompt within 3 s.*'\.\.\.*'.*baud rate \(115200\)"
    ):
        connect(console, links, seconds=3)
    assert_within_deadline(started, 3, "connecting to a dribbling console")


def test_a_silent_console_fails_within_its_deadline(console, links):
    console.start(SILENT)
    started = time.monotonic()
    with pytest.raises(LinkLost, match="no login or shell prompt within 2 s"):
        connect(console, links, seconds=2)
    assert_within_deadline(started, 2, "connecting to a silent console")


def test_pulling_the_cable_mid_command_is_a_lost_link(console, links):
    console.start(GETTY)
    link = connect(console, links)
    threading.Timer(0.5, console.hang_up).start()
    started = time.monotonic()
    with pytest.raises(LinkLost, match=r"closed in the middle of `sleep`.*check the cable, then press Retry"):
        run(link, "sleep", "5")
    # Noticed when the cable goes (after 0.5 s), not when the 5 s command would have ended.
    assert_within_deadline(started, 0.5, "noticing the pulled cable", slack_s=1.5)
    with pytest.raises(LinkLost, match="not open"):
        run(link, "true")


def test_a_board_that_restarts_mid_command_is_reported_at_once(console, links):
    console.start(GETTY, BOARD_LOGIN="root", BOARD_BOOT_DELAY="0.2")
    link = connect(console, links)
    started = time.monotonic()
    with pytest.raises(LinkLost, match=r"restarted in the middle of `sh` \(its login prompt came back\)"):
        # A watchdog reset: the shell dies, the board boots, the getty asks for a login.
        run(link, "sh", "-c", 'touch "$BOARD_DIR/rebooting"; kill -KILL $PPID; sleep 30', seconds=60)
    # At once: when the login prompt comes back (boot delay 0.2 s), not at the command's 60 s deadline.
    assert_within_deadline(started, 4, "noticing the restart")
    link.close()
    again = connect(console, links)
    assert run(again, "echo", "back").stdout == "back\n"
    # Logging out of a shell that is gone must not type `exit` at the login prompt.
    assert (console.directory / "logins").read_text().split() == ["root", "root"]


def test_after_a_restart_the_link_waits_until_the_board_is_back_and_logs_in_again(console, links):
    """What the reboot step does when the board goes down once more after `reboot` (steps.reboot)."""
    console.start(GETTY, BOARD_LOGIN="root", BOARD_BOOT_DELAY="0.5")
    link = connect(console, links)
    with pytest.raises(LinkLost, match="restarted in the middle of `sh`"):
        run(link, "sh", "-c", 'touch "$BOARD_DIR/rebooting"; kill -KILL $PPID; sleep 30', seconds=60)
    link.wait_until_back(Deadline(10, what="back"))
    assert run(link, "echo", "back").stdout == "back\n"
    assert (console.directory / "logins").read_text().split() == ["root", "root"]


def test_cancel_stops_a_running_command(console, links):
    console.start(GETTY)
    cancel = threading.Event()
    link = SerialLink(DeviceAddress.parse(console.url), cancel=cancel)
    links.append(link)
    link.open(Deadline(10))
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(LinkCancelled):
        run(link, "sleep", "5")
    # Cancel is pressed after 0.3 s; the 5 s command is not waited for.
    assert_within_deadline(started, 0.3, "stopping at Cancel", slack_s=1.2)
    cancel.clear()
    assert run(link, "echo", "free").stdout == "free\n"


def test_nothing_with_a_control_character_is_ever_typed(console, links):
    console.start(GETTY)
    link = connect(console, links)
    # ShellCommand checks its arguments; a redirect is the station's own text and takes another path.
    with pytest.raises(UnsafeArgument, match="control character"):
        link.run(command("true", redirect=">/dev/null\nreboot"), Deadline(5))
    with pytest.raises(UnsafeArgument, match="under 2048 bytes"):
        run(link, "echo", "x" * 3000)
    # The console answers in order: once this echo is back, anything typed before it has been run.
    assert run(link, "echo", "ok").stdout == "ok\n"
    assert not (console.directory / "rebooting").exists()


# -- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", available_shells())
def test_64_kib_round_trip_intact_with_mode_and_atomic_rename(console, links, shell):
    console.start(GETTY, BOARD_SHELL=shell)
    link = connect(console, links)
    data = bytes(range(256)) * 64 + os.urandom(65536 - 256 * 64)
    target = console.home / "key0.cert"
    target.write_bytes(b"old certificate")
    link.put(data, str(target), Deadline(60), mode=0o600)
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in console.home.iterdir() if p.name.startswith("key0")) == ["key0.cert"]
    assert link.get(str(target), Deadline(60)) == data
    link.put(b"", str(console.home / "empty"), Deadline(10))
    assert (console.home / "empty").read_bytes() == b""
    assert link.get(str(console.home / "empty"), Deadline(10)) == b""


def test_a_garbled_transfer_is_refused_and_the_old_file_kept(console, links):
    console.start(GETTY)
    link = connect(console, links)
    target = console.home / "ca.cert"
    target.write_bytes(b"the old CA")
    console.install("base64", CORRUPTING_BASE64)
    with pytest.raises(LinkError, match=r"did not arrive intact .*write.*check the cable"):
        link.put(b"ABBA" * 100, str(target), Deadline(20))
    assert target.read_bytes() == b"the old CA"
    assert sorted(p.name for p in console.home.iterdir() if p.name.startswith("ca.cert")) == ["ca.cert"]
    with pytest.raises(LinkError, match=r"did not arrive intact .*read"):
        link.get(str(target), Deadline(20))


def test_reading_a_missing_file_says_which(console, links):
    console.start(GETTY)
    link = connect(console, links)
    with pytest.raises(CommandFailed, match=r"could not read /nonexistent/key0\.csr through the console"):
        link.get("/nonexistent/key0.csr", Deadline(10))
    with pytest.raises(CommandFailed, match=r"could not write /nonexistent/dir/x through the console"):
        link.put(b"x", "/nonexistent/dir/x", Deadline(10))


# -- a board that sends too much ------------------------------------------------------------------


def test_a_line_longer_than_the_held_back_tail_arrives_intact(console, links):
    # 100 KiB without a newline, then the next line: passed on in pieces, nothing dropped.
    console.start(GETTY)
    link = connect(console, links)
    out = run(link, "sh", "-c", "head -c 102400 /dev/zero | tr '\\0' x; echo; echo end").stdout
    assert out == "x" * 102400 + "\nend\n"


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param("yes 'a line of an endless answer'", id="endless-lines"),
        pytest.param("cat /dev/zero", id="endless-zeros-no-newline"),
        pytest.param("head -c 1048576 /dev/zero | tr '\\0' y | fold -w 64", id="one-mib-answer"),
    ],
)
def test_an_answer_over_the_cap_is_refused_and_the_shell_answers_again(console, links, stream):
    console.start(GETTY)
    link = connect(console, links)
    with pytest.raises(OutputTooLarge) as refused:
        link.run(command("sh", "-c", stream), Deadline(30, what="step keygen"), max_output=256 * 1024)
    assert str(refused.value) == (
        "the board sent more than 256 KiB for `sh …`; check its image (re-flash it, or set the board aside), "
        "then press Retry"
    )
    # Ctrl-C stopped it and the shell was resynchronised: the next command gets its own answer.
    assert run(link, "echo", "still here").stdout == "still here\n"


def test_a_stream_that_ctrl_c_cannot_stop_closes_the_console(console, links):
    console.start(GETTY)
    link = connect(console, links)
    unstoppable = "trap '' INT; exec yes 'ignoring Ctrl-C'"
    with pytest.raises(OutputTooLarge, match=r"more than 64 KiB for `sh …`"):
        link.run(command("sh", "-c", unstoppable), Deadline(30), max_output=64 * 1024)
    # The link gave the console up rather than read a stream for ever: the unit fails cleanly.
    with pytest.raises(LinkLost, match=r"is not open"):
        run(link, "true")


def test_the_default_cap_holds_a_few_mib(console, links):
    console.start(GETTY)
    link = connect(console, links)
    out = run(link, "sh", "-c", "head -c 3145728 /dev/zero | tr '\\0' z | fold -w 128", seconds=60).stdout
    assert out == "\n".join(["z" * 128] * (3145728 // 128))  # fold adds no newline at the end


def test_a_file_that_is_a_link_to_dev_zero_is_read_only_up_to_its_cap(console, links):
    console.start(GETTY)
    link = connect(console, links)
    csr = console.home / "key0.csr"
    csr.symlink_to("/dev/zero")
    with pytest.raises(OutputTooLarge) as refused:
        link.get(str(csr), Deadline(20))
    assert str(refused.value).startswith(
        f"the board sent more than 64 KiB for the file {csr}; check its image"
    )
    small = console.home / "key0.pub"
    small.write_bytes(b"k" * 65536)  # exactly the cap: accepted
    assert link.get(str(small), Deadline(20)) == b"k" * 65536
    with pytest.raises(OutputTooLarge, match=r"more than 1 KiB for the file"):
        link.get(str(small), Deadline(20), max_bytes=1024)
    assert run(link, "echo", "ok").stdout == "ok\n"


# -- reboot -------------------------------------------------------------------------------------


def test_reboot_waits_for_the_login_prompt_and_logs_in_again(console, links):
    console.start(GETTY, BOARD_LOGIN="root", BOARD_PASSWORD="pw", BOARD_BOOT_DELAY="1")
    link = connect(console, links, login_password="pw")
    before = run(link, "sh", "-c", "echo $PPID").stdout
    started = time.monotonic()
    link.reboot(Deadline(15, what="step reboot"))
    assert time.monotonic() - started >= 1
    assert run(link, "sh", "-c", "echo $PPID").stdout != before
    # The private mode is set up again: no echo on the console.
    assert "-echo" in run(link, "sh", "-c", "stty -a </dev/tty").stdout.split()
    assert any("reboot: Restarting system" in line for line in link.kernel_messages)


def test_a_board_that_does_not_come_back_fails_within_the_reboot_deadline(console, links):
    console.start(GETTY, BOARD_LOGIN="root", BOARD_COMES_BACK="0")
    link = connect(console, links)
    started = time.monotonic()
    with pytest.raises(LinkLost) as lost:
        link.reboot(Deadline(3, what="step reboot"))
    assert_within_deadline(started, 3, "a reboot whose board does not come back")
    assert str(lost.value).startswith(
        f"Device on {console.station_path} did not show its login prompt within 3 s after reboot"
    )
    assert str(lost.value).endswith("check power and the console cable, then press Retry")
