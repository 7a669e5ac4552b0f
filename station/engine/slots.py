"""What the scheduler keeps about a unit: the job submitted (:class:`UnitJob`), the running unit's slot
(:class:`_Running`), and the bounds a unit's worker runs within."""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from station.engine.protocol import Call, Done
from station.flow import FlowEvent
from station.profiles import DeviceProfile

# A worker still running this long after its step's deadline is terminated (the step's own deadline
# should have ended it: this is for a worker that is stuck where no deadline reaches).
STEP_DEADLINE_GRACE_S = 5.0
# A worker must report its unit started within this of being spawned (an interpreter start is well under a
# second on an idle machine, tens of seconds when 64 start on a busy one), and between two steps
# (recording, reconnecting) reach its next step within BETWEEN_STEPS_S: the bound for a worker stuck
# where no step deadline reaches.
WORKER_START_S = 180.0
BETWEEN_STEPS_S = 120.0
# How long a cancelled unit may take to record itself before its worker is terminated.
CANCEL_DEADLINE_S = 15.0
# A worker's address-space limit (RLIMIT_AS): well above what a unit needs (≈ 0.3 GiB of address space),
# far below what would take the station down.
WORKER_MEMORY_LIMIT_MIB = 1024
# How much lower than the station's own process a unit's worker runs (Linux nice).  A worker waits on its
# board nearly all the time; the station (a window's GUI thread, the engine thread serving 64 workers)
# must get the CPU the moment it needs it, also while 64 interpreters start at once.  The scheduler weighs
# runnable threads by nice: at +10 (weight 110) 64 workers outweighed the engine thread (1024) seven to
# one, so in a burst (64 starts, 64 CSRs at once) the engine forked, forwarded and signed at an eighth of
# a core; at +19 (weight 15) they weigh about as much as it.  Measured in one run at 64 slots
# (bench.batch_scaling --variants engine-default nice-10): see bench/results/batch-scaling.json.
WORKER_NICENESS = 19
# Messages read from one worker's pipe in a row before the engine thread looks at the others again.
READ_BURST = 16
# How long a worker that said it is done may take to exit.
WORKER_EXIT_S = 5.0

Observer = Callable[[FlowEvent], None]
# Audit writes a worker may ask for, each only for its own unit.
_AUDIT_CALLS = frozenset(
    {
        "pin_host_key",
        "public_key_seen",
        "record_certificate",
        "certificate_for_unit",
        "record_step",
        "finish_unit",
        "unit_work_order",
        "unit",
        "record_soc_id",
        "unit_soc_id",
        "identity_conflicts",
    }
)
# Questions a worker may ask the fleet (station.fleet.guard.FleetGuard).
_FLEET_CALLS = frozenset({"check_unit", "public_key_holder"})


@dataclass(frozen=True)
class UnitJob:
    """One board to provision: what the technician scanned (or the manifest lists) and how to start it."""

    serial: str
    device: str
    profile: DeviceProfile
    operator: str
    fixture: str | None = None
    batch: str | None = None
    resume: bool = False
    restart: bool = False
    reprovision_reason: str | None = None
    # The work order the board is built for (None: the open order holding the serial, if any).
    order: str | None = None
    # Device output as "output" events (a log pane shows it; a batch tile has no room for it).
    stream_output: bool = True


@dataclass
class _Running:
    job_id: int
    job: UnitJob
    unit_id: int
    plan: tuple[str, ...]
    process: BaseProcess
    connection: Connection
    began: float
    deadline: float
    step: str = ""
    last_step: str = ""
    attempt: int = 1
    step_started_at: datetime | None = None
    done: Done | None = None
    done_at: float | None = None
    reported: bool = False  # the worker has sent something: it is up
    cancelled: bool = False
    parked: Call | None = None
    parked_until: float = 0.0
    tls_ports: set[int] = field(default_factory=set)
    poller: select.poll | None = None  # its pipe, for "is another message there?" (see _read_ready)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    # Held by the service desk while it serves one of the unit's calls, and by the engine thread while it
    # takes the unit off its slot: a call is served wholly before the unit's end is recorded, or refused.
    serve_lock: threading.Lock = field(default_factory=threading.Lock)
