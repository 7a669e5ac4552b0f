"""The one interface every device link offers: run, put, get, reboot — each under a deadline.

The enrollment steps only ever talk to a :class:`DeviceLink`, so SSH and the serial console are
interchangeable.  Errors are typed so the flow can tell "the board said no" (:class:`CommandFailed`)
from "we lost the board" (:class:`LinkLost`) from "the board took too long" (:class:`CommandTimedOut`).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from station.errors import StationError
from station.shell import ShellCommand


class LinkError(StationError):
    """The device link failed; the message says what to check."""


class LinkLost(LinkError):
    """The connection to the device dropped or could not be made."""


class CommandTimedOut(LinkError):
    """A command did not finish within its deadline."""


class LinkCancelled(LinkError):
    """The operator (or the station shutting down) cancelled the unit."""


class HostKeyMismatch(LinkError):
    """The device presented a host key different from the one pinned for this unit."""


class OutputTooLarge(LinkError):
    """The board sent more than the station accepts for one command or one file.

    Not retried: a board that streams without end (a broken tool, a path that is a device file)
    would only do it again.  The link has stopped what was sending before this is raised.
    """

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(
            f"the board sent more than {format_size(limit)} for {what}; check its image (re-flash it, or "
            "set the board aside), then press Retry"
        )
        self.what = what
        self.limit = limit


# -- how much a board may send --------------------------------------------------------------
# Named settings (station.toml [limits] overrides the first two for the profile's commands and
# files).  Every byte a board sends is counted against one of these before it is kept.
MAX_COMMAND_OUTPUT_BYTES = 4 * 1024 * 1024
# A CSR or a DER public key is a few hundred bytes; a certificate a few KiB.
MAX_FILE_BYTES = 64 * 1024
# Reads from a board are done in pieces of this size, the deadline looked at between pieces.
READ_CHUNK_BYTES = 65536


def format_size(size: int) -> str:
    """``4 MiB``, ``64 KiB``, ``1.5 MiB``, ``100 bytes``: a size as a person reads it."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


def program_of(cmd: ShellCommand) -> str:
    """How a message names a command: its program, never its arguments (they may hold a PIN)."""
    return f"`{cmd.argv[0]} …`" if len(cmd.argv) > 1 else f"`{cmd.argv[0]}`"


@dataclass(frozen=True)
class CommandResult:
    """What a device command produced (after the link normalised line endings)."""

    command: str
    stdout: str
    stderr: str
    exit_status: int
    duration_s: float

    @property
    def output(self) -> str:
        """stdout then stderr, as a person would read them in a terminal."""
        if self.stderr and self.stdout:
            return f"{self.stdout.rstrip()}\n{self.stderr}"
        return self.stdout or self.stderr


class CommandFailed(LinkError):
    """A device command exited non-zero."""

    def __init__(self, message: str, result: CommandResult) -> None:
        super().__init__(message)
        self.result = result


def last_line(text: str) -> str:
    """The last non-empty line of a command's output (what a person needs to see of a failure)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# PKCS#11 return values a token (OP-TEE's TA, SoftHSM2) gives the station's commands, in words.
# pkcs11-tool prints "error: PKCS11 function C_Login failed: rv = CKR_PIN_INCORRECT (0xa0)" and then
# "Aborting.", so the code is looked for in the whole output, not only its last line.
PKCS11_ERRORS = {
    "CKR_PIN_INCORRECT": "the token refused the PIN: the SO PIN or user PIN in the profile is not this token's",
    "CKR_PIN_LOCKED": "the token's PIN is locked after too many wrong tries: wipe the secure storage to start again",
    "CKR_USER_PIN_NOT_INITIALIZED": "the token has no user PIN yet (it was initialised again since)",
    "CKR_USER_NOT_LOGGED_IN": "the command needs a login to the token that it did not get",
    "CKR_TOKEN_NOT_PRESENT": "no token is present in the slot",
    "CKR_TOKEN_NOT_RECOGNIZED": "the token was not recognised",
    "CKR_DEVICE_ERROR": "the secure world reported a device error (OP-TEE's TA missing or tee-supplicant not running?)",
    "CKR_DEVICE_MEMORY": "the secure storage is full",
    "CKR_GENERAL_ERROR": "the PKCS#11 module reported a general error",
    "CKR_FUNCTION_FAILED": "the token could not carry out the operation",
    "CKR_SLOT_ID_INVALID": "the slot asked for does not exist on this token",
}
_CKR = re.compile(r"\bCKR_[A-Z_]+\b")


def pkcs11_words(output: str) -> str:
    """What the first known PKCS#11 return value in ``output`` means, or ""."""
    for code in _CKR.findall(output):
        if code in PKCS11_ERRORS:
            return f"{code}: {PKCS11_ERRORS[code]}"
    return ""


def checked(result: CommandResult, program: str, *, check: bool) -> CommandResult:
    """The result, or :class:`CommandFailed` for a non-zero exit when ``check`` — one wording for every link."""
    if check and result.exit_status != 0:
        words = pkcs11_words(result.output)
        raise CommandFailed(
            f"`{program}` failed on the device with exit status {result.exit_status}: "
            f"{words or last_line(result.output) or 'no output'}",
            result,
        )
    return result


class Deadline:
    """A point in time by which an operation must be over; passed down so no wait is unbounded."""

    def __init__(self, seconds: float, *, what: str = "operation") -> None:
        self.seconds = seconds
        self.what = what
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def cap(self, seconds: float) -> float:
        """The smaller of ``seconds`` and what is left, so an inner wait never outlives the deadline."""
        return min(seconds, self.remaining())


@dataclass(frozen=True)
class DeviceAddress:
    """Where a board is: ``ssh://root@127.0.0.2:2222`` or ``serial:///dev/ttyUSB0?baud=115200``."""

    scheme: str
    host: str = ""
    port: int = 22
    user: str = "root"
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)
    url: str = ""

    @classmethod
    def parse(cls, url: str) -> DeviceAddress:
        parts = urlsplit(url)
        if parts.scheme == "ssh":
            if not parts.hostname:
                raise StationError(
                    f"device address {url!r} has no host — write it like ssh://root@127.0.0.2:2222"
                )
            try:
                port = parts.port or 22
            except ValueError as exc:
                raise StationError(f"device address {url!r} has an invalid port") from exc
            return cls("ssh", host=parts.hostname, port=port, user=parts.username or "root", url=url)
        if parts.scheme == "serial":
            path = parts.path
            if not path:
                raise StationError(
                    f"device address {url!r} has no port path — write it like serial:///dev/ttyUSB0?baud=115200"
                )
            options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            return cls("serial", path=path, options=options, url=url)
        raise StationError(
            f"device address {url!r} is not understood — use ssh://USER@HOST:PORT or serial:///dev/PORT?baud=115200"
        )

    def __str__(self) -> str:
        return self.url


class DeviceLink(Protocol):
    """A connection to one board.  Every method takes a deadline and honours cancellation."""

    address: DeviceAddress

    def open(self, deadline: Deadline) -> None:
        """Connect (and log in); raises :class:`LinkLost` or :class:`HostKeyMismatch`."""

    def run(
        self, cmd: ShellCommand, deadline: Deadline, *, check: bool = True, max_output: int | None = None
    ) -> CommandResult:
        """Run one command; with ``check`` a non-zero exit raises :class:`CommandFailed`.

        More than ``max_output`` bytes of output (stdout and stderr together; default
        :data:`MAX_COMMAND_OUTPUT_BYTES`) stops the command and raises :class:`OutputTooLarge`.
        """

    def put(self, data: bytes, remote_path: str, deadline: Deadline, *, mode: int = 0o644) -> None:
        """Write a file on the device atomically (temporary name, then rename)."""

    def get(self, remote_path: str, deadline: Deadline, *, max_bytes: int | None = None) -> bytes:
        """Read a file from the device; a file longer than ``max_bytes`` (default
        :data:`MAX_FILE_BYTES`) raises :class:`OutputTooLarge` without being read further."""

    def reboot(self, deadline: Deadline) -> None:
        """Reboot the device, see it go down, and reconnect once it is back."""

    def wait_until_back(self, deadline: Deadline) -> None:
        """Reconnect once the device is back after going down (no `reboot` sent): tried again until
        ``deadline``; raises :class:`LinkLost` when it is not back by then."""

    def host_key(self) -> tuple[str, str] | None:
        """(key type, SHA256 fingerprint) of the device's host key, or None when the link has none."""

    def local_address(self) -> str | None:
        """The station's address as the device sees it (where the device can reach the station)."""

    def close(self) -> None:
        """Close the connection; safe to call twice."""


def open_link(
    address: DeviceAddress,
    *,
    identity_file: str,
    pinned_host_key: str | None,
    cancel: threading.Event,
    login_user: str = "root",
    login_password: str = "",
    prompt_pattern: str = "",
) -> DeviceLink:
    """Build the link for an address (not yet opened)."""
    if address.scheme == "ssh":
        from station.transport.ssh import SshLink

        return SshLink(address, identity_file=identity_file, pinned_host_key=pinned_host_key, cancel=cancel)
    from station.transport.serial import SerialLink

    link: DeviceLink = SerialLink(
        address,
        cancel=cancel,
        login_user=login_user,
        login_password=login_password,
        prompt_pattern=prompt_pattern,
    )
    return link


def probe(address: DeviceAddress, timeout_s: float) -> tuple[bool, str]:
    """Whether a device answers at ``address``, without logging in or sending anything.

    SSH: a TCP connection to the device's port is accepted within ``timeout_s`` (then closed at
    once).  Serial console: the port's device file exists (opening it could steal a console another
    program is using).  Returns ``(answers, what was seen)`` for a person to read; an unreachable
    device is an answer, not an error, so this never raises for one.
    """
    if address.scheme == "serial":
        present = Path(address.path).exists()
        return present, f"{address.path} {'present' if present else 'missing'}"
    began = time.monotonic()
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no reply within {timeout_s:g} s"
        return False, f"{address.host}:{address.port}: {reason}"
    return True, f"{address.host}:{address.port} answered in {(time.monotonic() - began) * 1000:.0f} ms"
