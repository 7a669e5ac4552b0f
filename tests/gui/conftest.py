"""pytest-qt set-up for the window's tests: offscreen Qt, a station home, and a guard that fails any
test leaving Qt work behind (a running QThread, busy QThreadPool threads, or an active QTimer).

The simulated-farm fixtures are the integration tests' own (``start_farm``, ``sim_home``).
"""

from __future__ import annotations

import os

# Before anything imports Qt: without a display Qt would abort the whole test process.
os.environ["QT_QPA_PLATFORM"] = "offscreen"

import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QObject, QThread, QThreadPool, QTimer  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from station.audit import AuditLog  # noqa: E402
from station.home import StationHome  # noqa: E402
from station.pki import CertificateAuthority  # noqa: E402
from station.service.client import home_socket  # noqa: E402
from tests.helpers.farm import sim_farm, sim_home, start_farm  # noqa: E402,F401
from tests.helpers.postgres import fleet_db, pg_server  # noqa: E402,F401
from tests.helpers.service import service_pid  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.session import Session  # noqa: E402

PASSPHRASE = "gui test passphrase"
SERIAL = "202600000000001"
# Grace for threads that were told to quit just before the test ended.
THREAD_GRACE_MS = 2000
# A station service the window started ends by itself once idle (its last client gone, its last unit ended).
SERVICE_END_S = 30.0


@pytest.fixture(scope="session", autouse=True)
def pyside_keeps_none_alive(qapp: Any) -> None:
    """PySide6 6.12.0 on Python 3.11 drops a reference to None on every void call and the process
    dies mid-run ("deallocating None"); say so once, clearly, instead."""
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(200):
        probe.setObjectName("probe")
    if sys.getrefcount(None) < before - 100:
        pytest.exit(
            "this PySide6 build drops references to None (6.12.0 on Python 3.11) — "
            "install PySide6-Essentials!=6.12.0",
            returncode=3,
        )


@pytest.fixture(autouse=True)
def no_qt_work_left_behind(qapp: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Record every QThread, QThreadPool and QTimer started from Python during the test; fail the
    test if any is still running, busy or active once the test (and its windows) are done."""
    threads: list[QThread] = []
    pools: list[QThreadPool] = []
    timers: list[QTimer] = []

    def recording(cls: type, sink: list[Any]) -> None:
        original = cls.start

        def start(self: Any, *args: Any, **kwargs: Any) -> Any:
            sink.append(self)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "start", start)

    recording(QThread, threads)
    recording(QThreadPool, pools)
    recording(QTimer, timers)
    yield
    qapp.processEvents()
    problems = []
    for thread in threads:
        try:
            if thread.isRunning() and not thread.wait(THREAD_GRACE_MS):
                problems.append(f"QThread {thread.objectName() or thread!r} is still running")
        except RuntimeError:  # the C++ object is gone: it was finished and deleted
            pass
    for pool in pools:
        try:
            if pool.activeThreadCount() and not pool.waitForDone(THREAD_GRACE_MS):
                problems.append(f"QThreadPool {pool!r} still has {pool.activeThreadCount()} busy thread(s)")
        except RuntimeError:
            pass
    for timer in timers:
        try:
            if timer.isActive():
                parent = timer.parent()
                problems.append(f"QTimer {timer!r} (owner {type(parent).__name__}) is still active")
                timer.stop()
        except RuntimeError:
            pass
    if problems:
        pytest.fail("Qt work left behind:\n  " + "\n  ".join(problems))


@pytest.fixture
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("STATION_CA_PASSPHRASE", PASSPHRASE)
    return PASSPHRASE


@pytest.fixture
def station_ca(sim_home: StationHome) -> CertificateAuthority:  # noqa: F811 - the fixture imported above
    """The sim home's CA, as `station ca init` makes it."""
    return CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())


@pytest.fixture
def fixtures_file(tmp_path: Path) -> Path:
    """Two fixtures whose devices do not answer (nothing listens there)."""
    path = tmp_path / "fixtures.toml"
    path.write_text(
        '[[fixture]]\nname = "bench-1"\ndevice = "ssh://root@127.0.0.1:9"\n\n'
        '[[fixture]]\nname = "bench-2"\ndevice = "ssh://root@127.0.0.1:10"\n',
        encoding="utf-8",
    )
    return path


def unlock_service(session: Session, secret: str = PASSPHRASE) -> None:
    """What an administrator types in the window's unlock dialog: the station service's CA unlocked with the
    test CA's passphrase (``ca_unlock``), when the home has a CA and the service's is still locked."""
    if session.view.ca.get("exists") and not session.view.ca_unlocked:
        session.client.call("ca_unlock", {"secret": secret})
        session.use_view(session.read_view())


@pytest.fixture
def open_window(qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., MainWindow]]:
    """``open_window(home, ca=None, fixtures=None)``: a shown window, a client of the station service it started
    on ``home`` (its CA unlocked as an administrator would from the window); closed (and its session) at
    teardown.  ``ca`` is only the test's CA having been made (the window never loads it)."""
    opened: list[tuple[MainWindow, Session]] = []
    # A test that fails while units run must not hang on the window's modal "Stop them?" question when
    # pytest-qt closes the window; a test about that question patches it with its own answers.
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.StandardButton.Yes)

    def open_(
        home: StationHome, ca: CertificateAuthority | None = None, fixtures: Path | None = None
    ) -> MainWindow:
        session = Session.open(str(home.root), str(fixtures) if fixtures else None)
        unlock_service(session)
        window = MainWindow(session)
        qtbot.addWidget(window)
        with qtbot.waitActive(window):
            window.show()
            window.activateWindow()
        opened.append((window, session))
        return window

    yield open_
    for window, session in opened:
        if window.batch.running:
            window.batch.cancel_all()
            window.batch.wait(30_000)
            qtbot.waitUntil(lambda w=window: not w.batch.running, timeout=5000)
        if window.runner.running:
            window.runner.abort()
            window.runner.wait(30_000)
            qtbot.waitUntil(lambda w=window: not w.runner.running, timeout=5000)
        window.close()
        session.close()
    while _HOME_AUDITS:
        _HOME_AUDITS.popitem()[1].close()
    for home in {session.view.home.root for _window, session in opened}:
        stop_service(StationHome(home))


# The audit logs a test opened on a window's home (home_audit), closed when open_window's windows are.
_HOME_AUDITS: dict[Path, AuditLog] = {}


def home_audit(window: MainWindow) -> AuditLog:
    """The audit log of the home whose station service ``window`` is a client of, opened by the test to check what
    was recorded (the window itself opens nothing in the home: it reads through the service); closed by
    open_window at the end of the test."""
    path = window.session.home.audit_db
    log = _HOME_AUDITS.get(path)
    if log is None:
        log = _HOME_AUDITS[path] = AuditLog(path)
    return log


def stop_service(home: StationHome) -> None:
    """The station service a window started on ``home``: it ends by itself once idle; stopped if it does not."""
    pid = service_pid(home_socket(home))
    if pid is None:
        return
    end = time.monotonic() + SERVICE_END_S
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGTERM)
        pytest.fail(f"the station service (pid {pid}) did not end by itself once the windows closed")


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a service this test process started and that ended is reaped here."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] != "Z":
        return True
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return False
