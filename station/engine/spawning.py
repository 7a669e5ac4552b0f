"""How a unit's worker process starts: multiprocessing's fork server (or spawn), with the station's
environment minus its secrets and no main module to re-import, and at a lower priority than the station."""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import sys
import threading
import time
import types
from collections.abc import Callable
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.connection import wait
from multiprocessing.context import ForkServerContext, ForkServerProcess, SpawnContext, set_spawning_popen
from multiprocessing.process import BaseProcess

from station.engine.slots import WORKER_NICENESS
from station.errors import StationError

# How a unit's worker starts: a fork of the fork server (cheap: the server has imported the worker's modules
# once) or a fresh interpreter per unit (spawn).  STATION_WORKER_START chooses; forkserver where available.
START_METHOD_ENV = "STATION_WORKER_START"
START_METHODS = ("forkserver", "spawn")
# What the fork server imports once, before it forks any worker: the worker and what a unit then imports on
# first use (the SSH link — paramiko, nacl — the serial link, cryptography's OpenSSL backend, the IDNA codec
# a connect uses, the settings the host-key check reads); without them every forked worker imports them
# again (~0.06 CPU-s, as much as its unit).  Last, forkserver_ready freezes what they made (gc.freeze), so
# workers' collections leave it alone.
FORKSERVER_PRELOAD = [
    "station.engine.forkserver_first",
    "station.engine.worker",
    "station.transport.ssh",
    "station.transport.serial",
    "cryptography.hazmat.backends.openssl",
    "encodings.idna",
    "station.admin",
    "multiprocessing.popen_forkserver",  # each worker's bootstrap imports it otherwise
    "station.engine.forkserver_ready",
]
# Where a unit's worker's CPU is charged under the kernel's autogroup scheduling (one group per session):
# "station" — the workers stay in the station's session, one group with the station's process, where their
# nice (WORKER_NICENESS) puts them below the station's threads; "own" — each worker a session (a group) of
# its own.  STATION_WORKER_SESSION chooses; "station" by default.  Measured in one run
# (bench/results/batch-scaling-perf3-variants.json, 64 slots): the units' wait for the station's answers
# 2.9 s median with "station" against 7.2 s with "own" — 64 worker groups each weighed as much as the
# station's process (and as a window's), so the engine and desk threads (and a GUI thread) waited behind them.
WORKER_SESSION_ENV = "STATION_WORKER_SESSION"
WORKER_SESSIONS = ("station", "own")


def worker_own_session(choice: str | None = None) -> bool:
    """Whether each worker gets a session of its own: ``choice``, else STATION_WORKER_SESSION, else not."""
    chosen = choice or os.environ.get(WORKER_SESSION_ENV) or "station"
    if chosen not in WORKER_SESSIONS:
        raise StationError(
            f"{WORKER_SESSION_ENV}={chosen!r} is not a way to run a unit's worker — use one of: "
            f"{', '.join(WORKER_SESSIONS)}"
        )
    return chosen == "own"


# Environment variables a worker must not inherit (the CA passphrase and anything named like a secret).
_SECRET_WORDS = ("PASSPHRASE", "PASSWORD", "SECRET", "_PIN")
_environment_lock = threading.Lock()


def _lower_priority(pid: int | None, niceness: int = WORKER_NICENESS) -> None:
    """Run a just-started worker ``niceness`` below the station (before its interpreter has imported much)."""
    if pid is None or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness))
    except OSError:
        pass  # gone already, or not allowed: it runs at the station's priority


def lower_own_autogroup(nice: int) -> None:
    """Set this process's session's autogroup nice (its CPU group's weight under the kernel's autogroup
    scheduling; any process may lower its own).  Nothing where there are no autogroups, or where the
    process's CPU group is a cgroup of its own."""
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(f"{nice}\n")
    except OSError:
        pass


def worker_context(method: str | None = None) -> ForkServerContext | SpawnContext:
    """The multiprocessing context units' workers start with: ``method``, else STATION_WORKER_START, else
    forkserver where the platform has it (spawn elsewhere)."""
    chosen = method or os.environ.get(START_METHOD_ENV) or ""
    available = multiprocessing.get_all_start_methods()
    if chosen and (chosen not in START_METHODS or chosen not in available):
        raise StationError(
            f"{START_METHOD_ENV}={chosen!r} is not a way to start a unit's worker here — "
            f"use one of: {', '.join(m for m in START_METHODS if m in available)}"
        )
    if not chosen:
        chosen = "forkserver" if "forkserver" in available else "spawn"
    if chosen == "spawn":
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Only the worker's modules: never __main__ (the station's entry module: the CLI, or ui.app and Qt).
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    return context


# How long the fork server may take to fork a worker and say its pid (it takes milliseconds; this bounds a
# server that is wedged).
PID_TIMEOUT_S = 30.0


class _PidLaterPopen(popen_forkserver.Popen):
    """multiprocessing's fork-server start, without waiting for the pid.

    ``Popen._launch`` sends the request to the fork server, then blocks until the server has forked and
    written back the new pid.  The engine thread starts a burst of workers (64 at a batch's start) one after
    another; each of those waits was 5–9 ms on a busy machine, the engine thread served none of the running
    workers meanwhile, and the last worker started ~0.35 s after the first.  Here the request is sent and the
    pid read later (:func:`finish_start`), so the engine sends every request of a burst first and the server
    forks them back to back.

    The status pipe (``sentinel``) carries the pid first and the exit status last: whatever reads it first
    takes the pid (``poll``, ``wait`` and the signals do it themselves), so the exit status is never taken for
    the pid nor the pid for the exit status."""

    def _launch(self, process_obj: BaseProcess) -> None:
        # popen_forkserver.Popen._launch (Python 3.11), but for its last line, ``self.pid = read_signed(...)``.
        prep_data = spawn.get_preparation_data(process_obj._name)  # type: ignore[attr-defined]
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))  # type: ignore[attr-defined]
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = None  # type: ignore[assignment]  # not known yet: see read_pid

    def read_pid(self, timeout_s: float | None) -> bool:
        """Take the pid from the status pipe once it is there (within ``timeout_s``); False if it is not yet.
        OSError/EOFError: the fork server is gone (the worker never started)."""
        if self.pid is None:
            if not wait([self.sentinel], timeout_s):
                return False
            self.pid = forkserver.read_signed(self.sentinel)
        return True

    def _pid_known(self, timeout_s: float | None) -> bool:
        """:meth:`read_pid`, a fork server that is gone taken as a worker that ended (255, as multiprocessing
        does then)."""
        try:
            return self.read_pid(timeout_s)
        except (OSError, EOFError):
            self.returncode = 255
            return True

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is None and self.pid is None:
            if not self._pid_known(0 if flag == os.WNOHANG else None):
                return None
        return super().poll(flag)

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None and self.pid is None:
            end = None if timeout is None else time.monotonic() + timeout
            if not self._pid_known(timeout):
                return None
            timeout = None if end is None else max(0.0, end - time.monotonic())
        return super().wait(timeout)

    def _send_signal(self, sig: int) -> None:
        if self.returncode is None and self.pid is None and not self._pid_known(PID_TIMEOUT_S):
            return  # no pid yet after PID_TIMEOUT_S: nothing to signal
        super()._send_signal(sig)  # type: ignore[misc]  # nothing either when the fork server is gone (255)


class _PidLaterProcess(ForkServerProcess):
    _Popen: Callable[[BaseProcess], _PidLaterPopen] = staticmethod(_PidLaterPopen)  # type: ignore[assignment]


def worker_process(
    context: ForkServerContext | SpawnContext,
    target: Callable[..., object],
    args: tuple[object, ...],
    name: str,
) -> BaseProcess:
    """A unit's worker process, not started: with the fork server, its ``start`` returns as soon as the
    request is sent (:func:`finish_start` then waits for the pid); with spawn, as multiprocessing does."""
    if context.get_start_method() == "forkserver":
        return _PidLaterProcess(target=target, args=args, name=name, daemon=True)
    return context.Process(target=target, args=args, name=name, daemon=True)


def finish_start(process: BaseProcess, timeout_s: float = PID_TIMEOUT_S) -> None:
    """Wait (bounded) until a started worker's pid is known.  OSError when the fork server did not fork it."""
    popen = getattr(process, "_popen", None)
    if not isinstance(popen, _PidLaterPopen):
        return  # spawn: started with its pid known
    try:
        if popen.read_pid(timeout_s):
            return
    except EOFError:
        raise OSError("the station's fork server ended before it started the worker") from None
    raise OSError(f"the station's fork server did not start the worker within {timeout_s:g} s")


def worker_environment() -> dict[str, str]:
    """This process's environment minus anything secret: what a unit's worker runs with."""
    return {name: value for name, value in os.environ.items() if not _secret(name)}


_SECRET_NAME = re.compile("|".join(_SECRET_WORDS), re.IGNORECASE)


def _secret(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


class clean_spawn:  # noqa: N801 - used as a context manager
    """What a worker — or the fork server, whose environment its workers start with — is started with: this
    process's environment minus anything secret (the CA passphrase), and no main module to re-import — spawn
    would otherwise run the station's own entry module again in the worker (ui.app: Qt and the whole
    window), where only station.engine.worker is needed."""

    def __enter__(self) -> None:
        _environment_lock.acquire()
        self._saved = {name: value for name, value in os.environ.items() if _secret(name)}
        for name in self._saved:
            del os.environ[name]
        self._main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")

    def __exit__(self, *exc_info: object) -> None:
        if self._main is not None:
            sys.modules["__main__"] = self._main
        os.environ.update(self._saved)
        _environment_lock.release()
