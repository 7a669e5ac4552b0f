"""The audit log's disk fails while a certificate is being signed: the station fails closed.

The station records a certificate before it pushes it, so if the record cannot be written, nothing
may reach the board.  Two ways a line PC's disk fails under a running station are reproduced for
real, on a volume that holds only the audit database:

* full — a small tmpfs, filled up the moment the sign step starts;
* read-only — an ext4 volume mounted ``errors=remount-ro`` (Debian's default for /), which the
  kernel turns read-only the moment the sign step starts (``trigger_fs_error``), open files and all.

Afterwards the board holds no certificate, the log holds no certificate row, and the log is sound;
once space is freed, the interrupted unit resumes to PASS.  Volumes are always unmounted.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from station.audit import AuditLog, AuditLogUnavailable
from station.config import StationConfig
from station.flow import FlowEvent, Provisioner
from station.home import StationHome
from station.pki import CertificateAuthority
from station.sim.farm import SimDevice
from tests.helpers.kit import (
    PASSPHRASE,
    assert_audit_sound,
    assert_board_certificate_recorded,
    audit_facts,
    certificate_on_board,
    profile_copy,
    station_cli,
)

pytestmark = pytest.mark.integration

SERIAL = "202600000000077"
MOUNT_TIMEOUT_S = 30.0
TMPFS_SIZE = "2m"
EXT4_IMAGE_MB = 16


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S).stdout


@dataclass
class Volume:
    """A mounted filesystem for the audit database, and how to make it fail."""

    path: Path
    kind: str  # "full" | "read-only"

    def fail(self) -> None:
        if self.kind == "full":
            # Every byte taken: SQLite cannot add a frame to its write-ahead log.
            with open(self.path / "filler", "wb", buffering=0) as filler:
                try:
                    while filler.write(b"\0" * 4096):
                        pass
                except OSError:
                    pass
        else:
            device = run("findmnt", "-n", "-o", "SOURCE", str(self.path)).strip()
            # What ext4 does on an I/O error with errors=remount-ro: read-only at once, open files too.
            Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("audit disk test\n")

    def repair(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)


@contextmanager
def mounted_volume(tmp_path: Path, kind: str) -> Iterator[Volume]:
    """A fresh volume of ``kind`` mounted below ``tmp_path``; always unmounted afterwards."""
    mount_point = tmp_path / f"audit-{kind}"
    mount_point.mkdir()
    if kind == "full":
        run("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mount_point))
    else:
        image = tmp_path / "audit.ext4"
        run("truncate", "-s", f"{EXT4_IMAGE_MB}M", str(image))
        run("mkfs.ext4", "-q", "-F", str(image))
        run("mount", "-o", "loop,errors=remount-ro", str(image), str(mount_point))
    try:
        yield Volume(mount_point, kind)
    finally:
        done = subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=MOUNT_TIMEOUT_S)
        if done.returncode != 0:  # something still holds it: detach it anyway, never leave it behind
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=MOUNT_TIMEOUT_S)


@pytest.fixture(params=["full", "read-only"])
def volume(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Volume]:
    with mounted_volume(tmp_path, request.param) as mounted:
        yield mounted


def nothing_pushed(device: SimDevice) -> bool:
    return certificate_on_board(device) is None and certificate_on_board(device, "ca.cert") is None


def sound_copy(db: Path, where: Path) -> Path:
    """Check the log where a person would: a copy on a working disk (the failed one refuses writes,
    and opening the log writes its schema)."""
    where.mkdir()
    for suffix in ("", "-wal", "-shm"):
        source = db.with_name(db.name + suffix)
        if source.exists():
            shutil.copy2(source, where / source.name)
    return where / db.name


def certificate_rows(db: Path) -> int:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(connection.execute("SELECT count(*) FROM certificates").fetchone()[0])
    finally:
        connection.close()


def test_the_audit_disk_failing_at_sign_pushes_nothing(start_farm, sim_home, volume, tmp_path):
    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(sim_home, "disk")
    db = volume.path / "audit.db"
    audit = AuditLog(db)

    def fail_the_disk_at_sign(event: FlowEvent) -> None:
        if event.kind == "step_started" and event.step == "sign":
            volume.fail()

    provisioner = Provisioner(
        home=sim_home, config=StationConfig(name="disk"), ca=ca, audit=audit, observer=fail_the_disk_at_sign
    )
    try:
        with pytest.raises(Exception) as failure:  # noqa: PT011 - the kind is checked below
            provisioner.provision(serial=SERIAL, device=device.ssh_url, profile=profile, operator="disk")
    finally:
        audit.close()
    # Fail closed: the board got nothing, and no certificate is on record.
    assert nothing_pushed(device)
    assert certificate_rows(db) == 0
    facts = assert_audit_sound(sound_copy(db, tmp_path / "copy"))
    assert_board_certificate_recorded(device, facts)
    assert [state for serial, state, _ in facts.units.values() if serial == SERIAL] == ["running"]

    if volume.kind == "full":
        assert isinstance(failure.value, AuditLogUnavailable), repr(failure.value)
        assert "is full" in str(failure.value) and "Retry" in str(failure.value)
        volume.repair()
        with AuditLog(db) as audit:
            resumed = Provisioner(
                home=sim_home, config=StationConfig(name="disk"), ca=ca, audit=audit
            ).provision(serial=SERIAL, device=device.ssh_url, profile=profile, operator="disk", resume=True)
        assert resumed.passed, resumed.message
        assert assert_board_certificate_recorded(device, assert_audit_sound(db)) is not None


def test_a_read_only_audit_disk_is_reported_in_plain_words(start_farm, sim_home, tmp_path):
    (device,) = start_farm(1)
    ca = CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    profile = profile_copy(sim_home, "disk")
    with mounted_volume(tmp_path, "read-only") as ro:
        audit = AuditLog(ro.path / "audit.db")
        try:
            ro.fail()
            with pytest.raises(AuditLogUnavailable):
                Provisioner(home=sim_home, config=StationConfig(name="disk"), ca=ca, audit=audit).provision(
                    serial=SERIAL, device=device.ssh_url, profile=profile, operator="disk"
                )
        finally:
            audit.close()


def provision_on_a_full_disk(
    sim_home: StationHome, tmp_path: Path, device: SimDevice
) -> tuple[subprocess.CompletedProcess[str], dict[int, tuple[str, str, str | None]]]:
    with mounted_volume(tmp_path, "full") as full:
        # A whole station home on the small volume: its CA, its SSH key, its profiles, its audit log.
        home = StationHome(full.path).create()
        CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
        shutil.copytree(sim_home.ssh_dir, home.ssh_dir, dirs_exist_ok=True)
        profile_copy(home, "disk")
        with AuditLog(home.audit_db):
            pass
        full.fail()
        run_ = station_cli(
            home, "provision", "--serial", SERIAL, "--device", device.ssh_url, "--profile", "disk"
        )
        full.repair()  # even reading a log in WAL mode needs room for its -shm file
        return run_, audit_facts(home.audit_db).units


def test_station_provision_on_a_full_audit_disk_leaves_the_board_untouched(start_farm, sim_home, tmp_path):
    (device,) = start_farm(1)
    run_, units = provision_on_a_full_disk(sim_home, tmp_path, device)
    assert run_.returncode != 0 and "PASS" not in run_.stdout
    assert "Identify board" not in run_.stdout  # it stopped before any step
    assert nothing_pushed(device)
    assert units == {}


def test_station_provision_on_a_full_audit_disk_says_so_in_plain_words(start_farm, sim_home, tmp_path):
    (device,) = start_farm(1)
    run_, _ = provision_on_a_full_disk(sim_home, tmp_path, device)
    assert "Traceback" not in run_.stderr, run_.stderr
    assert "full" in run_.stderr and "Free some space" in run_.stderr
