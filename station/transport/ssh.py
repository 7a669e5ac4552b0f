"""SSH device link over paramiko: one connection per unit, every wait under a deadline.

Host keys are pinned per unit: the first key a unit sees is recorded with it, and any other key
later in the same unit (after a reboot, on resume) aborts the unit as a possible impostor.  There
is deliberately no "accept any key" policy: each board on a fixture is a different machine.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from collections.abc import Iterator

import paramiko

from station.shell import ShellCommand, command
from station.transport.base import (
    MAX_COMMAND_OUTPUT_BYTES,
    MAX_FILE_BYTES,
    READ_CHUNK_BYTES,
    CommandResult,
    CommandTimedOut,
    Deadline,
    DeviceAddress,
    HostKeyMismatch,
    LinkCancelled,
    LinkError,
    LinkLost,
    OutputTooLarge,
    checked,
    program_of,
)
from station.transport.waiting import WakingEvent, readable

# paramiko logs tracebacks of connection attempts that a booting board refuses; the station reports
# those itself, in words, so keep them out of the technician's terminal (they still reach a configured log).
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Named settings for the waits inside one connection attempt.
CONNECT_TIMEOUT_S = 5.0
BANNER_TIMEOUT_S = 10.0
AUTH_TIMEOUT_S = 10.0
CHANNEL_OPEN_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.1
# A command's output is waited for in sleeps this long when the cancel flag can wake the wait itself (a
# unit's worker: a WakingEvent), else in POLL_INTERVAL_S sleeps that look at the flag: output, EOF and a
# dropped connection wake the wait at once either way.
IDLE_WAIT_S = 1.0
# sshd may send a command's exit status before it has forwarded the last of the command's output
# (it reaps the child before it drains the pipe): after the status, output is read until the
# channel's EOF, for at most this long (a background child may hold the pipe open for ever).
EXIT_DRAIN_TIMEOUT_S = 2.0
# How long a board may take to drop its connections after `reboot` before we call it stuck.
SHUTDOWN_TIMEOUT_S = 30.0
# A board can reset without closing its connections (a watchdog, `reboot -f`, a power glitch; QEMU
# keeps the host side of a connection open across a guest reset), so after `reboot` the link is not
# trusted to drop: every LIVENESS_INTERVAL_S a session-open request must be answered (opened or
# refused) within LIVENESS_TIMEOUT_S, and LIVENESS_MISSES unanswered in a row mean the board is down.
# The reboot step then compares boot ids, so a slow board wrongly taken for down cannot pass.
LIVENESS_INTERVAL_S = 1.0
LIVENESS_TIMEOUT_S = 2.0
LIVENESS_MISSES = 2
# Refused connects cost nothing; a short cap means the board is used as soon as its sshd is up.
RECONNECT_BACKOFF_S = (0.2, 0.3, 0.5)


def _stdin_closed(line: str) -> str:
    """The line as sent: the command's stdin is /dev/null, so one waiting for input sees EOF at once and never
    hangs on us (and `openssl s_client` ends when its stdin does, as on the serial console).

    The channel's own EOF (``shutdown_write``) is not sent at all: paramiko builds it under the channel's lock
    and sends it after releasing it, so a command that has already ended can have its CLOSE answered by the
    reader thread first; the board's sshd then has freed the channel, takes the late EOF as a protocol
    error and drops the whole connection ("ieof packet referred to nonexistent channel 0", paramiko #1705).
    Seen with 5 stations x 25 boards on one 2-core PC, the units' workers starved at nice 19."""
    return f"{line} </dev/null"


def _reason(exc: BaseException) -> str:
    """What an exception from paramiko says, in words: the bare ``EOFError`` its reader thread keeps when the
    board closes the connection (or sends SSH's disconnect) says nothing, and a message ending in "()" helps
    nobody."""
    if str(exc):
        return str(exc)
    if isinstance(exc, EOFError):
        return "the board closed the connection"
    return type(exc).__name__


class _Transport(paramiko.Transport):
    """paramiko's transport, its reader thread waking once a second rather than ten times when nothing
    arrives (data, EOF and a reset wake it at once; the wake-up only looks for a close asked by this side,
    which ``close`` does not wait for).  Half a unit's idle CPU went to those wake-ups: one connection is
    open for a unit's whole 30 s."""

    _active_check_timeout = 1.0
    # AES-GCM first (an AEAD: one call into OpenSSL per packet): with AES-CTR and HMAC, paramiko checks
    # every packet's MAC in a Python loop over its bytes — 13 000 calls a unit.  A board without GCM
    # negotiates the rest of paramiko's list, in paramiko's order.
    _preferred_ciphers = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") + tuple(
        name
        for name in paramiko.Transport._preferred_ciphers  # type: ignore[attr-defined]
        if not name.endswith("-gcm@openssh.com")
    )


def close_channel(channel: paramiko.Channel) -> None:
    """Close a channel, whether or not its ``fileno()`` was waited on, without paramiko's close/feed race and
    without raising when the connection is already gone.

    ``Channel.close`` closes the pipe behind ``fileno()`` under the channel's lock, but the transport's
    reader thread signals that pipe (``PosixPipe.set``: look at ``_closed``, then ``os.write``) under
    the *buffer's* lock only (paramiko issues #1700 and #2271, still open).  A board still streaming
    into a channel we give up on (too much output, a deadline, a cancel) can land its data between the
    two: the write hits a closed descriptor and the EBADF kills the whole connection, or it hits
    whatever file the process has opened under that number since.  The pipe is closed here under both
    buffers' locks, taken after the channel's as paramiko itself nests them, so a signal either
    finishes first or finds the pipe marked closed.
    """
    with channel.lock:
        pipe, channel._pipe = channel._pipe, None  # type: ignore[attr-defined]
        if pipe is not None:
            with channel.in_buffer._lock, channel.in_stderr_buffer._lock:  # type: ignore[attr-defined]
                pipe.close()
    try:
        channel.close()
    except (paramiko.SSHException, OSError, EOFError):
        # The connection went with it: there is nobody to tell, and the close must not replace what the caller
        # is reporting (a refused answer, a deadline, a cancel) with a bare EOFError.  The link's next use finds
        # the connection gone and says so in words.
        pass


class SshLink:
    """A :class:`~station.transport.base.DeviceLink` over SSH."""

    def __init__(
        self,
        address: DeviceAddress,
        *,
        identity_file: str,
        pinned_host_key: str | None,
        cancel: threading.Event,
    ) -> None:
        self.address = address
        self._identity_file = identity_file
        self._pinned = pinned_host_key
        self._seen_key: tuple[str, str] | None = None
        self._cancel = cancel
        self._transport: paramiko.Transport | None = None
        self._pkey: paramiko.PKey | None = None
        # One SFTP session per step: a step's transfers share it (fetch_csr reads the CSR and the public key,
        # push writes two certificates) — each session costs a channel, a subsystem request, SFTP's version
        # exchange and an sftp-server process on the board.  A step's transfers are known by the deadline
        # they run under (one per step attempt); the next step, or the same step retried, opens its own.
        self._sftp_client: paramiko.SFTPClient | None = None
        self._sftp_deadline: Deadline | None = None

    # -- connection -------------------------------------------------------------------------

    def open(self, deadline: Deadline) -> None:
        self._check_cancel()
        self.close()
        where = f"{self.address.host}:{self.address.port}"
        try:
            sock = socket.create_connection(
                (self.address.host, self.address.port), timeout=deadline.cap(CONNECT_TIMEOUT_S) or 0.1
            )
        except OSError as exc:
            raise LinkLost(
                f"cannot connect to the device at {where} ({exc.strerror or exc}) — check that the board is "
                "powered, booted and cabled to this fixture, then press Retry"
            ) from exc
        # Commands are small request/response exchanges: without TCP_NODELAY, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every command (measured on the simulator: `true` 48 ms → 5.6 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = _Transport(sock)
        transport.banner_timeout = deadline.cap(BANNER_TIMEOUT_S)
        transport.auth_timeout = deadline.cap(AUTH_TIMEOUT_S)
        try:
            transport.start_client(timeout=deadline.cap(BANNER_TIMEOUT_S) or 0.1)
            key = transport.get_remote_server_key()
            self._verify_host_key(key)
            transport.auth_publickey(self.address.user, self._private_key())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise LinkLost(
                f"SSH session with the device at {where} could not be set up ({_reason(exc)}) — check the board "
                "has finished booting and trusts this station's key, then press Retry"
            ) from exc
        except BaseException:
            transport.close()
            raise
        self._transport = transport

    def _private_key(self) -> paramiko.PKey:
        if self._pkey is None:
            try:
                self._pkey = paramiko.PKey.from_path(self._identity_file)
            except (OSError, paramiko.SSHException) as exc:
                raise LinkError(
                    f"the station's SSH key {self._identity_file} cannot be read ({exc}) — "
                    "run `station sim up` or recreate the station home"
                ) from exc
        return self._pkey

    def _verify_host_key(self, key: paramiko.PKey) -> None:
        fingerprint = key.fingerprint
        self._seen_key = (key.get_name(), fingerprint)
        if self._pinned is None:
            self._pinned = fingerprint  # first key seen in this unit: pin it
        elif fingerprint != self._pinned:
            raise HostKeyMismatch(
                f"the device at {self.address.host}:{self.address.port} presented host key {fingerprint}, "
                f"but this unit pinned {self._pinned} — another machine may be answering at this address. "
                "The unit is aborted; check the fixture cabling and re-onboard the board explicitly if it "
                "was legitimately re-imaged"
            )

    def host_key(self) -> tuple[str, str] | None:
        return self._seen_key

    def local_address(self) -> str | None:
        if self._transport is None:
            return None
        name = self._transport.sock.getsockname()  # type: ignore[union-attr]
        return str(name[0])

    def close(self) -> None:
        self._close_sftp()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _active(self) -> paramiko.Transport:
        if self._transport is None or not self._transport.is_active():
            raise LinkLost(
                f"the SSH connection to {self.address.host}:{self.address.port} dropped — check the board's "
                "power and network cable, then press Retry"
            )
        return self._transport

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise LinkCancelled("cancelled by the operator")

    # -- commands ---------------------------------------------------------------------------

    # long: one SSH exec channel: open, stream both outputs under one deadline and cap, close
    def run(
        self, cmd: ShellCommand, deadline: Deadline, *, check: bool = True, max_output: int | None = None
    ) -> CommandResult:
        self._check_cancel()
        limit = MAX_COMMAND_OUTPUT_BYTES if max_output is None else max_output
        transport = self._active()
        line = cmd.render()
        started = time.monotonic()
        try:
            channel = transport.open_session(timeout=deadline.cap(CHANNEL_OPEN_TIMEOUT_S) or 0.1)
            channel.exec_command(_stdin_closed(line))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise LinkLost(
                f"the device at {self.address.host} stopped answering while starting a command ({_reason(exc)}) — "
                "check power and network, then press Retry"
            ) from exc
        out = io.BytesIO()
        err = io.BytesIO()
        drain_by: float | None = None
        wake = self._cancel.fileno() if isinstance(self._cancel, WakingEvent) else None

        def take(into: io.BytesIO, data: bytes) -> None:
            # stdout and stderr count together.  What paramiko holds unread is at most one SSH
            # window per channel (2 MiB): a conforming sshd sends no more until we read.
            into.write(data)
            if out.tell() + err.tell() > limit:
                raise OutputTooLarge(program_of(cmd), limit)

        try:
            while True:
                if channel.recv_ready():
                    take(out, channel.recv(READ_CHUNK_BYTES))
                    continue
                if channel.recv_stderr_ready():
                    take(err, channel.recv_stderr(READ_CHUNK_BYTES))
                    continue
                if channel.exit_status_ready():
                    if channel.eof_received or channel.closed:
                        break
                    if drain_by is None:
                        drain_by = time.monotonic() + deadline.cap(EXIT_DRAIN_TIMEOUT_S)
                    elif time.monotonic() >= drain_by:
                        break
                if channel.closed or not transport.is_active():
                    raise LinkLost(
                        f"the connection to {self.address.host} dropped in the middle of `{cmd.argv[0]}` — "
                        "check the board's power and network cable, then press Retry"
                    )
                if self._cancel.is_set():
                    raise LinkCancelled("cancelled by the operator")
                if deadline.expired():
                    raise CommandTimedOut(
                        f"`{cmd.argv[0]}` on {self.address.host} did not finish within {deadline.seconds:g} s "
                        f"({deadline.what}) — the board may be hung; power-cycle it and press Retry"
                    )
                if channel.eof_received:
                    # All output is in; only the exit status is missing.  (After EOF the channel's
                    # fileno stays readable, so select would spin and burn the station's CPU.)
                    channel.status_event.wait(deadline.cap(POLL_INTERVAL_S))
                else:
                    # The channel's fileno wakes on stdout, stderr and EOF; a cancel flag that can wake the
                    # wait does so, one that cannot is looked at every POLL_INTERVAL_S.
                    if wake is not None:
                        readable(channel.fileno(), deadline.cap(IDLE_WAIT_S), also=wake)
                    else:
                        readable(channel.fileno(), deadline.cap(POLL_INTERVAL_S))
            # Drain what arrived together with the EOF.
            while channel.recv_ready():
                take(out, channel.recv(READ_CHUNK_BYTES))
            while channel.recv_stderr_ready():
                take(err, channel.recv_stderr(READ_CHUNK_BYTES))
            status = channel.exit_status
        finally:
            # Closing the channel is what stops a command we gave up on (too much output, deadline,
            # cancel): sshd closes its pipes and the command dies of SIGPIPE; the connection stays.
            close_channel(channel)
        if status == -1:
            # paramiko marks the status ready when the channel closes without one: the session
            # died under the command (cable pulled, board reset, sshd killed).
            raise LinkLost(
                f"the connection to {self.address.host} dropped in the middle of `{cmd.argv[0]}` — "
                "check the board's power and network cable, then press Retry"
            )
        result = CommandResult(
            command=line,
            stdout=out.getvalue().decode("utf-8", "replace"),
            stderr=err.getvalue().decode("utf-8", "replace"),
            exit_status=status,
            duration_s=time.monotonic() - started,
        )
        return checked(result, cmd.argv[0], check=check)

    # -- files ------------------------------------------------------------------------------

    def put(self, data: bytes, remote_path: str, deadline: Deadline, *, mode: int = 0o644) -> None:
        self._check_cancel()
        temporary = f"{remote_path}.station-tmp"
        try:
            with self._sftp(deadline) as sftp:
                with sftp.open(temporary, "wb") as handle:
                    handle.write(data)
                sftp.chmod(temporary, mode)
                sftp.posix_rename(temporary, remote_path)
        except (OSError, paramiko.SSHException, paramiko.SFTPError, EOFError) as exc:
            raise self._transfer_error("write", remote_path, exc, deadline) from exc

    def get(self, remote_path: str, deadline: Deadline, *, max_bytes: int | None = None) -> bytes:
        self._check_cancel()
        limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
        try:
            with self._sftp(deadline) as sftp, sftp.open(remote_path, "rb") as handle:
                # In pieces, never "read to the end": the path may be a symlink to /dev/zero, whose
                # end never comes (and whose size stat reports as 0).  One byte past the cap is
                # enough to know the file is too long.
                data = bytearray()
                while len(data) <= limit:
                    self._check_cancel()
                    if deadline.expired():
                        raise TimeoutError(remote_path)
                    piece = handle.read(min(READ_CHUNK_BYTES, limit + 1 - len(data)))
                    if not piece:
                        return bytes(data)
                    data += piece
                raise OutputTooLarge(f"the file {remote_path}", limit)
        except (OSError, paramiko.SSHException, paramiko.SFTPError, EOFError) as exc:
            raise self._transfer_error("read", remote_path, exc, deadline) from exc

    @contextlib.contextmanager
    def _sftp(self, deadline: Deadline) -> Iterator[paramiko.SFTPClient]:
        """The SFTP session of the step whose ``deadline`` this is, every wait in it under the deadline.  A
        transfer that fails in any way (cancel, deadline, a file too long, a broken answer) closes the
        session: the next transfer opens a new one rather than read what the failed one left unread."""
        transport = self._active()
        client = self._sftp_client
        if client is None or deadline is not self._sftp_deadline or client.get_channel().closed:  # type: ignore[union-attr]
            self._close_sftp()
            channel = transport.open_session(timeout=deadline.cap(CHANNEL_OPEN_TIMEOUT_S) or 0.1)
            try:
                channel.settimeout(deadline.remaining() or 0.1)
                channel.invoke_subsystem("sftp")
                client = paramiko.SFTPClient(channel)
            except BaseException:
                # The board's sftp-server never answered properly: do not leave it open.
                close_channel(channel)
                raise
            self._sftp_client, self._sftp_deadline = client, deadline
        client.get_channel().settimeout(deadline.remaining() or 0.1)  # type: ignore[union-attr]
        try:
            yield client
        except BaseException:
            self._close_sftp()
            raise

    def _close_sftp(self) -> None:
        client, self._sftp_client, self._sftp_deadline = self._sftp_client, None, None
        if client is not None:
            try:
                client.close()
            except (OSError, paramiko.SSHException, EOFError):
                pass  # the connection is going or gone: nothing to tell the board

    def _transfer_error(self, verb: str, path: str, exc: BaseException, deadline: Deadline) -> LinkError:
        if isinstance(exc, TimeoutError | socket.timeout) or deadline.expired():
            return CommandTimedOut(
                f"could not {verb} {path} on {self.address.host} within {deadline.seconds:g} s — "
                "the board may be hung; power-cycle it and press Retry"
            )
        if self._transport is None or not self._transport.is_active():
            return LinkLost(
                f"the connection to {self.address.host} dropped while trying to {verb} {path} — "
                "check power and network, then press Retry"
            )
        if isinstance(exc, paramiko.SFTPError | EOFError):
            return LinkError(
                f"the device at {self.address.host} did not answer the file transfer properly while trying to "
                f"{verb} {path} ({_reason(exc)}) — its sftp server may be damaged; press Retry, and "
                "set the board aside if it happens again"
            )
        return LinkError(
            f"could not {verb} {path} on {self.address.host}: {exc} — check the board's storage, then press Retry"
        )

    # -- reboot -----------------------------------------------------------------------------

    def reboot(self, deadline: Deadline) -> None:
        transport = self._active()
        channel: paramiko.Channel | None = None
        try:
            channel = transport.open_session(timeout=deadline.cap(CHANNEL_OPEN_TIMEOUT_S) or 0.1)
            channel.exec_command(_stdin_closed(command("reboot").render()))
        except (paramiko.SSHException, OSError, EOFError):
            pass  # the board may already be going down: that is what we asked for
        # See it go down: the transport drops once the board's sshd is gone, or the board stops
        # answering on a connection it never closed.
        waited = min(SHUTDOWN_TIMEOUT_S, deadline.remaining())
        down_by = time.monotonic() + waited
        next_probe = time.monotonic() + LIVENESS_INTERVAL_S
        misses = 0
        while transport.is_active():
            self._check_cancel()
            # A board that answers `reboot` with an error stays up: say so now, not at the deadline.
            status = channel.exit_status if channel is not None and channel.exit_status_ready() else -1
            if status > 0:
                self.close()
                raise LinkError(
                    f"the device at {self.address.host} refused to reboot (`reboot` exited {status}) — "
                    "power-cycle it and press Retry"
                )
            if time.monotonic() >= next_probe:
                misses = 0 if self._answers(transport, deadline) else misses + 1
                if misses >= LIVENESS_MISSES:
                    break  # reset under an open connection: down without saying so
                next_probe = time.monotonic() + LIVENESS_INTERVAL_S
                continue
            if time.monotonic() > down_by:
                self.close()
                raise CommandTimedOut(
                    f"the device at {self.address.host} did not go down within {waited:.3g} s after "
                    "`reboot` — power-cycle it and press Retry"
                )
            time.sleep(POLL_INTERVAL_S)
        self.close()
        self.wait_until_back(deadline)

    @staticmethod
    def _answers(transport: paramiko.Transport, deadline: Deadline) -> bool:
        """True if the board answers a session-open request in time (a refusal is an answer too)."""
        try:
            probe = transport.open_session(timeout=deadline.cap(LIVENESS_TIMEOUT_S) or 0.1)
        except paramiko.ChannelException:
            return True  # the board's sshd said no: it is alive
        except (paramiko.SSHException, OSError, EOFError):
            return False
        close_channel(probe)
        return True

    def wait_until_back(self, deadline: Deadline) -> None:
        """Reconnect with backoff until the board answers or the boot deadline passes."""
        attempt = 0
        last_error: LinkError | None = None
        while not deadline.expired():
            self._check_cancel()
            try:
                self.open(deadline)
                return
            except HostKeyMismatch:
                raise
            except LinkLost as exc:
                last_error = exc
            pause = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
            attempt += 1
            if self._cancel.wait(deadline.cap(pause)):
                raise LinkCancelled("cancelled by the operator")
        raise LinkLost(
            f"the device at {self.address.host}:{self.address.port} did not come back within "
            f"{deadline.seconds:g} s after reboot — check power and network cable, then press Retry"
            + (f" (last attempt: {last_error})" if last_error else "")
        )


def fetch_host_key(address: DeviceAddress, deadline: Deadline) -> tuple[str, str]:
    """(key type, SHA256 fingerprint) of the host key the device at ``address`` shows; nothing else is done.

    Key exchange only — no login, no command — so an administrator can see the key of a board the
    station does not trust yet (``station fixtures pin``).
    """
    where = f"{address.host}:{address.port}"
    try:
        sock = socket.create_connection(
            (address.host, address.port), timeout=deadline.cap(CONNECT_TIMEOUT_S) or 0.1
        )
    except OSError as exc:
        raise LinkLost(
            f"cannot connect to the device at {where} ({exc.strerror or exc}) — check that the board is powered, "
            "booted and cabled to this fixture"
        ) from exc
    transport = paramiko.Transport(sock)
    transport.banner_timeout = deadline.cap(BANNER_TIMEOUT_S)
    try:
        transport.start_client(timeout=deadline.cap(BANNER_TIMEOUT_S) or 0.1)
        key = transport.get_remote_server_key()
        return key.get_name(), key.fingerprint
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise LinkLost(
            f"the device at {where} did not complete an SSH key exchange ({_reason(exc)})"
        ) from exc
    finally:
        transport.close()
