"""The station service with real OS accounts and real simulated boards.

* Roles are OS groups: accounts created here (``useradd``, removed at teardown even on failure) — a service
  account owning the home, a technician in welma-tech, a quality lead in welma-quality.  The technician
  provisions through the CLI via the service and is refused (role named, refusal recorded) what needs
  another role; it cannot read the CA key or write the audit log; the quality lead revokes and the audit
  names its OS account and reason.  No secret in the environment of the service or of anything below it;
  the service is not dumpable and has no core dumps.
* Units survive the CLI: `station batch` killed mid-batch → the units finish PASS in the service, and
  `station units --follow` (a second client, attaching later) shows them live.
* The service killed (SIGKILL) mid-batch → the audit log verifies, every certificate on a board has its row,
  the unfinished units resume to PASS.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from station.audit import AuditLog
from station.home import StationHome
from station.pki import CertificateAuthority
from station.roles import Role
from station.service.client import home_socket
from tests.helpers.engine_events import carries, descendants, forkserver
from tests.helpers.kit import assert_audit_sound, assert_board_certificate_recorded, certificate_on_board
from tests.helpers.service import account_python, as_account, os_accounts, running_service, service_pid

pytestmark = pytest.mark.integration

PASSPHRASE = "service integration passphrase"
WAIT_S = 120.0


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} → {done.returncode}: {done.stderr}")
    return done


@dataclass
class Accounts:
    service: str
    technician: str
    quality: str


@pytest.fixture
def accounts() -> Iterator[Accounts]:
    """A service account and one account per role tried here; the welma-* groups made if missing. All
    removed at teardown, also when the test fails."""
    roles = {"service": None, "technician": Role.TECHNICIAN, "quality": Role.QUALITY}
    with os_accounts("wss", roles) as names:
        yield Accounts(**names)


@dataclass
class LinePc:
    base: Path
    home: StationHome
    socket: Path
    service: subprocess.Popen[bytes]


@pytest.fixture
def line_pc(accounts: Accounts, start_farm, sim_home: StationHome) -> Iterator[tuple[LinePc, list]]:
    """A line PC's layout: the home owned by the service account (0700), its CA unlocked from a credential file
    only it can read, the socket in a run directory; one simulated board."""
    devices = start_farm(1)
    base = Path(tempfile.mkdtemp(prefix="welma-svc-"))
    base.chmod(0o711)  # the test accounts reach the socket's directory; nothing else in here is theirs
    try:
        home = StationHome(base / "home").create()
        # The farm trusts the station key of sim_home: the service's home gets the same key.
        shutil.copy2(sim_home.ssh_key, home.ssh_key)
        shutil.copy2(sim_home.ssh_public_key, home.ssh_public_key)
        CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
        home.config_file.write_text('[station]\nname = "line-1"\n')
        credential = base / "ca-passphrase"
        credential.write_text(PASSPHRASE + "\n")
        credential.chmod(0o600)
        run = base / "run"
        run.mkdir()
        run.chmod(0o755)  # as systemd's RuntimeDirectory= makes it (this process's umask is 077)
        out = base / "out"
        out.mkdir(mode=0o700)
        _run("chown", "-R", f"{accounts.service}:nogroup", str(home.root), str(credential), str(run))
        _run("chown", f"{accounts.quality}:nogroup", str(out))
        socket_path = run / "station.sock"
        with running_service(
            home, socket_path, credential=credential, user=accounts.service, log=base / "service.log"
        ) as service:
            yield LinePc(base, home, socket_path, service), devices
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_user(pc: LinePc, user: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`station …` run by ``user`` (runuser), reaching the service by its socket; no passphrase anywhere."""
    return as_account(user, pc.socket, *args, timeout=timeout)


def requests(home: StationHome) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{home.audit_db}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM service_requests ORDER BY id"))


def test_roles_are_os_groups_enforced_by_the_service(accounts: Accounts, line_pc) -> None:
    pc, (device,) = line_pc
    serial = "202600000001401"
    tech, quality = accounts.technician, accounts.quality

    # The technician provisions a board through the CLI; the unit names the OS account that asked.
    done = as_user(pc, tech, "provision", "--serial", serial, "--device", device.ssh_url)
    assert done.returncode == 0 and "PASS" in done.stdout, done.stdout + done.stderr
    assert certificate_on_board(device) is not None
    with AuditLog(pc.home.audit_db) as log:
        unit = log.find_unit(serial)
        assert unit is not None and unit.state == "passed"
        from station.audit.service import ServiceRecords

        assert ServiceRecords(log).unit_accounts(unit.id) == [tech]

    # … and is refused what needs the quality lead or the administrator, with the role named.
    refused = {
        "revoke": (("revoke", "--serial", serial, "--reason", "keyCompromise"), Role.QUALITY),
        "audit_export": (("audit", "export", "--format", "csv", "--out", "/tmp/never.csv"), Role.QUALITY),
        "crl": (("ca", "crl", "--out", "/tmp/never.crl"), Role.QUALITY),
        "admin_set_pin": (("admin", "set-pin"), Role.ADMIN),
        "fixtures": (("fixtures", "pin", "sim-01", "--yes"), Role.ADMIN),
        "ca_unlock": (("ca", "unlock"), Role.ADMIN),
    }
    for op, (argv, role) in refused.items():
        run = as_user(pc, tech, *argv)
        assert run.returncode == 1, (op, run.stdout, run.stderr)
        assert (
            f"refused: {tech} may not" in run.stderr and role.value in run.stderr and role.words in run.stderr
        ), (op, run.stderr)
    assert not Path("/tmp/never.csv").exists() and not Path("/tmp/never.crl").exists()
    # Settings (the raw request, as the window will send it).
    prefix, extra = account_python()
    settings = subprocess.run(
        [
            "runuser",
            "-u",
            tech,
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in extra.items()),
            prefix[0],
            "-c",
            "import sys\nfrom pathlib import Path\nfrom station.service.client import ServiceClient, ServiceRefused\n"
            f"client = ServiceClient.connect(Path({str(pc.socket)!r}))\n"
            "try:\n    client.call('authorize', {'op': 'settings'})\nexcept ServiceRefused as exc:\n"
            "    print(exc); sys.exit(3)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert settings.returncode == 3 and Role.ADMIN.value in settings.stdout, settings.stdout + settings.stderr
    # The home is the service's: the technician can neither read the CA key nor write the audit log.
    assert as_user_shell(tech, f"cat {pc.home.ca_dir / 'ca.key'}").returncode != 0
    assert as_user_shell(tech, f": >> {pc.home.audit_db}").returncode != 0
    # Every refusal is in the audit log, with the OS account, the request and the role it needed.
    refusals = [
        (row["account"], row["op"], row["role_needed"]) for row in requests(pc.home) if not row["allowed"]
    ]
    for op, (_argv, role) in refused.items():
        assert (tech, op, role.value) in refusals
    assert (tech, "settings", Role.ADMIN.value) in refusals

    # The quality lead revokes; the revocation names the OS account (a typed --by is kept beside it, never
    # instead) and the reason.
    revoked = as_user(
        pc, quality, "revoke", "--serial", serial, "--reason", "keyCompromise", "--by", "anyone"
    )
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert f"recorded for {quality} (for anyone)" in revoked.stdout
    with AuditLog(pc.home.audit_db) as log:
        record = log.certificate_for_unit(unit.id)
        assert record is not None and record.revoked_by == f"{quality} (for anyone)"
        assert log.verify().ok
    (asked,) = [row for row in requests(pc.home) if row["op"] == "revoke" and row["allowed"]]
    assert asked["account"] == quality and "keyCompromise" in asked["detail"]

    # The quality lead exports CSV and a PDF report: made by the service, written by the quality lead's own
    # command as its own file, mode 0640 (it names operators); the audit names who exported.
    out = pc.base / "out"
    for fmt in ("csv", "pdf"):
        exported = as_user(
            pc, quality, "audit", "export", "--format", fmt, "--out", str(out / f"units.{fmt}")
        )
        assert exported.returncode == 0, exported.stdout + exported.stderr
        written = out / f"units.{fmt}"
        assert oct(written.stat().st_mode & 0o777) == "0o640" and written.stat().st_uid == _uid(quality)
    assert serial in (out / "units.csv").read_text() and (out / "units.pdf").read_bytes().startswith(b"%PDF")
    exports = [row for row in requests(pc.home) if row["op"] == "audit_export" and row["allowed"]]
    assert [row["account"] for row in exports] == [quality, quality]

    # … and publishes the CRL (signed by the service's CA, written by the quality lead's command) listing it.
    crl = as_user(pc, quality, "ca", "crl", "--out", str(out / "crl.pem"))
    assert crl.returncode == 0, crl.stdout + crl.stderr
    listed = x509.load_pem_x509_crl((out / "crl.pem").read_bytes())
    assert listed.get_revoked_certificate_by_serial_number(int(record.serial_hex, 16)) is not None

    # The service: its own account, not dumpable (its /proc files are root's), no core dumps, and no secret in
    # its environment or in any process below it (fork server, workers).
    pid = service_pid(pc.socket)
    assert pid is not None
    assert Path(f"/proc/{pid}/status").read_text().count(f"\t{_uid(accounts.service)}\t") >= 1
    assert os.stat(f"/proc/{pid}/environ").st_uid == 0, "a non-dumpable process's /proc files belong to root"
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert [line for line in limits.splitlines() if line.startswith("Max core file size")][0].split()[
        4
    ] == "0"
    below = descendants(pid)
    assert forkserver(below) is not None, "unit workers are forked from the service's fork server"
    assert not [p for p in {pid, *below} if carries(p, PASSPHRASE)]


def as_user_shell(user: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        check=False,
    )


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


# -- units survive the CLI; the service killed mid-batch ---------------------------------------------------


def station(home: StationHome, *args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "station", "--home", str(home.root), *args]


def cli_env() -> dict[str, str]:
    env = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE)
    env.pop("STATION_IN_PROCESS", None)
    return env


def manifest(home: StationHome, devices: list, base: int) -> Path:
    path = home.root / f"boards-{base}.csv"
    path.write_text(
        "serial,device,fixture\n"
        + "".join(f"{base + index},{device.ssh_url},{device.name}\n" for index, device in enumerate(devices))
    )
    return path


def wait_for_keygen(events: Path, count: int, process: subprocess.Popen[str] | None = None) -> None:
    end = time.monotonic() + WAIT_S
    while not (events.exists() and events.read_text().count('"step": "keygen"') >= count):
        assert time.monotonic() < end, "every board should reach key generation"
        assert process is None or process.poll() is None, process.communicate() if process else ""
        time.sleep(0.2)


@pytest.fixture
def ca(sim_home: StationHome) -> CertificateAuthority:
    return CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())


def test_units_survive_the_cli_and_a_second_client_follows_them(start_farm, sim_home, ca) -> None:
    devices = start_farm(3, keygen_delay=4)
    events = sim_home.root / "events.jsonl"
    batch = subprocess.Popen(
        station(
            sim_home,
            "batch",
            "--manifest",
            str(manifest(sim_home, devices, 202600000001500)),
            "--events",
            str(events),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        wait_for_keygen(events, 3, batch)
        batch.kill()  # the window or terminal goes away: the units are the service's
        batch.wait(10)
    finally:
        if batch.poll() is None:
            batch.kill()
    _out, err = batch.communicate(timeout=10)
    assert "started one for" in err, err  # the CLI said it started a service (no service was running)
    # A second client attaches later and sees the running units live, until they end.
    follow = subprocess.run(
        station(sim_home, "units", "--follow"), capture_output=True, text=True, timeout=WAIT_S, env=cli_env()
    )
    assert follow.returncode == 0, follow.stdout + follow.stderr
    for index in range(3):
        assert f"{202600000001500 + index} PASS" in follow.stdout, follow.stdout
    listed = subprocess.run(
        station(sim_home, "units"), capture_output=True, text=True, timeout=60, env=cli_env()
    )
    assert listed.stdout.count("passed") == 3, listed.stdout
    with AuditLog(sim_home.audit_db) as log:
        assert [unit.state for unit in log.units()] == ["passed"] * 3
        assert log.verify().ok


def test_the_service_killed_mid_batch_leaves_a_sound_log_and_resumable_units(
    start_farm, sim_home, ca
) -> None:
    devices = start_farm(3, keygen_delay=6)
    socket_path = home_socket(sim_home)
    events = sim_home.root / "events.jsonl"
    with running_service(sim_home, socket_path) as service:
        # Started locked: an administrator (root here) unlocks it over the socket, the passphrase asked for (a
        # demo station takes it from STATION_CA_PASSPHRASE).
        unlocked = subprocess.run(
            station(sim_home, "ca", "unlock"), capture_output=True, text=True, timeout=60, env=cli_env()
        )
        assert unlocked.returncode == 0 and "unlocked" in unlocked.stdout, unlocked.stdout + unlocked.stderr
        batch = subprocess.Popen(
            station(
                sim_home,
                "batch",
                "--manifest",
                str(manifest(sim_home, devices, 202600000001600)),
                "--events",
                str(events),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        try:
            wait_for_keygen(events, 3, batch)
            os.kill(service.pid, signal.SIGKILL)  # a power cut of the service alone
            service.wait(10)
            out, err = batch.communicate(timeout=30)
        finally:
            if batch.poll() is None:
                batch.kill()
        assert batch.returncode == 1 and "station service" in err and "Traceback" not in err, out + err
    # Whatever the service left: the chain verifies, every certificate on a board has its row …
    verify = subprocess.run(
        station(sim_home, "audit", "verify"), capture_output=True, text=True, timeout=120, env=cli_env()
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    facts = assert_audit_sound(sim_home.audit_db)
    for device in devices:
        assert_board_certificate_recorded(device, facts)
    # … and every unfinished unit resumes to PASS (through a service the CLI starts).
    with AuditLog(sim_home.audit_db) as log:
        unfinished = {unit.serial for unit in log.unfinished_units()}
    assert unfinished, "the kill should land while units run"
    for index, device in enumerate(devices):
        serial = str(202600000001600 + index)
        if serial in unfinished:
            resumed = subprocess.run(
                station(sim_home, "provision", "--serial", serial, "--device", device.ssh_url, "--resume"),
                capture_output=True,
                text=True,
                timeout=WAIT_S,
                env=cli_env(),
            )
            assert resumed.returncode == 0 and "PASS" in resumed.stdout, resumed.stdout + resumed.stderr
    with AuditLog(sim_home.audit_db) as log:
        assert {unit.state for unit in log.units() if unit.state != "superseded"} == {"passed"}
        assert log.verify().ok
