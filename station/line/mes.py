"""Handing every finished unit to the plant's MES: a JSON record POSTed to an HTTP endpoint and/or written
to a drop folder (``[mes] url``, ``[mes] drop_folder``).

Nothing is lost and nothing overtakes: each record is first written durably to a local outbox (one file per
record and destination, fsynced, named in the order the units finished — ``HOME/mes/outbox-http``,
``HOME/mes/outbox-folder``), then a sender thread delivers the oldest one, and only removes it once the
destination took it (HTTP 2xx, or the file renamed into the drop folder).  A MES that is down, refuses, or
hangs past ``[mes] timeout_s`` is retried every ``[mes] retry_s`` (doubling up to a minute) — the same record
first, so records arrive in order; a station restarted meanwhile picks the outbox up where it was.

One sender per outbox, whoever starts what: the sender holds an exclusive lock on the outbox
(``sender.lock``, flock).  Another process of the same station (the window beside the station service, a
command run with STATION_IN_PROCESS=1) still puts its records in the outbox, durably, but does not send: it
says which process sends, and takes over only once that one stopped — so no record is sent by two senders.

Each record carries a ``record_id`` (also sent as the ``Idempotency-Key`` header): if the MES took a record
but its answer was lost, the retry carries the same id, so the MES can tell a repeat from a new unit.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from station.audit import Unit
from station.config import MesSettings
from station.errors import StationError
from station.files import fsync_directory, write_file_atomically
from station.states import UnitState

RECORD_FORMAT = "welma-station/unit-finished/1"
MAX_RETRY_S = 60.0
# The lock the one sender of an outbox holds (its content: the sender's pid, for what a second one says).
SENDER_LOCK = "sender.lock"
# How often an idle sender looks for records another process put, and a standby one for a free lock.
IDLE_POLL_S = 1.0


@dataclass(frozen=True)
class FinishedUnitRecord:
    """What the MES learns of one finished unit."""

    format: str
    record_id: str
    unit_id: int
    serial: str
    soc_id: str | None
    result: str
    failed_step: str | None
    message: str | None
    certificate_serial: str | None
    certificate_fingerprint: str | None
    started_at: str
    ended_at: str | None
    duration_s: float | None
    station: str
    operator: str
    profile: str
    fixture: str | None
    batch: str | None
    attempt: int

    @classmethod
    def of(cls, unit: Unit, *, soc_id: str | None = None) -> FinishedUnitRecord:
        return cls(
            format=RECORD_FORMAT,
            record_id=str(uuid.uuid4()),
            unit_id=unit.id,
            serial=unit.serial,
            soc_id=soc_id,
            result=unit.state,
            failed_step=unit.failed_step,
            message=unit.message,
            certificate_serial=unit.certificate_serial if unit.state == UnitState.PASSED else None,
            certificate_fingerprint=unit.certificate_fingerprint if unit.state == UnitState.PASSED else None,
            started_at=unit.started_at.isoformat(),
            ended_at=unit.ended_at.isoformat() if unit.ended_at else None,
            duration_s=unit.duration_s,
            station=unit.station,
            operator=unit.operator,
            profile=unit.profile,
            fixture=unit.fixture,
            batch=unit.batch,
            attempt=unit.attempt,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8") + b"\n"


class DeliveryFailed(StationError):
    """A destination did not take a record this time (it stays in the outbox and is retried)."""


Deliver = Callable[[str, bytes], None]  # (file name, record) -> None, or raises DeliveryFailed


class Outbox:
    """A durable, ordered queue of records for one destination, drained by one sender thread."""

    def __init__(
        self,
        folder: Path,
        deliver: Deliver,
        *,
        name: str,
        retry_s: float,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.folder = folder
        self.name = name
        self.deliver = deliver
        self.retry_s = retry_s
        self.notify = notify or (lambda message: None)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last = 0
        self._thread: threading.Thread | None = None
        self.last_problem: str | None = None
        # Whether this process is the outbox's one sender (holds SENDER_LOCK).
        self.sending = False
        self._lock_fd: int | None = None

    def put(self, record_name: str, data: bytes) -> Path:
        """Keep ``data`` durably (fsynced) before returning; the sender delivers it later."""
        with self._lock:
            # Names sort in the order records were put, across restarts too (the clock only moves on).
            stamp = max(time.time_ns(), self._last + 1, self._newest_stamp() + 1)
            self._last = stamp
            path = self.folder / f"{stamp:020d}-{_safe(record_name)}.json"
            write_file_atomically(path, data, mode=0o600, replace=False)
        self._wake.set()
        return path

    def pending(self) -> list[Path]:
        return sorted(self.folder.glob("[0-9]*.json"))

    def start(self) -> None:
        """Start this outbox's sender if no other process sends it; else say who does and stand by."""
        if self._thread is None:
            self.sending = self._take_sender_lock()
            if not self.sending:
                self.notify(
                    f"MES {self.name}: {self._holder()} already sends the records of {self.folder}; this "
                    "process keeps its records there for it, and sends them only if that one stops"
                )
            self._thread = threading.Thread(target=self._run, name=f"mes-{self.name}", daemon=True)
            self._thread.start()

    def _take_sender_lock(self) -> bool:
        """Become the outbox's one sender, if no other holds its lock (never blocks)."""
        if self._lock_fd is None:
            self._lock_fd = os.open(self.folder / SENDER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return True

    def _release_sender_lock(self) -> None:
        if self._lock_fd is not None:
            # LOCK_UN frees the lock itself, even where a forked child still holds a copy of the descriptor.
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        self.sending = False

    def _holder(self) -> str:
        try:
            pid = (self.folder / SENDER_LOCK).read_text(encoding="ascii").strip()
        except OSError:
            pid = ""
        return f"process {pid}" if pid.isdigit() else "another process"

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def drain_once(self) -> bool:
        """Deliver pending records oldest first until one fails; True if the outbox is now empty."""
        for path in self.pending():
            if self._stop.is_set():
                return False
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                self.deliver(path.name, data)
            except DeliveryFailed as exc:
                if self.last_problem != str(exc):
                    self.notify(f"MES {self.name}: {exc} — {len(self.pending())} record(s) kept, retrying")
                self.last_problem = str(exc)
                return False
            path.unlink()
            fsync_directory(self.folder)
            if self.last_problem is not None:
                self.last_problem = None
                self.notify(f"MES {self.name}: delivering again")
        return True

    def _run(self) -> None:
        delay = self.retry_s
        try:
            while not self._stop.is_set():
                self._wake.clear()
                if not self.sending:
                    if not self._take_sender_lock():
                        self._wake.wait(IDLE_POLL_S)  # standing by: the sender is another process
                        continue
                    self.sending = True
                    self.notify(
                        f"MES {self.name}: the other sender stopped; this process sends {self.folder}"
                    )
                if self.drain_once():
                    delay = self.retry_s
                    # Records another process put come without a wake-up: look again after a while.
                    self._wake.wait(IDLE_POLL_S)
                else:
                    self._wake.wait(delay)
                    delay = min(MAX_RETRY_S, delay * 2)
        finally:
            # Released only once this thread no longer sends (a stop that timed out mid-delivery keeps it).
            self._release_sender_lock()

    def _newest_stamp(self) -> int:
        names = self.pending()
        return int(names[-1].name.split("-", 1)[0]) if names else 0


def http_delivery(url: str, *, timeout_s: float) -> Deliver:
    def deliver(_name: str, data: bytes) -> None:
        record_id = json.loads(data).get("record_id", "")
        request = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": record_id},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) only
                response.read(4096)
        except urllib.error.HTTPError as exc:
            raise DeliveryFailed(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
                raise DeliveryFailed(f"{url} did not answer within {timeout_s:g} s") from exc
            raise DeliveryFailed(f"{url} cannot be reached ({reason})") from exc

    return deliver


def folder_delivery(folder: Path) -> Deliver:
    def deliver(name: str, data: bytes) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Atomic: the MES' folder watcher sees the whole file or none of it (a temporary dot-file, renamed).
            write_file_atomically(folder / name, data, mode=0o644, replace=True)
        except OSError as exc:
            raise DeliveryFailed(f"cannot write to the drop folder {folder} ({exc.strerror or exc})") from exc

    return deliver


class MesHandOff:
    """Every finished unit's record, to each configured destination through its own outbox."""

    def __init__(
        self, settings: MesSettings, state_dir: Path, *, notify: Callable[[str], None] | None = None
    ) -> None:
        self.outboxes: list[Outbox] = []
        if settings.url:
            self.outboxes.append(
                Outbox(
                    state_dir / "outbox-http",
                    http_delivery(settings.url, timeout_s=settings.timeout_s),
                    name=settings.url,
                    retry_s=settings.retry_s,
                    notify=notify,
                )
            )
        if settings.drop_folder:
            self.outboxes.append(
                Outbox(
                    state_dir / "outbox-folder",
                    folder_delivery(Path(settings.drop_folder)),
                    name=settings.drop_folder,
                    retry_s=settings.retry_s,
                    notify=notify,
                )
            )

    @property
    def configured(self) -> bool:
        return bool(self.outboxes)

    def start(self) -> None:
        for outbox in self.outboxes:
            outbox.start()

    def stop(self) -> None:
        for outbox in self.outboxes:
            outbox.stop()

    def unit_finished(self, unit: Unit, *, soc_id: str | None = None) -> FinishedUnitRecord | None:
        if not self.outboxes:
            return None
        record = FinishedUnitRecord.of(unit, soc_id=soc_id)
        data = record.to_json()
        for outbox in self.outboxes:
            outbox.put(f"unit-{unit.id}-{unit.serial}", data)
        return record

    def pending(self) -> int:
        return sum(len(outbox.pending()) for outbox in self.outboxes)

    def wait_delivered(self, timeout_s: float) -> bool:
        """Give the senders up to ``timeout_s`` to empty the outboxes (a command line about to exit)."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() >= deadline or any(outbox.last_problem for outbox in self.outboxes):
                return False
            time.sleep(0.05)
        return True


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
