"""Every byte a board sends is bounded: a board that answers too much fails its own unit, in words,
and the station's memory and the neighbouring slots are untouched.

Four boards in one batch, over SSH and over the serial console:

* one streams /dev/zero without end in place of its key generation (``stream:--keypairgen``);
* one answers 32 MiB when its keys are listed (an image whose listing tool runs away);
* one leaves its CSR path a symlink to /dev/zero (an image whose CSR tool is broken);
* one is a good board, and PASSes next to them.

The broken images are this test's own profile: the listing and CSR commands behave as on the
shipped profile unless the board carries a marker file under /var/lib/broken-image/.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from station.audit import AuditLog
from station.batch import Batch, BatchJob
from station.config import StationConfig
from station.flow import Provisioner
from station.pki import CertificateAuthority
from station.shell import command
from station.sim.farm import SimDevice
from station.transport import Deadline, OutputTooLarge
from tests.helpers.boards import open_ssh_link
from tests.helpers.kit import FAST_STEPS, PASSPHRASE, profile_copy

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
# The station's memory may grow by a little per slot while the boards stream; this is a bound on
# memory (an unbounded link grew the station by 1.47 GB in 9 s), not on time.
MEMORY_BOUND_BYTES = 200 * MIB
HUGE_ANSWER = "yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | head -c 33554432"
BROKEN_IMAGE = {
    # The listing answers 32 MiB on a board marked huge-listing, else runs pkcs11-tool as shipped.
    'list_private_key = ["pkcs11-tool",': 'list_private_key = ["sh", "-c", \'if [ -e /var/lib/broken-image/huge-listing ]; then '
    f'{HUGE_ANSWER}; else exec "$@"; fi\', "list", "pkcs11-tool",',
    # The CSR "tool" leaves a symlink to /dev/zero on a board marked csr-is-dev-zero.
    'csr = ["openssl",': 'csr = ["sh", "-c", \'if [ -e /var/lib/broken-image/csr-is-dev-zero ]; then ln -sf /dev/zero "$1"; '
    'else shift; exec "$@"; fi\', "csr", "{csr_path}", "openssl",',
}
# Room for a loaded machine: these steps must end by their cap, never by their deadline.
STEPS = dict(FAST_STEPS, keygen=(60.0, 0), csr=(30.0, 0), fetch_csr=(30.0, 1))

RETRY = "; check its image (re-flash it, or set the board aside), then press Retry"
EXPECTED = {
    "stream": ("keygen", "the board sent more than 4 MiB for `pkcs11-tool …`" + RETRY),
    "huge-listing": ("keygen", "the board sent more than 4 MiB for `sh …`" + RETRY),
    "csr-is-dev-zero": ("fetch_csr", "the board sent more than 64 KiB for the file /tmp/key0.csr" + RETRY),
    "good": (None, "serial 202612000000004 enrolled"),
}


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """The test process's highest RSS, sampled while the batch runs (the station runs in it)."""

    def __init__(self) -> None:
        self.before = rss_bytes()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_bytes()) - self.before


@pytest.mark.parametrize("transport", ["ssh", "serial"])
def test_boards_that_send_too_much_fail_their_own_unit_and_the_neighbour_passes(
    start_farm, sim_farm, sim_home, ssh, transport
):
    devices: list[SimDevice] = start_farm(4, serial_console=transport == "serial")
    roles = dict(zip(("stream", "huge-listing", "csr-is-dev-zero", "good"), devices, strict=True))
    sim_farm.set_fault(roles["stream"].name, "stream:--keypairgen")
    for marker in ("huge-listing", "csr-is-dev-zero"):
        ssh(roles[marker], f"mkdir -p /var/lib/broken-image && touch /var/lib/broken-image/{marker}")
    profile = profile_copy(sim_home, "broken-images", steps=STEPS, replace=BROKEN_IMAGE)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    audit = AuditLog(sim_home.audit_db)
    provisioner = Provisioner(home=sim_home, config=StationConfig(name="bounded"), ca=ca, audit=audit)

    def url(device: SimDevice) -> str:
        return f"serial://{device.console_path}" if transport == "serial" else device.ssh_url

    jobs = [
        BatchJob(f"20261200000000{index}", url(device), device.name)
        for index, device in enumerate(devices, 1)
    ]
    memory = PeakMemory()
    report = Batch(provisioner, profile=profile, operator="bounded", jobs=4).run(jobs)
    grown = memory.stop()

    outcomes = {
        role: next(o for o in report.outcomes if o.job.fixture == device.name)
        for role, device in roles.items()
    }
    seen = {role: (outcome.failed_step, outcome.message) for role, outcome in outcomes.items()}
    assert seen == EXPECTED
    assert outcomes["good"].result == "passed"
    for role in ("stream", "huge-listing", "csr-is-dev-zero"):
        unit = audit.unit(outcomes[role].unit_id)
        assert (unit.state, unit.failed_step) == ("failed", EXPECTED[role][0])
        assert audit.certificate_for_unit(unit.id) is None  # nothing was signed for a board that flooded us
    print(
        f"\n{transport}: station memory grew by {grown / MIB:.1f} MiB (peak above the level before the batch)"
    )
    assert grown < MEMORY_BOUND_BYTES, f"the station grew by {grown / MIB:.0f} MiB while boards streamed"

    # The streaming board's link was left usable or closed cleanly: once the board is fixed, the
    # unit resumes where it failed and PASSes.
    sim_farm.set_fault(roles["stream"].name, None)
    resumed = provisioner.provision(
        serial=jobs[0].serial, device=jobs[0].device, profile=profile, operator="bounded", resume=True
    )
    assert resumed.passed, resumed.message
    assert resumed.unit.id == outcomes["stream"].unit_id
    assert audit.verify().ok
    audit.close()


def test_over_ssh_stderr_counts_too_and_the_connection_outlives_a_refused_answer(start_farm, sim_home):
    (device,) = start_farm(1)
    link = open_ssh_link(sim_home, device)
    try:
        for stream in ("cat /dev/zero >&2", "yes out & yes err >&2"):
            with pytest.raises(
                OutputTooLarge, match=r"^the board sent more than 256 KiB for `sh …`; check its image"
            ):
                link.run(command("sh", "-c", stream), Deadline(30), max_output=256 * 1024)
            # Only the command's channel was closed: the same connection answers the next command.
            assert link.run(command("echo", "still here"), Deadline(30)).stdout == "still here\n"
        link.run(command("ln", "-sf", "/dev/zero", "/tmp/key0.csr"), Deadline(30))
        with pytest.raises(
            OutputTooLarge, match=r"more than 64 KiB for the file /tmp/key0\.csr; check its image"
        ):
            link.get("/tmp/key0.csr", Deadline(30))
        link.run(command("sh", "-c", "head -c 65536 /dev/zero > /tmp/key0.pub"), Deadline(30))
        assert link.get("/tmp/key0.pub", Deadline(30)) == bytes(65536)  # exactly the cap: accepted
        # The station's own sftp read stopped at the cap; the board is not left reading either.
        assert (
            link.run(command("pgrep", "-c", "-x", "cat|yes"), Deadline(30), check=False).stdout.strip() == "0"
        )
    finally:
        link.close()
