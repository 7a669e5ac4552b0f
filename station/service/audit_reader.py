"""What the window's audit tab reads through: :class:`AuditReader`, answered by the station service
(:class:`ServiceAuditReader`, the window on a line PC: no access to the home needed) or, for a window running
its own units (``STATION_IN_PROCESS=1``, outside production mode), by the audit log itself
(:class:`LocalAuditReader`).  Both answer with the audit log's own record types, rebuilt and checked from the
service's answers (:mod:`station.service.audit_wire`), and both apply the same technician scope
(:mod:`station.service.audit_reads`: this station's most recent units).

Every call blocks (a socket round trip with a deadline, or SQL): callers run them off the GUI thread.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from station.audit import AuditLog, Unit, UnitFilter, YieldSummary
from station.errors import StationError
from station.roles import Role
from station.service.audit_reads import RECENT_UNITS, read_unit_detail, recent_page
from station.service.audit_wire import (
    NAME_CAP,
    PAGE_CAP,
    MalformedAnswer,
    UnitDetail,
    detail_from_wire,
    filter_to_args,
    units_from_wire,
    yield_from_wire,
)
from station.service.client import ServiceClient, ServiceRefused, ServiceUnavailable, connect
from station.service.frames import FrameError

__all__ = [
    "READ_DEADLINE_S",
    "AuditReader",
    "ExportedFile",
    "LocalAuditReader",
    "Revoked",
    "ServiceAuditReader",
    "UnitDetail",
]

# How long one read may take before the window says the service is slow (a page, a unit: milliseconds; the
# yield of a large log: seconds).
READ_DEADLINE_S = 20.0
# An export or a revocation (a PDF report of a whole log takes a while).
EXPORT_DEADLINE_S = 120.0
# The largest export the window takes from the service.
EXPORT_CAP_BYTES = 256 * 1024 * 1024
# Idle connections kept for the next read (the view reads on at most two threads).
IDLE_CONNECTIONS = 2
KIOSK_HINT = (
    " — or a quality lead signs in at this window (Sign in as quality lead…): that session lets the window "
    "read the whole audit log"
)


@dataclass(frozen=True)
class ExportedFile:
    """An export made by whoever owns the audit log, as bytes for the window to write (0640)."""

    data: bytes
    units: int
    pages: int | None


@dataclass(frozen=True)
class Revoked:
    """A revocation made: the certificate, its unit, and who the record names as revoking it."""

    serial_hex: str
    unit_id: int
    by: str


class AuditReader(Protocol):
    """The reads (and the two quality-lead actions) the audit tab makes.  ``recent=True``: a technician's
    scope — this station's most recent units only."""

    def units_page(
        self,
        *,
        offset: int,
        limit: int,
        order_by: str = "id",
        descending: bool = True,
        filters: UnitFilter,
        recent: bool = False,
    ) -> list[Unit]: ...

    def count_units(self, filters: UnitFilter, *, recent: bool = False) -> int: ...

    def unit_detail(self, unit_id: int, *, recent: bool = False) -> UnitDetail: ...

    def yield_summary(self, filters: UnitFilter) -> YieldSummary: ...

    def export(self, fmt: str, filters: UnitFilter, *, station: str) -> ExportedFile: ...

    def revoke(self, *, serial: str, reason: str, by: str) -> Revoked: ...

    def served_station(self) -> str | None:
        """The station whose recent units a technician's reads cover (the log owner's ``[station] name``), once
        known."""
        ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------- the service


class ServiceAuditReader:
    """The audit tab's reads, asked of the station service.

    ``connector`` opens a connection (it may start a per-user service outside production mode, as the CLI does);
    ``session`` gives the kiosk session token of a person signed in at this window (None: the OS account's own
    role), sent with every request so the service grants that person's role.  Connections are kept for the next
    read and dropped on any error; every call has a deadline.  Safe to call from several threads.
    """

    def __init__(
        self,
        connector: Callable[[], ServiceClient],
        *,
        session: Callable[[], str | None] | None = None,
        read_deadline_s: float = READ_DEADLINE_S,
    ) -> None:
        self._connector = connector
        self._session = session or (lambda: None)
        self.read_deadline_s = read_deadline_s
        self._idle: list[ServiceClient] = []
        # Connections a read is waiting on: close() interrupts them (exports and revocations are left to finish).
        self._reading: set[ServiceClient] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._station: str | None = None

    @classmethod
    def for_home(
        cls,
        home: str | None,
        socket: str | None = None,
        *,
        session: Callable[[], str | None] | None = None,
        start: bool = True,
    ) -> ServiceAuditReader:
        """A reader of the service of ``home`` (or of ``socket``): the system service's socket on a line PC, else
        the home's per-user one, started for this account when none answers and ``start`` (outside production
        mode)."""

        def connector() -> ServiceClient:
            client = connect(home, socket, start=start)
            if client is None:
                raise ServiceUnavailable(
                    "no station service answers for this window — start it (systemctl start welma-station on "
                    "a line PC, or any `station` command on a demo home), then press Refresh"
                )
            return client

        return cls(connector, session=session)

    # -- the reads --------------------------------------------------------------------------------------

    def units_page(
        self,
        *,
        offset: int,
        limit: int,
        order_by: str = "id",
        descending: bool = True,
        filters: UnitFilter,
        recent: bool = False,
    ) -> list[Unit]:
        args = {**filter_to_args(filters), "offset": offset, "limit": min(limit, PAGE_CAP)}
        if recent:
            return units_from_wire(self._recent(args), cap=RECENT_UNITS)
        args.update(order_by=order_by, descending=descending)
        return units_from_wire(self._ask("audit_units", args))

    def count_units(self, filters: UnitFilter, *, recent: bool = False) -> int:
        if recent:
            answer = self._recent({**filter_to_args(filters), "offset": 0, "limit": 1})
        else:
            answer = self._ask("audit_count", filter_to_args(filters))
        count = answer.get("count") if isinstance(answer, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise MalformedAnswer(
                "the station service's count is not a whole number — is it the same version?"
            )
        return count

    def unit_detail(self, unit_id: int, *, recent: bool = False) -> UnitDetail:
        return detail_from_wire(self._ask("recent_unit" if recent else "audit_unit", {"unit": unit_id}))

    def yield_summary(self, filters: UnitFilter) -> YieldSummary:
        scope = UnitFilter(since=filters.since, until=filters.until, batch=filters.batch, order=filters.order)
        return yield_from_wire(self._ask("audit_yield", filter_to_args(scope)))

    def export(self, fmt: str, filters: UnitFilter, *, station: str) -> ExportedFile:
        """An export made by the service (``audit_export``: it records which account asked) and sent back in
        chunks; the caller writes the file (:func:`station.outputs.save_output`, 0640)."""
        from station.cli.served import received_file

        with self._client() as client:
            answer = self._call(
                client, "audit_export", {**filter_to_args(filters), "format": fmt}, EXPORT_DEADLINE_S
            )
            if not isinstance(answer, dict) or not isinstance(answer.get("chunks"), int):
                raise MalformedAnswer(
                    "the station service's export answer is malformed — is it the same version?"
                )
            size = answer.get("size")
            if not isinstance(size, int) or not 0 <= size <= EXPORT_CAP_BYTES:
                raise StationError(
                    f"the export is {size} bytes — more than this window takes ({EXPORT_CAP_BYTES // 2**20} MiB); "
                    "narrow the filters (a batch, a date range) and export again"
                )
            data = received_file(client, answer, what="export")
        pages = answer.get("pages")
        return ExportedFile(
            data=data, units=int(answer.get("units") or 0), pages=pages if isinstance(pages, int) else None
        )

    def revoke(self, *, serial: str, reason: str, by: str) -> Revoked:
        answer = self._ask("revoke", {"serial": serial, "reason": reason, "by": by}, EXPORT_DEADLINE_S)
        if not isinstance(answer, dict):
            raise MalformedAnswer("the station service's revocation answer is malformed")
        return Revoked(
            serial_hex=str(answer.get("serial_hex") or "")[:256],
            unit_id=int(answer.get("unit_id") or 0),
            by=str(answer.get("by") or "")[:256],
        )

    def served_station(self) -> str | None:
        return self._station

    def _recent(self, args: dict[str, Any]) -> Any:
        answer = self._ask("recent_units", args)
        station = answer.get("station") if isinstance(answer, dict) else None
        if isinstance(station, str) and station.isprintable():
            self._station = station[:NAME_CAP]
        return answer

    def close(self) -> None:
        """Close the idle connections and interrupt the reads waiting on others (they end at once, failed); an
        export or a revocation under way is left to finish."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            reading = list(self._reading)
        for client in idle:
            client.close()
        for client in reading:
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_RDWR)

    # -- the socket -------------------------------------------------------------------------------------

    def _ask(self, op: str, args: dict[str, Any], deadline_s: float | None = None) -> Any:
        with self._client(interruptible=deadline_s is None) as client:
            return self._call(client, op, args, deadline_s or self.read_deadline_s)

    def _call(self, client: ServiceClient, op: str, args: dict[str, Any], deadline_s: float) -> Any:
        token = self._session()
        if token:
            args = {**args, "session": token}
        try:
            answer = client.call(op, args, deadline_s=deadline_s)
        except ServiceRefused as exc:
            text = str(exc)
            if Role.QUALITY.value in text and "sign" not in text:
                text += KIOSK_HINT
            raise ServiceRefused(text) from None
        if isinstance(answer, dict) and isinstance(answer.get("refused"), str):
            raise ServiceRefused(answer["refused"][:2000])
        return answer

    @contextlib.contextmanager
    def _client(self, *, interruptible: bool = False) -> Iterator[ServiceClient]:
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("the audit view is closing")
            client = self._idle.pop() if self._idle else None
        if client is None:
            try:
                client = self._connector()
            except OSError as exc:
                raise ServiceUnavailable(
                    f"the station service does not answer ({exc.strerror or exc}) — check that it runs "
                    "(systemctl status welma-station), then press Refresh"
                ) from None
        healthy = False
        if interruptible:
            with self._lock:
                # close() may have run while this connected: it could not interrupt a read it did not see.
                closing = self._closed
                if not closing:
                    self._reading.add(client)
            if closing:
                client.close()
                raise ServiceUnavailable("the audit view is closing")
        try:
            yield client
            healthy = True
        except (FrameError, OSError) as exc:
            raise ServiceUnavailable(
                f"the connection to the station service broke ({exc}) — check that it runs, then press Refresh"
            ) from None
        except ServiceRefused:
            healthy = True  # a refusal is an answer: the connection is fine
            raise
        # (Any other error drops the connection: after a missed deadline, a late answer would be taken for the
        # next request's.)
        finally:
            with self._lock:
                self._reading.discard(client)
                keep = healthy and not self._closed and len(self._idle) < IDLE_CONNECTIONS
                if keep:
                    self._idle.append(client)
            if not keep:
                client.close()


# ------------------------------------------------------------------------------------------- in process


class LocalAuditReader:
    """The same reads from an audit log this process opened (a window running its own units, tests)."""

    def __init__(self, audit: AuditLog, *, station: str) -> None:
        self.audit = audit
        self.station = station

    def units_page(
        self,
        *,
        offset: int,
        limit: int,
        order_by: str = "id",
        descending: bool = True,
        filters: UnitFilter,
        recent: bool = False,
    ) -> list[Unit]:
        if recent:
            page, _count = recent_page(self.audit, self.station, filters, offset=offset, limit=limit)
            return page
        return self.audit.units_page(
            offset=offset,
            limit=min(limit, PAGE_CAP),
            order_by=order_by,
            descending=descending,
            filters=filters,
        )

    def count_units(self, filters: UnitFilter, *, recent: bool = False) -> int:
        if recent:
            return recent_page(self.audit, self.station, filters, offset=0, limit=1)[1]
        return self.audit.count_units(filters)

    def unit_detail(self, unit_id: int, *, recent: bool = False) -> UnitDetail:
        if recent:
            page, _count = recent_page(self.audit, self.station, UnitFilter(), offset=0, limit=RECENT_UNITS)
            if unit_id not in {unit.id for unit in page}:
                raise ServiceRefused(
                    f"unit {unit_id} is not among the {RECENT_UNITS} most recent units of {self.station}: a "
                    f"technician's audit tab shows those only (the rest needs the {Role.QUALITY.words} role)"
                )
        return read_unit_detail(self.audit, unit_id)

    def yield_summary(self, filters: UnitFilter) -> YieldSummary:
        return self.audit.yield_summary(
            since=filters.since, until=filters.until, batch=filters.batch, order=filters.order
        )

    def export(self, fmt: str, filters: UnitFilter, *, station: str) -> ExportedFile:
        from station.report import export_to_file

        scratch = Path(tempfile.mkdtemp(prefix="station-export-"))
        try:
            written = export_to_file(
                self.audit, scratch / f"export.{fmt}", fmt=fmt, filters=filters, station=station
            )
            return ExportedFile(data=written.path.read_bytes(), units=written.units, pages=written.pages)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def revoke(self, *, serial: str, reason: str, by: str) -> Revoked:
        record = self.audit.revoke(serial=serial, reason=reason, by=by)
        return Revoked(serial_hex=record.serial_hex, unit_id=record.unit_id, by=by)

    def served_station(self) -> str | None:
        return self.station

    def close(self) -> None:
        pass
