"""Record the transcripts the FakeLink unit tests replay, from a real simulated Welma board.

Needs root (the simulator runs boards in Linux namespaces).  Re-record after a change to the profile's
command lines or to the simulator's tools, then commit ``tests/transcripts/*.json``::

    sudo .venv/bin/python -m tests.helpers.record_transcripts

It starts one simulated board (``station sim`` in a temporary station home, on a free port), provisions it
twice with the station's own flow through a link that writes down every call and answer (two units, so two
different token keys: a resumed unit needs a fresh key), then records what the board's tools answer to a
few wrong inputs (wrong PINs, a missing key).  The board is always stopped.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path
from typing import Any

import station.flow
from station.audit import AuditLog
from station.config import StationConfig
from station.home import StationHome
from station.pki import CertificateAuthority
from station.profiles import DEFAULT_PROFILE, DeviceProfile, load_profile
from station.shell import ShellCommand, command
from station.sim.farm import Farm
from station.transport import CommandFailed, CommandResult, Deadline, DeviceAddress, DeviceLink, open_link
from tests.helpers.transcripts import TRANSCRIPTS_DIR, Exchange, Transcript, command_key

SERIAL = "202600000000001"
PASSPHRASE = b"transcript recorder passphrase"
BOOT_DELAY_S = 0.2
CALL_DEADLINE_S = 60.0


class RecordingLink:
    """A real link that writes every call and the board's answer into a transcript."""

    def __init__(self, link: DeviceLink, transcript: Transcript) -> None:
        self._link = link
        self.address = link.address
        self.transcript = transcript

    def _add(self, exchange: Exchange) -> None:
        self.transcript.exchanges.append(exchange)

    def open(self, deadline: Deadline) -> None:
        self._link.open(deadline)
        self._add(Exchange("open"))
        self.transcript.host_key = self._link.host_key()
        self.transcript.local_address = self._link.local_address()

    def run(
        self, cmd: ShellCommand, deadline: Deadline, *, check: bool = True, max_output: int | None = None
    ) -> CommandResult:
        try:
            result = self._link.run(cmd, deadline, check=check, max_output=max_output)
        except CommandFailed as exc:
            result = exc.result
            self._add(
                Exchange(
                    "run",
                    command=command_key(result.command),
                    stdout=result.stdout,
                    stderr=result.stderr,
                    exit_status=result.exit_status,
                )
            )
            raise
        self._add(
            Exchange(
                "run",
                command=command_key(result.command),
                stdout=result.stdout,
                stderr=result.stderr,
                exit_status=result.exit_status,
            )
        )
        return result

    def put(self, data: bytes, remote_path: str, deadline: Deadline, *, mode: int = 0o644) -> None:
        import hashlib

        self._link.put(data, remote_path, deadline, mode=mode)
        self._add(Exchange("put", path=remote_path, sha256=hashlib.sha256(data).hexdigest()))

    def get(self, remote_path: str, deadline: Deadline, *, max_bytes: int | None = None) -> bytes:
        data = self._link.get(remote_path, deadline, max_bytes=max_bytes)
        self._add(Exchange("get", path=remote_path, data=data))
        return data

    def reboot(self, deadline: Deadline) -> None:
        self._link.reboot(deadline)
        self._add(Exchange("reboot"))

    def wait_until_back(self, deadline: Deadline) -> None:
        self._link.wait_until_back(deadline)

    def host_key(self) -> tuple[str, str] | None:
        return self._link.host_key()

    def local_address(self) -> str | None:
        return self._link.local_address()

    def close(self) -> None:
        self._link.close()


def record_unit(
    home: StationHome, ca: CertificateAuthority, profile: DeviceProfile, device: str, transcript: Transcript
) -> None:
    """Provision the board once with the station's own flow, writing down every link call."""

    def recording_open_link(address: DeviceAddress, **options: Any) -> DeviceLink:
        return RecordingLink(open_link(address, **options), transcript)

    original = station.flow.open_link
    station.flow.open_link = recording_open_link  # type: ignore[assignment]
    try:
        provisioner = station.flow.Provisioner(
            home=home,
            config=StationConfig(name="transcript-recorder"),
            ca=ca,
            audit=AuditLog(home.root / f"{transcript.name}.db"),
        )
        result = provisioner.provision(serial=SERIAL, device=device, profile=profile, operator="recorder")
    finally:
        station.flow.open_link = original
    if not result.passed:
        raise SystemExit(f"recording {transcript.name}: the unit did not pass ({result.message})")


def record_refusals(home: StationHome, profile: DeviceProfile, device: str, transcript: Transcript) -> None:
    """What the board's tools say to wrong input (run after a unit passed: the token and key0 exist)."""
    link = RecordingLink(
        open_link(
            DeviceAddress.parse(device),
            identity_file=str(home.ensure_station_key()),
            pinned_host_key=None,
            cancel=threading.Event(),
        ),
        transcript,
    )
    module = profile.settings["module"]
    try:
        link.open(Deadline(CALL_DEADLINE_S))
        wrong = [
            # init_pin with an SO PIN that is not the token's: CKR_PIN_INCORRECT.
            profile.command("init_pin", serial=SERIAL, so_pin="99999999"),
            # keygen with a wrong user PIN.
            profile.command("keygen", serial=SERIAL, user_pin="9999"),
            # a CSR for a key the token does not hold.
            profile.command("csr", serial=SERIAL, key_label="nokey"),
            # a read-back of a certificate that is not there.
            command("sha256sum", "/var/lib/missing.cert"),
        ]
        for cmd in wrong:
            link.run(cmd, Deadline(CALL_DEADLINE_S), check=False)
        # The token holding a second private key with the same label (keygen run twice).
        link.run(profile.command("keygen", serial=SERIAL), Deadline(CALL_DEADLINE_S), check=False)
        link.run(profile.command("list_private_key", serial=SERIAL), Deadline(CALL_DEADLINE_S), check=False)
        link.run(command("test", "-e", module), Deadline(CALL_DEADLINE_S), check=False)
    finally:
        link.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TRANSCRIPTS_DIR, help="where the transcripts are written")
    options = parser.parse_args(argv)
    from tests.helpers.farm import free_port

    with tempfile.TemporaryDirectory(prefix="transcripts-") as tmp:
        home = StationHome(Path(tmp) / "home").create()
        farm = Farm(home)
        try:
            (device,) = farm.up(1, boot_delay=BOOT_DELAY_S, port=free_port(1))
            ca = CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE)
            profile = load_profile(DEFAULT_PROFILE)
            for name in ("welma-optee-unit-a", "welma-optee-unit-b"):
                transcript = Transcript(
                    name=name,
                    serial=SERIAL,
                    profile=profile.name,
                    note="one unit of the station's own flow on a simulated board, PASS",
                )
                record_unit(home, ca, profile, device.ssh_url, transcript)
                print(f"recorded {transcript.save(options.out)} ({len(transcript.exchanges)} calls)")
            refusals = Transcript(
                name="welma-optee-refusals",
                serial=SERIAL,
                profile=profile.name,
                note="the board's tools answering wrong PINs, a missing key, a missing file",
            )
            record_refusals(home, profile, device.ssh_url, refusals)
            print(f"recorded {refusals.save(options.out)} ({len(refusals.exchanges)} calls)")
        finally:
            farm.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
