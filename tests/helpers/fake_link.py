"""A :class:`~station.transport.DeviceLink` for unit tests: replays what a real simulated board answered.

Every command's stdout, stderr and exit status, and every file fetched (the CSR, the token's public key) come
from transcripts recorded on the simulator (:mod:`tests.helpers.transcripts`, re-recorded with
``tests.helpers.record_transcripts``).  Only what cannot be recorded is modelled, in a few lines each, the way
the real board behaves:

- the files the station pushes are kept, so ``get`` returns them, ``test -s`` sees them and ``sha256sum``
  reads them back;
- the boot id changes on every ``reboot``;
- the host key is pinned on the first ``open`` of the link (or the unit's pinned key), as ``SshLink`` does,
  and a board can be re-keyed (re-imaged) with :meth:`FakeLink.rekey`;
- a set cancel event stops the next call, as every real link does.

A command asked for more often than recorded gets its answers in recording order, then the last one again.
The files the board's tools make (CSR, public key) belong to the token key: after the n-th key generation the
board serves the n-th transcript's files (a second recorded unit gives a resumed unit a second, different key).  Faults are armed
per call with :meth:`FakeLink.fail`: raise a link error, answer with another recorded exchange (the board's
real refusal), or run a callback (press Cancel) — then answer as recorded.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from station.shell import ShellCommand
from station.transport import (
    CommandResult,
    Deadline,
    DeviceAddress,
    HostKeyMismatch,
    LinkCancelled,
    LinkError,
)
from station.transport.base import (
    MAX_COMMAND_OUTPUT_BYTES,
    MAX_FILE_BYTES,
    OutputTooLarge,
    checked,
    program_of,
)
from tests.helpers.transcripts import Exchange, Transcript, command_key

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
FAKE_ADDRESS = DeviceAddress.parse("ssh://root@127.0.0.2:2222")


@dataclass
class Fault:
    """What happens instead of (or before) the next ``times`` calls whose description contains ``needle``."""

    needle: str
    raises: LinkError | None = None
    answer: Exchange | None = None
    action: Callable[[], None] | None = None
    times: int = 1


class FakeLink:
    """One simulated board, seen through the link interface the flow uses, answering from transcripts."""

    def __init__(self, *transcripts: Transcript, address: DeviceAddress = FAKE_ADDRESS) -> None:
        if not transcripts:
            raise ValueError("a FakeLink needs at least one recorded transcript")
        self.address = address
        self._runs: dict[str, list[Exchange]] = {}
        # The files the board's tools made (the CSR, the public key), per recorded unit: they belong to the
        # token key of that unit, so the n-th key generated serves the n-th transcript's files.
        self._made: list[dict[str, bytes]] = []
        for transcript in transcripts:
            self._made.append({e.path: e.data for e in transcript.exchanges if e.op == "get"})
            for exchange in transcript.exchanges:
                if exchange.op == "run" and exchange.command != command_key(f"cat {BOOT_ID_PATH}"):
                    self._runs.setdefault(exchange.command, []).append(exchange)
        first = transcripts[0]
        self._host_key = first.host_key
        self._local_address = first.local_address
        self._boots = 0
        self._keys = 0
        self._pinned: str | None = None
        self._cancel = threading.Event()
        # What the station pushed, by path: what the board now holds.
        self.files: dict[str, bytes] = {}
        # Every call, in order ("open", "run <command line>", "get <path>", "put <path>", "reboot", "close").
        self.calls: list[str] = []
        self.faults: list[Fault] = []

    # -- what a test arranges --------------------------------------------------------------------

    def connect(
        self, address: DeviceAddress, *, pinned_host_key: str | None, cancel: threading.Event, **_: object
    ) -> FakeLink:
        """Stands in for :func:`station.transport.open_link`: the unit's pinned key and cancel event."""
        self.address = address
        self._pinned = pinned_host_key
        self._cancel = cancel
        return self

    def fail(
        self,
        needle: str,
        *,
        raises: LinkError | None = None,
        answer: Exchange | None = None,
        action: Callable[[], None] | None = None,
        times: int = 1,
    ) -> None:
        """Arm a fault for the next ``times`` calls whose description ("run <cmd>", "get <path>", "put <path>",
        "open", "reboot") contains ``needle``."""
        self.faults.append(Fault(needle, raises, answer, action, times))

    def rekey(self, fingerprint: str) -> None:
        """The board was re-imaged: it shows another host key from now on."""
        key_type = self._host_key[0] if self._host_key else "ssh-ed25519"
        self._host_key = (key_type, fingerprint)

    def corrupt(self, path: str) -> None:
        """The board's storage changes what was written at ``path`` (one byte flipped)."""
        data = bytearray(self.files[path])
        data[0] ^= 0x01
        self.files[path] = bytes(data)

    def runs(self, needle: str) -> list[str]:
        """The command lines run so far that contain ``needle``."""
        return [call for call in self.calls if call.startswith("run ") and needle in call]

    # -- the DeviceLink interface -------------------------------------------------------------------

    def _call(self, description: str) -> Exchange | None:
        if self._cancel.is_set():
            raise LinkCancelled("cancelled by the operator")
        self.calls.append(description)
        for fault in self.faults:
            if fault.times > 0 and fault.needle in description:
                fault.times -= 1
                if fault.action is not None:
                    fault.action()
                if fault.raises is not None:
                    raise fault.raises
                if fault.answer is not None:
                    return fault.answer
        return None

    def open(self, deadline: Deadline) -> None:
        self._call("open")
        if self._host_key is not None:
            if self._pinned is None:
                self._pinned = self._host_key[1]
            elif self._host_key[1] != self._pinned:
                raise HostKeyMismatch(
                    f"the device at {self.address.host}:{self.address.port} presented host key {self._host_key[1]}, "
                    f"but this unit pinned {self._pinned} — another machine may be answering at this address"
                )

    def run(
        self, cmd: ShellCommand, deadline: Deadline, *, check: bool = True, max_output: int | None = None
    ) -> CommandResult:
        rendered = cmd.render()
        replaced = self._call(f"run {rendered}")
        exchange = replaced or self._answer(rendered)
        if len((exchange.stdout + exchange.stderr).encode()) > (max_output or MAX_COMMAND_OUTPUT_BYTES):
            raise OutputTooLarge(f"the output of {program_of(cmd)}", max_output or MAX_COMMAND_OUTPUT_BYTES)
        result = CommandResult(rendered, exchange.stdout, exchange.stderr, exchange.exit_status, 0.0)
        if "--keypairgen" in rendered and result.exit_status == 0:
            self._keys += 1
        return checked(result, cmd.argv[0], check=check)

    def _answer(self, rendered: str) -> Exchange:
        if rendered == f"cat {BOOT_ID_PATH}":
            return Exchange("run", command=rendered, stdout=f"boot-{self._boots:04d}\n")
        if cmdline_is_readback(rendered):
            return self._sha256sum(rendered)
        if rendered.startswith("test -s "):
            # Whether the board holds a (non-empty) file: those the station pushed.
            held = bool(self.files.get(rendered.removeprefix("test -s ")))
            return Exchange("run", command=rendered, exit_status=0 if held else 1)
        answers = self._runs.get(command_key(rendered))
        if not answers:
            raise LookupError(
                f"no recorded answer for {rendered!r} — re-record the transcripts "
                "(python -m tests.helpers.record_transcripts) or arm a fault for it"
            )
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def _sha256sum(self, rendered: str) -> Exchange:
        """``sha256sum PATH…`` over what the station pushed (coreutils' format; a missing file says so)."""
        out, err, status = [], [], 0
        for path in rendered.split()[1:]:
            if path in self.files:
                out.append(f"{hashlib.sha256(self.files[path]).hexdigest()}  {path}\n")
            else:
                err.append(f"sha256sum: {path}: No such file or directory\n")
                status = 1
        return Exchange("run", command=rendered, stdout="".join(out), stderr="".join(err), exit_status=status)

    def put(self, data: bytes, remote_path: str, deadline: Deadline, *, mode: int = 0o644) -> None:
        self._call(f"put {remote_path}")
        self.files[remote_path] = data

    def get(self, remote_path: str, deadline: Deadline, *, max_bytes: int | None = None) -> bytes:
        replaced = self._call(f"get {remote_path}")
        if replaced is not None:
            data = replaced.data
        elif remote_path in self.files:
            data = self.files[remote_path]
        else:
            made = self._made[min(max(self._keys - 1, 0), len(self._made) - 1)]
            if remote_path not in made:
                raise LookupError(f"no recorded file {remote_path!r} — re-record the transcripts")
            data = made[remote_path]
        if len(data) > (max_bytes or MAX_FILE_BYTES):
            raise OutputTooLarge(remote_path, max_bytes or MAX_FILE_BYTES)
        return data

    def reboot(self, deadline: Deadline) -> None:
        self._call("reboot")
        self._boots += 1

    def wait_until_back(self, deadline: Deadline) -> None:
        self._call("wait_until_back")

    def host_key(self) -> tuple[str, str] | None:
        return self._host_key

    def local_address(self) -> str | None:
        return self._local_address

    def close(self) -> None:
        self.calls.append("close")


def cmdline_is_readback(rendered: str) -> bool:
    return rendered.startswith("sha256sum ")


class FakeTlsProof:
    """The station's TLS-proof listener as a unit test sees it: the board "presents" the certificate it holds.

    The board's ``openssl s_client`` answer is replayed from the transcript; the certificate it would show is
    the one the station pushed to the FakeLink (so a certificate that is not the issued one is caught).
    """

    def __init__(self, board: FakeLink, cert_path: str) -> None:
        self.board = board
        self.cert_path = cert_path
        self.presented: bytes | None = None

    def listen(self, host: str, timeout_s: float, port: int = 0) -> int:
        return port or 4433

    def result(self, port: int, timeout_s: float) -> tuple[bytes | None, list[str]]:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        pem = self.presented if self.presented is not None else self.board.files.get(self.cert_path)
        if pem is None:
            return None, ["no connection from the board"]
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER), []
