"""The messages between the engine (the station's process) and a unit's worker process.

A worker runs the steps of one unit against its board.  What must not leave the station's process — the
CA key and signing, the audit log, the TLS proof's listener — it asks for with a :class:`Call`, answered
by a :class:`Reply` or a :class:`Refusal`.  It reports progress with :class:`Progress` and its end with
:class:`Done`.  The station stops a unit with :class:`Cancel` (and, past the deadline, by terminating
the worker).  Everything travels pickled over one duplex :class:`multiprocessing.connection.Connection`;
nothing is passed on the worker's command line or in its environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from station.config import StationConfig
from station.flow import Admission, FlowEvent
from station.home import StationHome
from station.profiles import DeviceProfile


@dataclass(frozen=True)
class WorkerStart:
    """Everything a worker needs to run its unit (sent through the spawn pipe, never argv/env)."""

    job: int
    admission: Admission
    profile: DeviceProfile
    config: StationConfig
    home: StationHome
    identity_file: str
    ca_certificate_pem: bytes
    stream_output: bool
    memory_limit_bytes: int
    parent_pid: int
    # The station's environment (secrets removed) and directory when the unit started: a worker forked by
    # the fork server would otherwise see the server's, frozen when the server started.
    environment: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    # Step records posted (the unit does not wait for each: see Call.answer) rather than called.
    post_step_records: bool = True
    # Where the worker's CPU is charged with autogroup scheduling: a session of its own (True) or the
    # station's (False); and that session's autogroup nice when it has its own (None: the default weight).
    own_session: bool = False
    autogroup_nice: int | None = None


@dataclass(frozen=True)
class Call:
    """The worker asks the station for a service: ``service`` is audit, ca or tls.

    With ``answer`` False (a *posted* call: a step record) the worker does not wait: the station answers
    only a refusal, which the worker raises at its next call.  Its pipe and the service desk keep the
    unit's order, so the station has served a posted call before any later call of that unit."""

    number: int
    service: str
    method: str
    args: dict[str, Any] = field(default_factory=dict)
    answer: bool = True


@dataclass(frozen=True)
class Reply:
    number: int
    value: Any = None


@dataclass(frozen=True)
class Refusal:
    """The service said no (a StationError in the station): the message says what to do next."""

    number: int
    message: str


@dataclass(frozen=True)
class Progress:
    event: FlowEvent


@dataclass(frozen=True)
class Done:
    """The worker's unit is over (its end is in the audit log, unless ``problem`` says why not)."""

    passed: bool
    problem: str = ""
    device_s: float = 0.0
    # How long the unit waited for the station's answers to its calls (part of the station's share).
    service_s: float = 0.0
    # The worker's own CPU seconds (user + system, all its threads) from its fork to its end: what its
    # unit's work cost — the rest of a worker's cost is its start and exit (bench/batch_scaling.py).
    cpu_s: float = 0.0


@dataclass(frozen=True)
class Cancel:
    """Stop the unit at its next check: it ends failed and resumable."""
