"""Serial-console device link: the same enrollment over a board's console, with no network.

A console is one byte stream shared by the shell, its echo, the login program and the kernel's
printk lines, with no framing and no exit status.  This link turns it into the
:class:`~station.transport.base.DeviceLink` the steps expect:

* it logs in the way a person would (wake the line with CR, answer ``login:`` and ``Password:``
  from the profile, recognise the shell prompt with the profile's pattern), then switches the
  shell to a private mode: no echo, no bracketed paste, no history, a prompt of our own;
* every command is typed as ``echo __BEGIN_<nonce>__; { CMD ; } </dev/null 2>&1; echo __RC_<nonce>_$?__``
  and its output is whatever lies between the two markers, so output and exit status are exact
  even when echo is still on (the echoed line shows ``$?``, never digits);
* what arrives is cleaned before anything looks at it: CRLF becomes LF, ANSI escapes (bash 5.2's
  bracketed-paste ``ESC[?2004h`` included) are dropped, and kernel printk lines that land on the
  console in the middle of a command (``[   12.345678] foo: bar``) are cut out;
* files travel as base64 text with a SHA-256 checked on the far side, in lines kept well under
  the tty's 4095-byte canonical line limit;
* every wait has one deadline for the whole operation, never one per byte, so a console that
  dribbles a byte every half second still times out on time;
* every byte is bounded: a command's answer is found by an incremental marker search
  (:class:`~station.transport.markers.MarkerScanner`, linear time) and may not pass its cap; a
  line that never ends is passed on in pieces; only a short tail is kept while waiting for a
  prompt.  A command that answers too much is stopped with Ctrl-C and the shell resynchronised,
  or, if it cannot be, the console is closed so the unit fails cleanly and can be resumed.

stderr is merged into stdout (``2>&1`` inside the wrapper): a console has one stream, so
:attr:`CommandResult.stderr` is always empty here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import select
import threading
import time
from collections import deque
from collections.abc import Callable

import serial

from station.shell import ShellCommand, UnsafeArgument, command
from station.transport.base import (
    MAX_COMMAND_OUTPUT_BYTES,
    MAX_FILE_BYTES,
    CommandFailed,
    CommandResult,
    CommandTimedOut,
    Deadline,
    DeviceAddress,
    LinkCancelled,
    LinkError,
    LinkLost,
    OutputTooLarge,
    checked,
    last_line,
    program_of,
)
from station.transport.markers import MarkerScanner

# -- named settings ---------------------------------------------------------------------------

DEFAULT_BAUD = 115200
# Longest wait inside a loop before cancel and the deadline are looked at again.
POLL_INTERVAL_S = 0.1
# Before waking the console, stale output is drained until it has been quiet this long ...
QUIET_PERIOD_S = 0.2
# ... but a chatty console never holds us longer than this.
DRAIN_LIMIT_S = 1.0
# How long a board may take to show it is going down after `reboot` before we call it stuck.
SHUTDOWN_TIMEOUT_S = 30.0
# After a reboot, a prompt-like end of the boot log counts once the console has been quiet this long.
PROMPT_SETTLE_S = 0.5
# Login prompts answered in one attempt to log in (a getty that ate our wake-up CR asks twice).
LOGIN_ATTEMPTS = 3
# close() types `exit` so the next session starts from a fresh login; it never waits longer.
CLOSE_TIMEOUT_S = 1.0
# A canonical-mode tty drops whatever a line holds beyond 4095 bytes, and a board without flow
# control loses bytes once its 4096-byte input buffer is full: stay well under both.
MAX_LINE_BYTES = 2048
# Base64 words per file-transfer line are cut at this length (a multiple of 4).
TRANSFER_WORD_CHARS = 512
# A transfer whose checksum does not match is sent again this many times in all.
TRANSFER_ATTEMPTS = 2
READ_CHUNK_BYTES = 65536
# Text kept for prompt matching and error messages while waiting through a boot log.
TAIL_KEPT_BYTES = 8192
# A line still arriving is held back (its end may hold a prompt or an escape sequence) up to this
# length; beyond it, all but its last PENDING_KEPT_BYTES are passed on as output.
PENDING_MAX_BYTES = 8192
PENDING_KEPT_BYTES = 256
# How much of the console's last line the prompt patterns look at (prompts are short).
TAIL_WINDOW_BYTES = 4096
# Everything received while one command runs (markers, kernel lines, escapes included) may be at
# most this many times its output cap: a board streaming something that never becomes output
# (no begin marker, only escapes) is stopped too.
RAW_FACTOR = 2
# After a command was stopped for answering too much: how long the shell may take to answer a
# `true` again, and how much stale output may still come in the meantime.
RESYNC_TIMEOUT_S = 5.0
RESYNC_OUTPUT_BYTES = 1024 * 1024
KERNEL_LINES_KEPT = 50
KERNEL_LINE_KEPT_BYTES = 512

# The shell's prompts once the link has set it up; unlikely in any real output.
PRIVATE_PS1 = "__station__# "
PRIVATE_PS2 = "__station_more__> "

# -- what the console says ---------------------------------------------------------------------

# CSI (colours, bracketed paste ESC[?2004h), OSC (window titles), charset selection, and the
# two-byte escapes (keypad modes ESC= ESC>, ...).
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[0-~])")
# A kernel printk line: "[   12.345678] text".  printk may cut into a line the shell is
# writing, so it is removed wherever it starts; it always ends with a newline.
_KERNEL_LINE = re.compile(rb"\[ *\d+\.\d{6}\] [^\n]*\n")
# CRLF from the tty's onlcr, sometimes CRCRLF when a program already wrote CRLF.
_LINE_END = re.compile(rb"\r+\n")
_LOGIN = re.compile(r"login: *$", re.IGNORECASE)
_PASSWORD = re.compile(r"password: *$", re.IGNORECASE)
_LOGIN_REFUSED = re.compile(rb"Login incorrect|Login timed out", re.IGNORECASE)
# Our prompts are recognised only as a whole line: while the setup line itself is echoed, a read
# can end right after "PS2='__station_more__> " and must not be taken for the prompt.
_PRIVATE_PROMPT = re.compile(r"^\s*" + re.escape(PRIVATE_PS1.rstrip()) + r" ?$")
_CONTINUATION_PROMPT = re.compile(r"^\s*" + re.escape(PRIVATE_PS2.rstrip()) + r" ?$")
DEFAULT_PROMPT_PATTERN = r"[#$] ?$"
# What we type must never hold a control character: the tty would act on it (^C, ^D, ^U, a
# newline ending the line early) before the shell ever parses the quotes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Switches the logged-in shell to the link's private mode.  No echo: our typing never comes back
# (and readline stops redrawing long lines).  Bracketed paste only exists in bash (`bind` would
# fail in busybox ash).  No history: command lines carry PINs and must not land in
# ~/.bash_history on the board.  Not wrapped in `</dev/null`: stty needs the console as stdin.
_SETUP = (
    "stty -echo 2>/dev/null; unset HISTFILE PROMPT_COMMAND; "
    "if [ -n \"${BASH_VERSION:-}\" ]; then bind 'set enable-bracketed-paste off' 2>/dev/null; "
    "set +o history; fi; "
    f"PS1='{PRIVATE_PS1}'; PS2='{PRIVATE_PS2}'"
)

# File transfer scripts.  Every value (paths, base64 words, digest, mode) reaches them as a
# positional parameter through ShellCommand, so nothing here is ever concatenated with data.
_PUT_START = 'rm -f "$1" && : >"$2"'
_PUT_APPEND = 'f=$1; shift; printf "%s\\n" "$@" >>"$f"'
# Exit 3 = the checksum did not match: the temporary file is removed and the target untouched.
_PUT_FINISH = (
    'base64 -d "$1" >"$2" && rm -f "$1" || exit 2; '
    'printf "%s  %s\\n" "$3" "$2" | sha256sum -c >/dev/null 2>&1 || { rm -f "$2"; exit 3; }; '
    'chmod "$4" "$2" && mv -f "$2" "$5"'
)
_CHECKSUM_MISMATCH = 3
# Reading a file: at most $2 bytes of "$1", copied once so the digest and the base64 lines are of
# the same bytes; prints the digest line, then the base64 lines.  head's error names a missing file.
_GET = (
    't=$(mktemp) || exit 2; head -c "$2" -- "$1" >"$t" && sha256sum <"$t" && base64 <"$t"; '
    's=$?; rm -f "$t"; exit $s'
)


class SerialLink:
    """A :class:`~station.transport.base.DeviceLink` over a board's serial console (pyserial)."""

    def __init__(
        self,
        address: DeviceAddress,
        *,
        cancel: threading.Event,
        login_user: str = "root",
        login_password: str = "",
        prompt_pattern: str = "",
    ) -> None:
        self.address = address
        self._cancel = cancel
        self._path = address.path
        raw_baud = address.options.get("baud", str(DEFAULT_BAUD))
        try:
            self._baud = int(raw_baud)
            if self._baud <= 0:
                raise ValueError(raw_baud)
        except ValueError as exc:
            raise LinkError(
                f"device address {address.url!r} has an invalid baud rate {raw_baud!r} — write it like "
                "serial:///dev/ttyUSB0?baud=115200"
            ) from exc
        self._login_user = login_user
        self._login_password = login_password
        try:
            self._prompt = re.compile(prompt_pattern or DEFAULT_PROMPT_PATTERN)
        except re.error as exc:
            raise LinkError(
                f"the console prompt pattern {prompt_pattern!r} is not a valid regular expression"
            ) from exc
        self._port: serial.Serial | None = None
        self._ready = False  # logged in and switched to the private prompt
        # Cleaned output not yet consumed: complete lines, CRLF, ANSI and kernel lines removed.
        self._buffer = bytearray()
        # The raw bytes after the last newline: a prompt, or a line still arriving.
        self._pending = b""
        self._received = 0  # raw bytes read from the port, ever (what the caps count)
        self._kernel_lines: deque[str] = deque(maxlen=KERNEL_LINES_KEPT)
        self._kernel_line_count = 0

    # -- connection -------------------------------------------------------------------------

    def open(self, deadline: Deadline) -> None:
        """Open the port exclusively, log in, and set up the private prompt."""
        self._check_cancel()
        self.close()
        try:
            port = serial.Serial(
                self._path,
                self._baud,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkLost(self._open_error(exc)) from exc
        self._port = port
        self._buffer.clear()
        self._pending = b""
        try:
            # Output the board printed before we came (a boot log, a half-finished command of an
            # earlier session) must not be taken for an answer to our wake-up.
            self._drain(deadline)
            self._write(b"\r", deadline, during="waking the console")
            self._log_in(deadline, on_timeout=self._no_prompt_error)
        except BaseException:
            self.close()
            raise

    def _open_error(self, exc: BaseException) -> str:
        text = str(exc)
        if "lock" in text.lower():
            return (
                f"the serial console {self._path} is in use by another program (a terminal such as screen or "
                "minicom, or another station window) — close it, then press Retry"
            )
        if "Permission denied" in text:
            return (
                f"the station may not open the serial console {self._path} (permission denied) — add the "
                "station's user to the dialout group, then press Retry"
            )
        return (
            f"cannot open the serial console {self._path} ({text}) — check the USB-serial adapter is plugged "
            "in and the device address names the right port, then press Retry"
        )

    def _no_prompt_error(self, deadline: Deadline) -> LinkError:
        return LinkLost(
            f"the console on {self._path} showed no login or shell prompt within {deadline.seconds:g} s"
            f"{self._last_seen()} — check the board is powered and booted, the console cable and the baud "
            f"rate ({self._baud}), then press Retry"
        )

    def host_key(self) -> tuple[str, str] | None:
        return None  # a console has no host key; the cable is the identity

    def local_address(self) -> str | None:
        return None  # the console says nothing about the network; station.toml may name an address

    def close(self) -> None:
        port, self._port = self._port, None
        ready, self._ready = self._ready, False
        if port is None:
            return
        if ready:
            # Log out, so no root shell is left open on the console and the next session starts
            # from a fresh login instead of inheriting this one's shell state.
            try:
                _, writable, _ = select.select([], [port.fileno()], [], CLOSE_TIMEOUT_S)
                if writable:
                    port.write(b"exit\r")
                    port.flush()
            except (serial.SerialException, OSError, ValueError):
                pass  # the console is already gone: nothing to log out of
        try:
            port.close()
        except (serial.SerialException, OSError):
            pass

    @property
    def kernel_messages(self) -> tuple[str, ...]:
        """The most recent kernel lines seen on the console (removed from command output)."""
        return tuple(self._kernel_lines)

    # -- login ------------------------------------------------------------------------------

    def _log_in(self, deadline: Deadline, *, on_timeout: Callable[[Deadline], LinkError]) -> None:
        """Answer login and password prompts until a shell prompt shows, then set the shell up."""
        logins = 0
        passwords = 0
        while True:
            # Only an answer to a name we typed counts (some gettys answer the wake-up CR too).
            if logins and _LOGIN_REFUSED.search(self._buffer):
                raise LinkError(
                    f"the console on {self._path} refused the login as {self._login_user!r} — check "
                    "login_user and login_password in the profile's [console] section, then press Retry"
                )
            tail = self._tail()
            if _LOGIN.search(tail):
                if logins >= LOGIN_ATTEMPTS:
                    raise LinkError(
                        f"the console on {self._path} asked for a login {logins + 1} times — check "
                        "login_user in the profile's [console] section, then press Retry"
                    )
                logins += 1
                self._consume()
                self._write_line(self._login_user, deadline, during="logging in", what="the login user name")
                continue
            if _PASSWORD.search(tail):
                if not self._login_password:
                    raise LinkError(
                        f"the console on {self._path} asks for a password, but the profile has none — set "
                        "login_password in the profile's [console] section (development images need none)"
                    )
                if passwords >= LOGIN_ATTEMPTS:
                    raise LinkError(
                        f"the console on {self._path} keeps asking for the password — check login_password "
                        "in the profile's [console] section, then press Retry"
                    )
                passwords += 1
                self._consume()
                self._write_line(
                    self._login_password, deadline, during="logging in", what="the login password"
                )
                continue
            if _PRIVATE_PROMPT.search(tail) or self._prompt.search(tail):
                self._consume()
                break
            if _CONTINUATION_PROMPT.search(tail):
                # An earlier session left the shell inside an unfinished line: abandon it.
                self._consume()
                self._interrupt()
                self._write(b"\r", deadline, during="logging in")
                continue
            self._wait_for_output(deadline, during="logging in", on_timeout=on_timeout)
            self._trim()  # a console chattering before its prompt must not grow the buffer
        status, _ = self._execute(_SETUP, deadline, label="the console setup", own_stdin=False)
        if status != 0:
            raise LinkError(
                f"the shell on the console {self._path} did not accept the station's setup (exit status "
                f"{status}) — the prompt pattern may have matched something that is not a shell; check "
                "prompt_pattern in the profile's [console] section"
            )
        self._ready = True

    # -- commands ---------------------------------------------------------------------------

    def run(
        self, cmd: ShellCommand, deadline: Deadline, *, check: bool = True, max_output: int | None = None
    ) -> CommandResult:
        self._check_cancel()
        line = cmd.render()
        started = time.monotonic()
        status, output = self._execute(
            line,
            deadline,
            label=f"`{cmd.argv[0]}`",
            what=program_of(cmd),
            max_output=MAX_COMMAND_OUTPUT_BYTES if max_output is None else max_output,
        )
        result = CommandResult(
            command=line,
            stdout=output,
            stderr="",
            exit_status=status,
            duration_s=time.monotonic() - started,
        )
        return checked(result, cmd.argv[0], check=check)

    def _execute(
        self,
        line: str,
        deadline: Deadline,
        *,
        label: str,
        own_stdin: bool = True,
        what: str = "",
        max_output: int = MAX_COMMAND_OUTPUT_BYTES,
        resync: bool = True,
    ) -> tuple[int, str]:
        """Type one wrapped command line and return (exit status, output between the markers)."""
        if self._port is None:
            raise LinkLost(f"the serial console on {self._path} is not open — press Retry")
        nonce = secrets.token_hex(6)
        # Whatever is still buffered belongs to an earlier command (or a boot log): drop it so
        # the search below only ever sees this command's output.
        self._consume()
        self._write_line(_wrap(line, nonce, own_stdin=own_stdin), deadline, during=label)
        scanner = MarkerScanner(nonce)
        received_before = self._received
        while True:
            if scanner.done:
                assert scanner.status is not None
                # Leftover bytes stay for whoever reads next.
                self._buffer[:] = scanner.leftover
                if scanner.output_size > max_output:
                    raise OutputTooLarge(what or label, max_output)
                return scanner.status, scanner.output.decode("utf-8", "replace")
            if scanner.output_size > max_output or self._received - received_before > RAW_FACTOR * max_output:
                if resync:
                    self._resync(deadline)
                else:
                    self.close()
                raise OutputTooLarge(what or label, max_output)
            tail = self._tail()
            if own_stdin and _LOGIN.search(tail):
                # The shell is gone and a getty asks for a login: the board restarted under us
                # (watchdog, brown-out, someone pressed reset).  Say so now, not at the deadline.
                self._ready = False  # `exit` typed at a login prompt would be taken for a user name
                self._consume()
                raise LinkLost(
                    f"the board on {self._path} restarted in the middle of {label} (its login prompt came "
                    "back) — check its power supply, then press Retry"
                )
            if _CONTINUATION_PROMPT.search(tail):
                self._interrupt()
                raise LinkError(
                    f"the shell on {self._path} is waiting for the rest of {label} (an unfinished quote?) "
                    "— the command was interrupted; report this, it is a defect in the station"
                )
            try:
                received = self._wait_for_output(
                    deadline, during=label, on_timeout=self._command_timeout(label)
                )
            except (CommandTimedOut, LinkCancelled):
                # Stop the command so the shell is free for the next one (its output is dropped
                # by that command's marker search).
                self._interrupt()
                raise
            scanner.feed(received)
            self._trim()  # the scanner holds the answer; the buffer only the tail for the prompts

    def _resync(self, deadline: Deadline) -> None:
        """Stop a command that answers too much and see the shell answer again — or give the console up.

        Ctrl-C stops the command; what it already sent is read and dropped; then `true` must come
        back with its markers within RESYNC_TIMEOUT_S.  A console that keeps streaming (Ctrl-C
        ignored, a runaway kernel) is closed instead: the unit fails cleanly and is resumed later
        with a fresh login.
        """
        self._interrupt()
        try:
            self._drain(deadline)
            probe = Deadline(max(0.1, min(RESYNC_TIMEOUT_S, deadline.remaining())), what="resync")
            status, _ = self._execute(
                "true",
                probe,
                label="the resync after too much output",
                max_output=RESYNC_OUTPUT_BYTES,
                resync=False,
            )
            if status != 0:
                self.close()
        except LinkError:
            self.close()

    def _command_timeout(self, label: str) -> Callable[[Deadline], LinkError]:
        def error(deadline: Deadline) -> LinkError:
            return CommandTimedOut(
                f"{label} on the console {self._path} did not finish within {deadline.seconds:g} s "
                f"({deadline.what}) — the board may be hung; power-cycle it and press Retry"
            )

        return error

    # -- files ------------------------------------------------------------------------------

    def put(self, data: bytes, remote_path: str, deadline: Deadline, *, mode: int = 0o644) -> None:
        """Write a file through the console: base64 lines, checksum checked on the board, then rename."""
        self._check_cancel()
        temporary = f"{remote_path}.station-tmp"
        encoded_path = f"{temporary}.b64"
        digest = hashlib.sha256(data).hexdigest()
        words = _base64_words(data)
        for _ in range(TRANSFER_ATTEMPTS):
            self._transfer_step(
                command("sh", "-c", _PUT_START, "station-put", temporary, encoded_path),
                deadline,
                "write",
                remote_path,
            )
            for batch in self._batches("sh", "-c", _PUT_APPEND, "station-put", encoded_path, words=words):
                self._transfer_step(batch, deadline, "write", remote_path)
            finish = command(
                "sh",
                "-c",
                _PUT_FINISH,
                "station-put",
                encoded_path,
                temporary,
                digest,
                f"{mode:o}",
                remote_path,
            )
            result = self.run(finish, deadline, check=False)
            if result.exit_status == 0:
                return
            if result.exit_status != _CHECKSUM_MISMATCH:
                raise LinkError(
                    f"could not write {remote_path} through the console {self._path} (exit status "
                    f"{result.exit_status}: {last_line(result.output) or 'no output'}) — check the board has "
                    "space and base64, then press Retry"
                )
        raise LinkError(self._garbled("write", remote_path))

    def get(self, remote_path: str, deadline: Deadline, *, max_bytes: int | None = None) -> bytes:
        """Read a file through the console as base64, checked against the board's own sha256sum.

        The board reads at most one byte more than the cap (``head -c``), once, into a temporary
        file that its sha256sum and base64 both read: a path that is a symlink to /dev/zero costs
        the board and the station a bounded amount, and the digest is of exactly the bytes sent.
        """
        self._check_cancel()
        limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
        # base64 is 4/3 of the data, plus a newline every 76 characters and the digest line.
        answer_cap = 2 * (limit + 1) + 4096
        for _ in range(TRANSFER_ATTEMPTS):
            answer = self._transfer_step(
                command("sh", "-c", _GET, "station-get", remote_path, str(limit + 1)),
                deadline,
                "read",
                remote_path,
                max_output=answer_cap,
            )
            digest_line, _, encoded = answer.partition("\n")
            expected = digest_line.split()[0] if digest_line.split() else ""
            try:
                data = base64.b64decode("".join(encoded.split()), validate=True)
            except (binascii.Error, ValueError):
                data = None
            if data is not None and hashlib.sha256(data).hexdigest() == expected:
                if len(data) > limit:
                    raise OutputTooLarge(f"the file {remote_path}", limit)
                return data
        raise LinkError(self._garbled("read", remote_path))

    def _transfer_step(
        self, cmd: ShellCommand, deadline: Deadline, verb: str, path: str, *, max_output: int | None = None
    ) -> str:
        try:
            return self.run(cmd, deadline, max_output=max_output).stdout
        except CommandFailed as exc:
            raise CommandFailed(
                f"could not {verb} {path} through the console {self._path}: "
                f"{last_line(exc.result.output) or f'exit status {exc.result.exit_status}'}",
                exc.result,
            ) from exc

    def _garbled(self, verb: str, path: str) -> str:
        return (
            f"{path} did not arrive intact through the console {self._path} ({verb}, sha256 mismatch, "
            f"{TRANSFER_ATTEMPTS} attempts) — the line is corrupting data: check the cable and that the baud "
            f"rate ({self._baud}) matches the board, then press Retry"
        )

    def _batches(self, *prefix: str, words: list[str]) -> list[ShellCommand]:
        """Group base64 words into commands whose typed line stays under MAX_LINE_BYTES."""
        overhead = len(_wrap(command(*prefix).render(), "0" * 12))
        budget = MAX_LINE_BYTES - overhead - 8
        batches: list[ShellCommand] = []
        current: list[str] = []
        used = 0
        for word in words:
            if current and used + len(word) + 1 > budget:
                batches.append(command(*prefix, *current))
                current, used = [], 0
            current.append(word)
            used += len(word) + 1
        if current:
            batches.append(command(*prefix, *current))
        return batches

    # -- reboot -----------------------------------------------------------------------------

    def reboot(self, deadline: Deadline) -> None:
        """Type `reboot`, see the console go down, wait for the login prompt, log in again."""
        self._check_cancel()
        if self._port is None:
            raise LinkLost(f"the serial console on {self._path} is not open — press Retry")
        nonce = secrets.token_hex(6)
        status_line = re.compile(rb"__RC_" + nonce.encode() + rb"_(\d+)__")
        self._consume()
        kernel_lines_before = self._kernel_line_count
        self._write_line(_wrap(command("reboot").render(), nonce), deadline, during="`reboot`")
        self._ready = False
        down_by = Deadline(min(SHUTDOWN_TIMEOUT_S, deadline.remaining()), what="shutdown")

        def not_down(_: Deadline) -> LinkError:
            return CommandTimedOut(
                f"the device on {self._path} did not go down within {down_by.seconds:g} s after `reboot` — "
                "power-cycle it and press Retry"
            )

        # Going down shows as kernel lines (shutdown, then the next boot), or a login prompt or a
        # fresh shell prompt (not ours) once the board is back.  Our own prompt coming back after
        # `reboot` is not evidence: `reboot` returns before init kills the shell.
        while True:
            refused = status_line.search(self._buffer)
            if refused is not None and int(refused.group(1)) != 0:
                # Read the status before _consume() clears the buffer the match points into.
                exit_status = int(refused.group(1))
                self._consume()
                raise LinkError(
                    f"the device on {self._path} refused to reboot (`reboot` exited {exit_status}) "
                    "— power-cycle it and press Retry"
                )
            tail = self._tail()
            if self._kernel_line_count > kernel_lines_before or _LOGIN.search(tail):
                break
            if self._prompt.search(tail) and not _PRIVATE_PROMPT.search(tail):
                break
            self._wait_for_output(down_by, during="`reboot`", on_timeout=not_down)
            self._trim()

        def not_back(_: Deadline) -> LinkError:
            return LinkLost(
                f"Device on {self._path} did not show its login prompt within {deadline.seconds:g} s after "
                f"reboot{self._last_seen()} — check power and the console cable, then press Retry"
            )

        # Wait through the boot log for a login prompt (or a shell prompt on an auto-login console).
        # A boot log arrives in pieces (slowly, from an emulated board): a line cut off at "…#" or
        # "…login: " is a prompt only if the console then stays quiet, waiting for input.
        while True:
            tail = self._tail()
            if (_LOGIN.search(tail) or (self._prompt.search(tail) and not _PRIVATE_PROMPT.search(tail))) and (
                self._settled(deadline, not_back)
            ):
                break
            self._wait_for_output(deadline, during="the reboot", on_timeout=not_back)
            self._trim()
        self._log_in(deadline, on_timeout=not_back)

    def _settled(self, deadline: Deadline, on_timeout: Callable[[Deadline], LinkError]) -> bool:
        """True if nothing more arrives for PROMPT_SETTLE_S (a prompt waits; a line being printed goes on)."""
        seen = (len(self._buffer), self._tail())
        settle_by = time.monotonic() + PROMPT_SETTLE_S
        while time.monotonic() < settle_by:
            self._wait_for_output(deadline, during="the reboot", on_timeout=on_timeout)
            if (len(self._buffer), self._tail()) != seen:
                return False
        return True

    # -- the byte stream --------------------------------------------------------------------

    def _wait_for_output(
        self, deadline: Deadline, *, during: str, on_timeout: Callable[[Deadline], LinkError]
    ) -> bytes:
        """Wait (at most one poll interval) for bytes, feed them in and return the complete lines
        they made (cleaned); raise on timeout or cancel."""
        self._check_cancel()
        if deadline.expired():
            raise on_timeout(deadline)
        port = self._require_port(during)
        try:
            readable, _, _ = select.select([port.fileno()], [], [], deadline.cap(POLL_INTERVAL_S))
            if readable:
                # timeout=0 on the port: read returns what is there now, never blocks.
                return self._feed(bytes(port.read(READ_CHUNK_BYTES)))
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self._lost(during, exc) from exc
        return b""

    def _feed(self, data: bytes) -> bytes:
        """Take raw bytes from the port; append the complete lines they make (cleaned) to the
        buffer and return them.  Each byte is looked at a bounded number of times."""
        self._received += len(data)
        text = self._pending + data
        end = text.rfind(b"\n") + 1
        if len(text) - end > PENDING_MAX_BYTES:
            # A line that does not end (a stream without newlines, line noise): pass it on in
            # pieces, holding back only its last bytes (the start of an escape sequence, a prompt).
            end = len(text) - PENDING_KEPT_BYTES
        self._pending = text[end:]
        if not end:
            return b""
        # Complete lines (or a piece of a very long one): an escape sequence or a kernel line
        # never spans a newline, so none is cut in half here.
        complete = _ANSI.sub(b"", _LINE_END.sub(b"\n", text[:end]))
        for kernel_line in _KERNEL_LINE.findall(complete):
            self._kernel_lines.append(kernel_line[:KERNEL_LINE_KEPT_BYTES].decode("utf-8", "replace").strip())
            self._kernel_line_count += 1
        cleaned = _KERNEL_LINE.sub(b"", complete)
        self._buffer += cleaned
        return cleaned

    def _tail(self) -> str:
        """The console's last, unfinished line (a prompt, if any), as text without escapes.

        Only its last TAIL_WINDOW_BYTES are looked at, so a line that never ends costs the same on
        every read; a line cut there starts with "…", so no whole-line prompt pattern matches it.
        """
        pending = self._pending[-TAIL_WINDOW_BYTES:]
        cut = len(self._pending) > TAIL_WINDOW_BYTES
        last = pending
        if not cut:
            start = max(0, len(self._buffer) - (TAIL_WINDOW_BYTES - len(pending)))
            newline = self._buffer.rfind(b"\n", start)
            if newline >= 0:
                last = bytes(self._buffer[newline + 1 :]) + pending
            else:
                last = bytes(self._buffer[start:]) + pending
                cut = start > 0
        text = _ANSI.sub(b"", last.replace(b"\r", b"")).decode("utf-8", "replace")
        return f"…{text}" if cut else text

    def _consume(self) -> None:
        """Forget everything received so far: what follows answers what we type next."""
        self._buffer.clear()
        self._pending = b""

    def _trim(self) -> None:
        if len(self._buffer) > TAIL_KEPT_BYTES:
            del self._buffer[:-TAIL_KEPT_BYTES]

    def _drain(self, deadline: Deadline) -> None:
        """Read and drop output until the console is quiet (or DRAIN_LIMIT_S has passed)."""
        limit = Deadline(min(DRAIN_LIMIT_S, deadline.remaining()), what="drain")
        port = self._require_port("opening the console")
        while not limit.expired():
            self._check_cancel()
            try:
                readable, _, _ = select.select([port.fileno()], [], [], limit.cap(QUIET_PERIOD_S))
                if not readable:
                    break
                port.read(READ_CHUNK_BYTES)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise self._lost("opening the console", exc) from exc

    def _write_line(self, line: str, deadline: Deadline, *, during: str, what: str = "") -> None:
        """Type one line and press Enter (CR, as a terminal does)."""
        # Defence in depth: ShellCommand refuses control characters in arguments, but a redirect
        # or a profile value takes other paths; a stray newline would run a second command.
        if _CONTROL.search(line):
            raise UnsafeArgument(
                f"{what or 'a command line'} contains a control character or newline; it cannot be typed on "
                "the console"
            )
        encoded = line.encode("utf-8")
        if len(encoded) + 1 > MAX_LINE_BYTES:
            raise UnsafeArgument(
                f"{what or 'a command line'} is {len(encoded)} bytes long; a console line must stay under "
                f"{MAX_LINE_BYTES} bytes (tty limit 4095) — report this, it is a defect in the station"
            )
        self._write(encoded + b"\r", deadline, during=during)

    def _write(self, data: bytes, deadline: Deadline, *, during: str) -> None:
        port = self._require_port(during)
        remaining = data
        while remaining:
            self._check_cancel()
            if deadline.expired():
                raise CommandTimedOut(
                    f"the console {self._path} did not take our input within {deadline.seconds:g} s "
                    f"({during}) — check the cable and flow control settings, then press Retry"
                )
            try:
                _, writable, _ = select.select([], [port.fileno()], [], deadline.cap(POLL_INTERVAL_S))
                if writable:
                    # write_timeout=0 on the port: write takes what fits now and says how much.
                    written = port.write(remaining)
                    remaining = remaining[int(written or 0) :]
            except (serial.SerialException, OSError, ValueError) as exc:
                raise self._lost(during, exc) from exc

    def _interrupt(self) -> None:
        """Press Ctrl-C (best effort): stop a command that ran out of time or was cancelled."""
        port = self._port
        if port is None:
            return
        try:
            _, writable, _ = select.select([], [port.fileno()], [], POLL_INTERVAL_S)
            if writable:
                port.write(b"\x03")
        except (serial.SerialException, OSError, ValueError):
            pass

    def _require_port(self, during: str) -> serial.Serial:
        if self._port is None:
            raise LinkLost(f"the serial console on {self._path} is not open ({during}) — press Retry")
        return self._port

    def _lost(self, during: str, exc: BaseException) -> LinkLost:
        self._ready = False  # nothing to log out of on a console that is gone
        self.close()
        return LinkLost(
            f"the serial console on {self._path} closed in the middle of {during} ({exc}) — check the "
            "cable, then press Retry"
        )

    def _last_seen(self) -> str:
        seen = "".join(ch if ch.isprintable() else " " for ch in self._tail()).strip()
        return f" (last output: {seen[-60:]!r})" if seen else ""

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise LinkCancelled("cancelled by the operator")


def _wrap(line: str, nonce: str, *, own_stdin: bool = True) -> str:
    """The line as typed: markers around the command, so its output and exit status can be found."""
    # The command's own stdin is /dev/null: it must never read the lines we type next (and
    # `openssl s_client` ends when its stdin does, as it does over SSH).  The echoed line shows
    # `$?`, never digits, so it cannot be taken for the status marker.
    body = f"{{ {line} ; }} </dev/null 2>&1" if own_stdin else line
    return f"echo __BEGIN_{nonce}__; {body}; echo __RC_{nonce}_$?__"


def _base64_words(data: bytes) -> list[str]:
    encoded = base64.b64encode(data).decode("ascii")
    return [encoded[i : i + TRANSFER_WORD_CHARS] for i in range(0, len(encoded), TRANSFER_WORD_CHARS)]
