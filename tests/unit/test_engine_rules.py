"""The engine's rules that need no board: which profile a fixture gets, how a refusal or a unit's end
reads as one outcome, and what the person at the station does next."""

from __future__ import annotations

import multiprocessing
import selectors
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from station.audit import AuditLog, SerialAlreadyPassed, UnitAlreadyActive
from station.config import Fixture, StationConfig
from station.engine import Ending, choose_profile, known_fixtures
from station.engine.outcome import UnitOutcome, finished, refused
from station.engine.protocol import Done, Progress
from station.engine.scheduler import Scheduler
from station.errors import StationError
from station.flow import FlowEvent
from station.home import StationHome


def test_one_rule_picks_a_fixtures_profile():
    config = StationConfig(name="t", default_profile="welma-optee")
    plain, own = (
        Fixture("a", "ssh://root@127.0.0.2:2222"),
        Fixture("b", "ssh://root@127.0.0.3:2222", "welma-optee-ec"),
    )
    assert choose_profile(config, plain) == "welma-optee"
    assert choose_profile(config, None, setting="custom") == "custom"
    assert choose_profile(config, own, setting="custom") == "welma-optee-ec"
    assert choose_profile(config, own, explicit="forced", setting="custom") == "forced"


def test_known_fixtures_are_station_tomls_then_the_simulators(tmp_path):
    home = StationHome(tmp_path / "home").create()
    home.sim_dir.mkdir(parents=True, exist_ok=True)
    (home.sim_dir / "fixtures.toml").write_text(
        '[[fixture]]\nname = "a"\ndevice = "ssh://root@127.0.0.9:2222"\n\n'
        '[[fixture]]\nname = "sim-02"\ndevice = "ssh://root@127.0.0.3:2222"\n'
    )
    config = StationConfig(name="t", fixtures=(Fixture("a", "ssh://root@127.0.0.2:2222"),))
    fixtures = known_fixtures(home, config)
    assert fixtures["a"].device == "ssh://root@127.0.0.2:2222"  # station.toml wins
    assert fixtures["sim-02"].device == "ssh://root@127.0.0.3:2222"
    # Production mode: no simulated boards.
    production = StationConfig(
        name="t", production=True, fixtures=(Fixture("a", "ssh://root@127.0.0.2:2222"),)
    )
    assert list(known_fixtures(home, production)) == ["a"]


@pytest.fixture
def audit(tmp_path):
    with AuditLog(tmp_path / "audit.db", clock=lambda: datetime(2026, 11, 30, tzinfo=UTC)) as log:
        yield log


def start(audit: AuditLog, serial: str):
    return audit.start_unit(
        serial=serial, profile="p", device="ssh://root@127.0.0.2:2222", operator="o", station="s"
    )


def test_refusals_read_as_one_outcome(audit):
    unit = start(audit, "S1")
    audit.finish_unit(unit.id, result="failed", failed_step="keygen", message="boom")
    failed_unit = audit.unit(unit.id)
    active = refused(UnitAlreadyActive("S1", failed_unit), serial="S1")
    assert active.kind == Ending.REFUSED and active.resumable and active.failed_step == "keygen"
    assert "Retry" in active.next_action
    plain = refused(StationError("bad serial"), serial="S?")
    assert plain.kind == "refused" and not plain.resumable and "scan again" in plain.next_action
    other = start(audit, "S2")
    passed = audit.finish_unit(other.id, result="passed")
    again = refused(SerialAlreadyPassed(passed), serial="S2")
    assert again.unit_id == other.id and not again.resumable


def test_a_units_end_is_read_back_from_the_audit_log(audit):
    unit = start(audit, "S3")
    audit.finish_unit(unit.id, result="failed", failed_step="keygen", message="the token said no")
    outcome = finished(audit, unit.id, serial="S3", duration_s=3.0, device_s=2.5)
    assert (outcome.kind, outcome.failed_step, outcome.resumable) == (Ending.FAILED, "keygen", True)
    # A key generation cut off halfway continues from a fresh token.
    assert "Initialise token" in outcome.next_action
    assert outcome.duration_s - outcome.device_s == pytest.approx(0.5)
    aborted = start(audit, "S4")
    audit.finish_unit(aborted.id, result="aborted", failed_step="identify", message="host key changed")
    closed = finished(audit, aborted.id, serial="S4")
    assert (
        closed.kind == Ending.ABORTED and not closed.resumable and "set the board aside" in closed.next_action
    )
    assert UnitOutcome(Ending.PASSED, "S5", "ok").passed


def test_an_engine_that_cannot_open_the_audit_log_refuses_to_start_boards_and_never_hangs(tmp_path):
    from station.engine import Scheduler, UnitJob
    from station.pki import CertificateAuthority
    from station.profiles import load_profile

    home = StationHome(tmp_path / "home").create()
    home.audit_db.mkdir(parents=True)  # a folder where the audit database should be: it cannot be opened
    ca = CertificateAuthority.init(home.ca_dir, passphrase=b"engine rules passphrase")
    seen = []
    scheduler = Scheduler(home=home, config=StationConfig(name="t"), ca=ca, observer=seen.append)
    scheduler.start()
    first = scheduler.submit(
        UnitJob(
            serial="202600000000001",
            device="ssh://root@127.0.0.2:2222",
            profile=load_profile("welma-optee"),
            operator="o",
        )
    )
    assert scheduler.wait([first], 30)
    end = time.monotonic() + 30
    while scheduler.alive and time.monotonic() < end:  # its thread ends just after settling the board
        time.sleep(0.01)
    assert not scheduler.alive and scheduler.failure is not None
    later = scheduler.submit(
        UnitJob(
            serial="202600000000002",
            device="ssh://root@127.0.0.2:2222",
            profile=load_profile("welma-optee"),
            operator="o",
        )
    )
    for number in (first, later):
        outcome = scheduler.outcome(number)
        assert outcome is not None and outcome.kind == Ending.NOT_STARTED
    assert "engine has stopped" in scheduler.outcome(later).message
    assert [event.kind for event in seen] == ["unit_finished", "unit_finished"]


def test_workers_are_forks_of_the_fork_server_unless_told_to_spawn(monkeypatch):
    from station.engine.scheduler import FORKSERVER_PRELOAD, START_METHOD_ENV, worker_context

    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    assert worker_context().get_start_method() == "forkserver"
    # The server imports what a unit needs, never the station's entry module (the CLI, or the window and Qt).
    assert "station.engine.worker" in FORKSERVER_PRELOAD and "__main__" not in FORKSERVER_PRELOAD
    assert not [name for name in FORKSERVER_PRELOAD if name.startswith(("ui", "PySide6"))]
    monkeypatch.setenv(START_METHOD_ENV, "spawn")
    assert worker_context().get_start_method() == "spawn"
    assert worker_context("forkserver").get_start_method() == "forkserver"
    monkeypatch.setenv(START_METHOD_ENV, "fork")
    with pytest.raises(
        StationError, match="STATION_WORKER_START='fork' is not a way to start a unit's worker here"
    ):
        worker_context()


def test_the_fork_server_holds_what_a_unit_runs_and_not_the_log_the_labels_or_invoke(tmp_path):
    """Every worker is a fork of the server: what it holds, each worker copies at its fork and tears down at
    its exit.  A unit writes through the station, prints no label and reads no OpenSSH config file."""
    from station.engine.spawning import clean_spawn, worker_context

    report = tmp_path / "modules"
    code = f"import sys; open({str(report)!r}, 'w').write('\\n'.join(n for n, m in sys.modules.items() if m))"
    process = worker_context("forkserver").Process(target=exec, args=(code, {}))
    with clean_spawn():
        process.start()
    process.join(60)
    assert process.exitcode == 0
    held = set(report.read_text().split("\n"))
    assert {"station.engine.worker", "station.steps", "station.audit.records", "paramiko"} <= held
    assert not held & {"station.audit.log", "station.audit.core", "sqlite_utils", "barcode", "PIL", "invoke"}


def test_a_workers_start_does_not_wait_for_the_fork_and_its_pid_is_never_taken_for_its_exit_status(tmp_path):
    """The engine asks the fork server for a burst of workers, then reads their pids: a start returns before the
    fork.  The status pipe carries the pid, then the exit status; whoever reads it first (finish_start, join,
    kill) takes the pid first."""
    import signal

    from station.engine.spawning import clean_spawn, finish_start, worker_context, worker_process

    context = worker_context("forkserver")
    report = tmp_path / "pid"
    code = f"import os; open({str(report)!r}, 'w').write(str(os.getpid())); os._exit(7)"
    first = worker_process(context, exec, (code, {}), "unit-first")
    with clean_spawn():
        first.start()
    assert first.pid is None  # asked for, not waited for
    finish_start(first)
    assert first.pid is not None
    first.join(60)
    assert first.exitcode == 7
    assert int(report.read_text()) == first.pid

    # join before anyone read the pid: the pid is read, then the real exit status
    unread = worker_process(context, exec, ("import os; os._exit(5)", {}), "unit-unread")
    with clean_spawn():
        unread.start()
    unread.join(60)
    assert unread.exitcode == 5

    # killed before its pid was read: the pid is read, then the worker is killed (it waits for a signal)
    waiting = worker_process(context, exec, ("import signal; signal.pause()", {}), "unit-waiting")
    with clean_spawn():
        waiting.start()
    waiting.kill()
    waiting.join(10)
    assert waiting.exitcode == -signal.SIGKILL


def test_a_workers_environment_is_the_stations_without_its_secrets(monkeypatch):
    from station.engine.scheduler import worker_environment

    monkeypatch.setenv("STATION_CA_PASSPHRASE", "s3cret passphrase")
    monkeypatch.setenv("STATION_ADMIN_PIN", "1234")
    monkeypatch.setenv("STATION_NOTE", "kept")
    environment = worker_environment()
    assert environment["STATION_NOTE"] == "kept"
    assert "STATION_CA_PASSPHRASE" not in environment and "STATION_ADMIN_PIN" not in environment
    assert "s3cret passphrase" not in environment.values()


def test_a_worker_asks_the_station_about_its_own_units_identity_only(tmp_path, audit):
    """Board identity over the pipe (issue 17 on the engine): typed calls, each for the worker's own unit."""
    import pickle
    from types import SimpleNamespace

    from station.engine.protocol import Call
    from station.engine.scheduler import Scheduler

    home = StationHome(tmp_path / "home").create()
    scheduler = Scheduler(home=home, config=StationConfig(name="t"), ca=object())  # type: ignore[arg-type]
    scheduler._audit = audit
    mine, other = start(audit, "202600000000011"), start(audit, "202600000000012")
    running = SimpleNamespace(unit_id=mine.id)

    def ask(method: str, **args: object) -> object:
        answer = scheduler._service(running, Call(1, "audit", method, args))  # type: ignore[arg-type]
        return pickle.loads(pickle.dumps(answer))  # what the pipe carries back

    ask("record_soc_id", unit_id=mine.id, soc_id="0123ABCD", source="/sys/devices/soc0/serial_number")
    assert ask("unit_soc_id", unit_id=mine.id).soc_id == "0123ABCD"
    conflicts = ask("identity_conflicts", unit_id=mine.id, soc_id="0123ABCD", host_key_fingerprint=None)
    assert conflicts.same_soc_other_serial == () and conflicts.same_host_key_other_serial == ()
    for method, args in (
        ("record_soc_id", {"soc_id": "FFFF", "source": "x"}),
        ("unit_soc_id", {}),
        ("identity_conflicts", {"soc_id": "0123ABCD", "host_key_fingerprint": None}),
    ):
        with pytest.raises(StationError, match="not its own"):
            ask(method, unit_id=other.id, **args)
    assert audit.unit_soc_id(other.id) is None
    scheduler._wake_read.close()
    scheduler._wake_write.close()


@pytest.mark.parametrize("last_word", [Done(True), None], ids=["done", "worker-died"])
def test_a_workers_pipe_is_not_watched_after_its_last_message(last_word):
    # A pipe at its end of file stays readable: watched on, every engine round until the fork server reports
    # the worker's exit would find it ready and read nothing (a busy loop of the engine thread).
    engine = Scheduler.__new__(Scheduler)  # only its selector is used here: no engine thread
    engine._selector = selectors.DefaultSelector()
    ours, theirs = multiprocessing.Pipe()
    running = SimpleNamespace(
        connection=ours, poller=None, reported=False, done=None, done_at=None, deadline=0.0
    )
    engine._selector.register(ours, selectors.EVENT_READ, (running, False))
    theirs.send(Progress(FlowEvent(kind="step_started", serial="SN-1", step="identify")))
    if last_word is not None:
        theirs.send(last_word)
    theirs.close()
    engine._progress = lambda unit, event: None  # what a progress message becomes is tested elsewhere
    try:
        for _round in range(3):
            for key, _events in engine._selector.select(0):
                engine._read_ready(key.data[0])
        assert ours not in engine._selector.get_map()
        assert engine._selector.select(0) == []
        assert (running.done is not None) == (last_word is not None)
    finally:
        engine._selector.close()
        ours.close()
