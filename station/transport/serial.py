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
import threading
import time
from collections import deque
from collections.abc import Callable

import serial

from station.shell import ShellCommand, command
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

# Moved to station.transport.serial_protocol, re-exported here so every existing import keeps working:
from station.transport.serial_protocol import _ANSI as _ANSI
from station.transport.serial_protocol import _CHECKSUM_MISMATCH as _CHECKSUM_MISMATCH
from station.transport.serial_protocol import _CONTINUATION_PROMPT as _CONTINUATION_PROMPT
from station.transport.serial_protocol import _CONTROL as _CONTROL
from station.transport.serial_protocol import _GET as _GET
from station.transport.serial_protocol import _KERNEL_LINE as _KERNEL_LINE
from station.transport.serial_protocol import _LINE_END as _LINE_END
from station.transport.serial_protocol import _LOGIN as _LOGIN
from station.transport.serial_protocol import _LOGIN_REFUSED as _LOGIN_REFUSED
from station.transport.serial_protocol import _PASSWORD as _PASSWORD
from station.transport.serial_protocol import _PRIVATE_PROMPT as _PRIVATE_PROMPT
from station.transport.serial_protocol import _PUT_APPEND as _PUT_APPEND
from station.transport.serial_protocol import _PUT_FINISH as _PUT_FINISH
from station.transport.serial_protocol import _PUT_START as _PUT_START
from station.transport.serial_protocol import _SETUP as _SETUP
from station.transport.serial_protocol import CLOSE_TIMEOUT_S as CLOSE_TIMEOUT_S
from station.transport.serial_protocol import DEFAULT_BAUD as DEFAULT_BAUD
from station.transport.serial_protocol import DEFAULT_PROMPT_PATTERN as DEFAULT_PROMPT_PATTERN
from station.transport.serial_protocol import DRAIN_LIMIT_S as DRAIN_LIMIT_S
from station.transport.serial_protocol import KERNEL_LINE_KEPT_BYTES as KERNEL_LINE_KEPT_BYTES
from station.transport.serial_protocol import KERNEL_LINES_KEPT as KERNEL_LINES_KEPT
from station.transport.serial_protocol import LOGIN_ATTEMPTS as LOGIN_ATTEMPTS
from station.transport.serial_protocol import MAX_LINE_BYTES as MAX_LINE_BYTES
from station.transport.serial_protocol import PENDING_KEPT_BYTES as PENDING_KEPT_BYTES
from station.transport.serial_protocol import PENDING_MAX_BYTES as PENDING_MAX_BYTES
from station.transport.serial_protocol import POLL_INTERVAL_S as POLL_INTERVAL_S
from station.transport.serial_protocol import PRIVATE_PS1 as PRIVATE_PS1
from station.transport.serial_protocol import PRIVATE_PS2 as PRIVATE_PS2
from station.transport.serial_protocol import PROMPT_SETTLE_S as PROMPT_SETTLE_S
from station.transport.serial_protocol import QUIET_PERIOD_S as QUIET_PERIOD_S
from station.transport.serial_protocol import RAW_FACTOR as RAW_FACTOR
from station.transport.serial_protocol import READ_CHUNK_BYTES as READ_CHUNK_BYTES
from station.transport.serial_protocol import RESYNC_OUTPUT_BYTES as RESYNC_OUTPUT_BYTES
from station.transport.serial_protocol import RESYNC_TIMEOUT_S as RESYNC_TIMEOUT_S
from station.transport.serial_protocol import SHUTDOWN_TIMEOUT_S as SHUTDOWN_TIMEOUT_S
from station.transport.serial_protocol import TAIL_KEPT_BYTES as TAIL_KEPT_BYTES
from station.transport.serial_protocol import TAIL_WINDOW_BYTES as TAIL_WINDOW_BYTES
from station.transport.serial_protocol import TRANSFER_ATTEMPTS as TRANSFER_ATTEMPTS
from station.transport.serial_protocol import TRANSFER_WORD_CHARS as TRANSFER_WORD_CHARS
from station.transport.serial_protocol import _base64_words as _base64_words
from station.transport.serial_protocol import _wrap as _wrap
from station.transport.serial_stream import ConsoleStream
from station.transport.waiting import writable


class SerialLink(ConsoleStream):
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

    def wait_until_back(self, deadline: Deadline) -> None:
        """The console again after the board went down: opened and logged in (its login waits through the
        boot log for the prompt, within ``deadline``)."""
        self.open(deadline)

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
                if writable(port.fileno(), CLOSE_TIMEOUT_S):
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
            self._check_shell_is_running(label, own_stdin=own_stdin)
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

    def _check_shell_is_running(self, label: str, *, own_stdin: bool) -> None:
        """Raise when the console's last line shows the shell gone (a login prompt) or waiting for more input."""
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
