"""The service desk: the station's answers to its units' calls, on a thread of their own, many units' audit
writes made durable by one disk flush.

The engine thread only moves messages (starts units, reads their pipes, forwards their progress, enforces
deadlines); the calls that cost — audit writes, certificate signing, opening a TLS proof's listener — wait
here in arrival order.  The desk takes every call waiting (up to :data:`GROUP_MAX`), runs them one after
another with their commits not waiting for the disk (:meth:`station.audit.AuditLog.grouped_commits`), then
flushes the audit log once (:meth:`~station.audit.AuditLog.make_durable`) and only then answers the writes: every answer
— a certificate above all — leaves the station after the records it depends on are on disk, as one
``synchronous=FULL`` commit per call did, for one flush per group instead of one per call.  If that flush
fails, every write of the group is refused (the units fail the step and can be retried); nothing is sent.
Calls that need no flush (reads, step records, opening a listener: :data:`UNFLUSHED_CALLS`) are answered as
soon as they are computed, without waiting for the group's other calls or its flush.

A unit's own calls are answered in its order (a worker waits for each answer before it calls again).  A
*posted* call (``Call.answer`` False: a step record, which needs no flush and returns nothing) is served in
that same order but answered only if refused, so a unit's worker does not wait a round trip for each of its
step records; the unit's next call is served after it, whatever thread of the station it reaches.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from station.audit import AuditLog
from station.engine.protocol import Call, Refusal, Reply
from station.errors import StationError

Unit = TypeVar("Unit")

# Calls answered in one group at most (a burst of 64 units' certificates is two flushes, not 64).
GROUP_MAX = 32
# Calls whose answer needs no flush: reads, opening a listener, and step records (their loss in a power cut
# costs nothing: the unit resumes from an earlier step; the next flush writes them too).
UNFLUSHED_CALLS = frozenset(
    {
        ("audit", "public_key_seen"),
        ("audit", "certificate_for_unit"),
        ("audit", "unit"),
        ("audit", "unit_work_order"),
        ("audit", "unit_soc_id"),
        ("audit", "identity_conflicts"),
        ("audit", "record_step"),
        ("tls", "listen"),
    }
)


class ServiceDesk(Generic[Unit]):
    """Answers ``(unit, call)`` pairs on its own thread: ``answer(unit, call)`` computes the answer (raising
    StationError for a refusal), ``send(unit, message)`` delivers it."""

    def __init__(
        self, audit: AuditLog, answer: Callable[[Unit, Call], object], send: Callable[[Unit, object], None]
    ) -> None:
        self._audit = audit
        self._answer = answer
        self._send = send
        self._calls: queue.SimpleQueue[tuple[Unit, Call] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="engine-services", daemon=True)
        self._thread.start()

    def put(self, unit: Unit, call: Call) -> None:
        self._calls.put((unit, call))

    def close(self, timeout_s: float) -> None:
        """Answer what is queued, then stop (bounded by ``timeout_s``)."""
        self._calls.put(None)
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            first = self._calls.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < GROUP_MAX:
                try:
                    item = self._calls.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._serve(group)
            if stop:
                return

    def _serve(self, group: list[tuple[Unit, Call]]) -> None:
        answers: list[tuple[Unit, Call, Reply | Refusal]] = []
        with self._audit.grouped_commits():
            for unit, call in group:
                answer = self._answer_one(unit, call)
                if (call.service, call.method) in UNFLUSHED_CALLS:
                    # Depends on no flush: answered at once, not after the rest of the group and its flush (a
                    # unit's calls are one at a time, so what such a call reads of the unit's own records was
                    # made durable before that unit's earlier answers left).
                    if call.answer or isinstance(answer, Refusal):
                        self._send(unit, answer)
                else:
                    answers.append((unit, call, answer))
        if any(isinstance(answer, Reply) for _unit, _call, answer in answers):
            try:
                self._audit.make_durable()
            except Exception as exc:  # noqa: BLE001 - no answer that depends on the lost writes may leave
                problem = (
                    f"the station could not write the audit log to disk ({exc}) — nothing that depends "
                    "on it left the station; check the disk, then press Retry"
                )
                answers = [(unit, call, Refusal(call.number, problem)) for unit, call, _answer in answers]
        for unit, call, answer in answers:
            if call.answer or isinstance(answer, Refusal):  # a posted call hears back only a refusal
                self._send(unit, answer)

    def _answer_one(self, unit: Unit, call: Call) -> Reply | Refusal:
        try:
            return Reply(call.number, self._answer(unit, call))
        except StationError as exc:
            return Refusal(call.number, str(exc))
        except Exception as exc:  # noqa: BLE001 - the worker records its step failed with this
            return Refusal(
                call.number,
                f"the station could not serve {call.service}.{call.method} ({exc!r}) — "
                "press Retry; report it if it repeats",
            )
