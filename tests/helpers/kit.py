"""What the reliability tests (tests/soak, and the fault, crash and hostile-input tests) share: fast test profiles, a farm per module, and the station's invariants.

The fault matrix, crash, hostile-input, secrets, host-key and soak tests all check the same few
promises after whatever they did to a unit:

* the audit database is sound (``PRAGMA integrity_check``) and its hash chain verifies;
* no certificate is on a board without its audit row (the station records before it pushes);
* every certificate the station issued is recorded exactly once.

They also need profiles whose deadlines are short, so a hang costs seconds, not minutes: a copy of
a shipped profile with its ``[steps.*]`` tables rewritten, saved where a line engineer would put it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from station.audit import AuditLog
from station.home import StationHome
from station.profiles import STEP_NAMES, DeviceProfile, load_profile, load_profile_file
from station.sim.farm import Farm, SimDevice
from tests.helpers.farm import free_port

PASSPHRASE = "reliability tests' CA passphrase"
# Waits of the tests themselves (not of the station).
BACK_UP_TIMEOUT_S = 20.0
THREADS_GONE_TIMEOUT_S = 5.0
CLI_TIMEOUT_S = 180.0

# Deadlines (s) and retries of the fast profiles: long enough for a simulated board on a busy
# 2-core machine, short enough that a hang costs seconds.  The shipped retry counts are kept
# where they matter (identify, csr, fetch_csr, push, tls_proof), so retries are exercised too.
FAST_STEPS: dict[str, tuple[float, int]] = {
    "identify": (3.0, 1),
    "guard": (2.0, 0),
    "wipe": (2.0, 0),
    "reboot": (6.0, 0),
    "init_token": (3.0, 0),
    "init_pin": (3.0, 0),
    "keygen": (3.0, 0),
    "csr": (3.0, 1),
    "fetch_csr": (2.0, 1),
    "check_csr": (2.0, 0),
    "sign": (2.0, 0),
    "push": (2.0, 1),
    "tls_proof": (3.0, 1),
}


def profile_copy(
    home: StationHome,
    name: str,
    *,
    base: str = "welma-optee-ec",
    steps: dict[str, tuple[float, int]] | None = None,
    replace: dict[str, str] | None = None,
) -> DeviceProfile:
    """A copy of shipped profile ``base`` saved as ``HOME/profiles/<name>.toml``, with fast deadlines.

    ``steps`` maps step names to (timeout_s, retries), default :data:`FAST_STEPS`; ``replace``
    replaces whole lines or fragments of the TOML text (each must occur).
    """
    text = load_profile(base).source.read_text()
    text = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text, count=1)
    policies = dict(FAST_STEPS if steps is None else steps)
    start = text.index("[steps.identify]")
    end = text.index("# The tutorial's command lines.")
    tables = "".join(
        f"[steps.{step}]\ntimeout_s = {policies[step][0]:g}\nretries = {policies[step][1]}\n"
        for step in STEP_NAMES
        if step in policies
    )
    text = text[:start] + tables + "\n" + text[end:]
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} is not in profile {base}"
        text = text.replace(old, new)
    home.profiles_dir.mkdir(parents=True, exist_ok=True)
    path = home.profiles_dir / f"{name}.toml"
    path.write_text(text)
    return load_profile_file(path)


def serial_numbers(prefix: str, count: int) -> list[str]:
    """``count`` distinct 15-digit serials starting with ``prefix`` (digits)."""
    width = 15 - len(prefix)
    return [f"{prefix}{index:0{width}d}" for index in range(1, count + 1)]


# -- the farm ------------------------------------------------------------------------------


@contextmanager
def running_farm(home: StationHome, count: int, **up_options: object) -> Iterator[list[SimDevice]]:
    """Boot ``count`` boards in ``home`` (short boot delay, free port); always stop them after."""
    farm = Farm(home)
    up_options.setdefault("boot_delay", 0.2)
    up_options.setdefault("port", free_port(count))
    try:
        yield farm.up(count, **up_options)  # type: ignore[arg-type]
    finally:
        farm.down()


def wait_until_up(farm: Farm, name: str, timeout_s: float = BACK_UP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        state = next(d.state for d in farm.status() if d.name == name)
        if state == "up":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {state}, not up, {timeout_s:g} s after its fault was cleared")
        time.sleep(0.05)


def certificate_on_board(device: SimDevice, path: str = "key0.cert") -> bytes | None:
    """The board's /var/lib/<path>, read from outside (the persistent upper layer of its /var/lib)."""
    try:
        return (device.state_dir / "var-lib" / "upper" / path).read_bytes()
    except FileNotFoundError:
        return None


def fingerprint(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


# -- the audit database ----------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFacts:
    """What the tests need to know about an audit database, read without the station's code."""

    integrity: str
    certificates: dict[str, int]  # fingerprint -> unit id
    issued_events: dict[str, int]  # fingerprint -> how many certificate.issued events carry it
    units: dict[int, tuple[str, str, str | None]]  # unit id -> (serial, state, failed_step)


def audit_facts(db_path: Path) -> AuditFacts:
    """Read the audit DB read-only (its own connection, as another program would)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        certificates = {
            str(row[0]): int(row[1])
            for row in db.execute("SELECT fingerprint_sha256, unit_id FROM certificates")
        }
        issued: dict[str, int] = {}
        for (payload,) in db.execute("SELECT payload FROM events WHERE kind = 'certificate.issued'"):
            found = re.search(r'"fingerprint_sha256":"([0-9a-f]{64})"', payload)
            assert found is not None, payload
            issued[found.group(1)] = issued.get(found.group(1), 0) + 1
        units = {
            int(row[0]): (str(row[1]), str(row[2]), row[3])
            for row in db.execute("SELECT id, serial, state, failed_step FROM units")
        }
    finally:
        db.close()
    return AuditFacts(integrity, certificates, issued, units)


def assert_audit_sound(db_path: Path) -> AuditFacts:
    """integrity_check ok, the hash chain verifies, each certificate recorded by exactly one event."""
    facts = audit_facts(db_path)
    assert facts.integrity == "ok", facts.integrity
    with AuditLog(db_path) as log:
        report = log.verify()
    assert report.ok, report.problem
    assert set(facts.issued_events) == set(facts.certificates)
    assert all(count == 1 for count in facts.issued_events.values()), facts.issued_events
    return facts


def assert_board_certificate_recorded(device: SimDevice, facts: AuditFacts) -> str | None:
    """A certificate on the board must have its audit row; returns its fingerprint (None: no cert)."""
    pem = certificate_on_board(device)
    if pem is None:
        return None
    found = fingerprint(pem)
    assert found in facts.certificates, f"{device.name} holds certificate {found} that the audit log lacks"
    return found


# -- threads and the command line ----------------------------------------------------------------


# Threads of the test harness itself (pytest-timeout's per-test timer with method = "thread").
HARNESS_THREADS = ("pytest_timeout",)


def assert_no_new_threads(before: set[threading.Thread], timeout_s: float = THREADS_GONE_TIMEOUT_S) -> None:
    """Every thread started since ``before`` has ended (waiting a little for ones closing down)."""
    deadline = time.monotonic() + timeout_s
    while True:
        extra = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(HARNESS_THREADS)
        ]
        if not extra:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"threads left running: {[t.name for t in extra]}")
        time.sleep(0.05)


def station_cli(
    home: StationHome, *args: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """The real `station` command line against ``home``, the CA passphrase in the environment."""
    full_env = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE, PYTHONUNBUFFERED="1")
    full_env.pop("STATION_TEST_KILL_AT", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "station", "--home", str(home.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
