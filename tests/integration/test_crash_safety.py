"""Crash safety: `station provision` killed (SIGKILL, as by a power cut) at every commit point of a unit.

The station process kills itself right after a chosen audit write has committed (the test hook
``STATION_TEST_KILL_AT`` in station/steps.py), and in a second series at random moments chosen by
a seeded clock.  After every kill:

* the audit database passes ``PRAGMA integrity_check`` and ``station audit verify``'s check passes (its own
  function, run here: a fresh interpreter per kill cost ~1 CPU-s each; the command itself runs once at the end);
* every certificate on a board has its audit row, and every certificate is recorded exactly once;
* the interrupted unit is listed by ``AuditLog.unfinished_units()``;
* it can be taken to PASS — resumed with ``--resume``, or abandoned and started over with
  ``--restart`` (alternately, so both ways are proven at most points).

The points run four at a time on four boards sharing one station home, so kills also land while
other `station` processes write to the same audit database.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Queue

import pytest

from station.audit import AuditLog
from station.home import StationHome
from station.pki import CertificateAuthority
from station.sim.farm import Farm, SimDevice
from tests.helpers.crash import (
    PROFILE,
    KillRecord,
    check_recovered,
    kill_at_point,
    kill_at_random,
    station_cli,
)
from tests.helpers.kit import (
    PASSPHRASE,
    assert_audit_sound,
    assert_board_certificate_recorded,
    audit_facts,
    profile_copy,
    running_farm,
)

pytestmark = pytest.mark.integration

BOARDS = 4
# Every audit write of a unit, in the order a passing unit makes them.
KILL_POINTS = (
    "unit_started",
    "host_key_pinned",
    "step:identify",
    "step:guard",
    "step:wipe",
    "step:reboot",
    "step:init_token",
    "step:init_pin",
    "step:keygen",
    "step:csr",
    "step:fetch_csr",
    "step:check_csr",
    "certificate_recorded",
    "step:sign",
    "device_certificate_pushed",
    "step:push",
    "step:tls_proof",
    "unit_finished",
)
RANDOM_KILLS = 8
RANDOM_SEED = 20261126
# A unit of the fast profile takes about a second once it has started: the kills land in there,
# counted from the moment the CLI prints that the unit started.
RANDOM_KILL_WINDOW_S = (0.0, 2.0)


@dataclass
class Crashes:
    home: StationHome
    devices: list[SimDevice]
    records: dict[str, KillRecord]


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashes]:
    home = StationHome(tmp_path_factory.mktemp("crash") / "home").create()
    CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
    profile_copy(home, PROFILE)
    clock = random.Random(RANDOM_SEED)
    delays = [round(clock.uniform(*RANDOM_KILL_WINDOW_S), 2) for _ in range(RANDOM_KILLS)]
    with running_farm(home, BOARDS) as devices:
        farm = Farm(home)
        free: Queue[SimDevice] = Queue()
        for device in devices:
            free.put(device)

        def on_a_board(job: object, *args: object) -> KillRecord:
            device = free.get()
            try:
                return job(*args[:2], device, farm, home)  # type: ignore[operator,no-any-return]
            finally:
                free.put(device)

        with ThreadPoolExecutor(max_workers=BOARDS, thread_name_prefix="crash") as pool:
            futures = [
                pool.submit(on_a_board, kill_at_point, index, point)
                for index, point in enumerate(KILL_POINTS)
            ]
            futures += [
                pool.submit(on_a_board, kill_at_random, index, delay) for index, delay in enumerate(delays)
            ]
            records = [future.result() for future in futures]
        yield Crashes(home, devices, {record.label: record for record in records})


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_station_killed_at_a_commit_point_leaves_a_sound_log_and_a_unit_that_recovers(crashes, point):
    record = crashes.records[point]
    assert not record.error, record.error
    assert record.killed_status == -signal.SIGKILL, (
        f"the hook did not fire at {point}:\n{record.killed_output}"
    )
    if point == "unit_finished":
        assert record.state_after_kill == "passed" and not record.unfinished_after_kill
    else:
        # Interrupted: still 'running', and offered for resuming after a restart of the station.
        assert record.state_after_kill == "running" and record.unfinished_after_kill
        assert record.recovery == ("restart" if KILL_POINTS.index(point) % 2 == 1 else "resume")
    check_recovered(record)


def test_a_station_killed_at_random_moments_always_recovers(crashes):
    randoms = [record for label, record in crashes.records.items() if label.startswith("random-")]
    assert len(randoms) == RANDOM_KILLS
    for record in randoms:
        check_recovered(record)
        shown = [line.strip() for line in record.killed_output.splitlines() if line.strip()]
        print(
            f"{record.label}: killed after {shown[-1] if shown else 'no output'!r}; recovery: {record.recovery}"
        )
    # The seeded delays must actually interrupt units, not only miss them or kill them when done.
    assert sum(record.recovery in ("resume", "restart") for record in randoms) >= RANDOM_KILLS // 2


def test_a_certificate_recorded_but_never_pushed_stays_recorded_and_the_restarted_unit_gets_its_own(crashes):
    record = crashes.records["certificate_recorded"]
    check_recovered(record)
    # The first certificate never left the station; the unit that passed was issued a new one for a
    # new key.  Both are in the log, once each (assert_audit_sound checked the "once").
    assert record.certificates_of_serial == 2


def test_after_all_the_kills_the_audit_log_is_sound_and_nothing_is_left_unfinished(crashes):
    facts = assert_audit_sound(crashes.home.audit_db)
    for device in crashes.devices:
        assert_board_certificate_recorded(device, facts)
    with AuditLog(crashes.home.audit_db) as log:
        assert log.unfinished_units() == []
    states = [state for _, state, _ in facts.units.values()]
    assert states.count("passed") == len(KILL_POINTS) + RANDOM_KILLS
    assert set(states) <= {"passed", "aborted"}
    verify = station_cli(crashes.home, "audit", "verify")
    assert verify.returncode == 0 and "audit log OK" in verify.stdout
    assert audit_facts(crashes.home.audit_db).integrity == "ok"
