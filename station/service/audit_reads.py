"""The window's audit tab, served: pages of units, one unit's detail, counts and the yield, read by the station
service (the only process that opens the audit log) for a window that needs no access to the station home.

Two scopes, each its own requests in the role table (:mod:`station.service.ops`):

* **The audit log at large** — quality lead (``welma-quality``), or a kiosk session of one: ``audit_units`` (a
  page of the units matching a filter, sorted on an indexed column), ``audit_count``, ``audit_unit`` (a unit's
  record, steps, certificate, work order and SoC identity) and ``audit_yield``.  Exports go through
  ``audit_export`` and revocations through ``revoke``, as from the command line.
* **This station's recent units** — technician (``welma-tech``): ``recent_units`` and ``recent_unit``.  They
  cover the :data:`RECENT_UNITS` most recent units started at this station (the service's ``[station] name``),
  newest first: the filter bar narrows within them, and a unit's detail is shown for them only.  Refused (and
  recorded, naming the quality lead role and how to get it): another station's units, and any unit that is not
  among those.  Sorting, counting the whole log, the yield, exports and revocation are the quality lead's
  requests, refused by the role table itself.

``label_prints`` (technician) gives a unit's newest label prints, for the history beside the window's "Reprint
label": a technician's for this station's recent units as above, a quality lead's (or a kiosk session of one)
for any unit.

Reads are not recorded when allowed (paging the table would fill the journal); every refusal is.  Filters are
checked here (:func:`station.service.audit_wire.filter_from_args`) and answers bounded (a page holds at most
:data:`~station.service.audit_wire.PAGE_CAP` units, texts are cut) before they leave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from station.audit import AuditLog, Unit, UnitFilter
from station.audit.queries import UNIT_SORT_KEYS
from station.errors import StationError
from station.identity_log import IdentityLog
from station.roles import Role, allowed
from station.service.audit_wire import (
    LABEL_PRINTS_CAP,
    BadRequest,
    UnitDetail,
    detail_to_wire,
    filter_from_args,
    label_history_to_wire,
    page_bounds,
    unit_to_wire,
    yield_to_wire,
)

if TYPE_CHECKING:
    from station.service.server import Connection, StationService

# How many of this station's most recent units a technician's audit tab covers.
RECENT_UNITS = 50

Handler = Callable[["Connection", dict[str, Any]], Any]


def read_unit_detail(audit: AuditLog, unit_id: int) -> UnitDetail:
    """One unit as the audit view shows it (each read indexed by the unit id)."""
    unit = audit.unit(unit_id)
    return UnitDetail(
        unit=unit,
        steps=tuple(audit.steps(unit_id)),
        certificate=audit.certificate_for_unit(unit_id),
        order=audit.orders.order_of_unit(unit_id),
        identity=IdentityLog(audit).soc_id_of(unit_id),
    )


def recent_window(audit: AuditLog, station: str) -> int | None:
    """The id of the oldest of ``station``'s RECENT_UNITS most recent units (None: it has none yet)."""
    newest = audit.units_page(limit=RECENT_UNITS, filters=UnitFilter(station=station))
    return min((unit.id for unit in newest), default=None)


def recent_page(
    audit: AuditLog, station: str, filters: UnitFilter, *, offset: int, limit: int
) -> tuple[list[Any], int]:
    """(the page, how many in all) of ``station``'s recent units matching ``filters``, newest first."""
    oldest = recent_window(audit, station)
    if oldest is None:
        return [], 0
    # Newest first, so the matches inside the window are the first rows of the station's matches.
    matching = [
        unit
        for unit in audit.units_page(limit=RECENT_UNITS, filters=replace(filters, station=station))
        if unit.id >= oldest
    ]
    return matching[offset : offset + limit], len(matching)


def _unit_id(args: dict[str, Any]) -> int:
    value = args.get("unit")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"unit must be a unit number (a whole number from 1), not {value!r}")
    return value


def _order(args: dict[str, Any]) -> tuple[str, bool]:
    order_by = args.get("order_by", "id")
    if order_by not in UNIT_SORT_KEYS:
        raise BadRequest(f"order_by must be one of {', '.join(UNIT_SORT_KEYS)}, not {order_by!r}"[:300])
    descending = args.get("descending", True)
    if not isinstance(descending, bool):
        raise BadRequest("descending must be true or false")
    return str(order_by), descending


class AuditReads:
    """The audit tab's requests, answered from the service's audit log."""

    def __init__(self, service: StationService) -> None:
        self.service = service

    @property
    def audit(self) -> AuditLog:
        log: AuditLog = self.service.station.audit
        return log

    @property
    def station(self) -> str:
        return str(self.service.config.name)

    # -- the audit log at large (quality lead) ----------------------------------------------------------------

    def units(self, conn: Connection, args: dict[str, Any]) -> Any:
        filters = filter_from_args(args)
        offset, limit = page_bounds(args)
        order_by, descending = _order(args)
        page = self.audit.units_page(
            offset=offset, limit=limit, order_by=order_by, descending=descending, filters=filters
        )
        return {"units": [unit_to_wire(unit) for unit in page], "limit": limit}

    def count(self, conn: Connection, args: dict[str, Any]) -> Any:
        return {"count": self.audit.count_units(filter_from_args(args))}

    def unit(self, conn: Connection, args: dict[str, Any]) -> Any:
        return detail_to_wire(read_unit_detail(self.audit, _unit_id(args)))

    def yield_summary(self, conn: Connection, args: dict[str, Any]) -> Any:
        filters = filter_from_args(args)
        summary = self.audit.yield_summary(
            since=filters.since, until=filters.until, batch=filters.batch, order=filters.order
        )
        return yield_to_wire(summary)

    # -- this station's recent units (technician) ------------------------------------------------------------

    def recent_units(self, conn: Connection, args: dict[str, Any]) -> Any:
        filters = filter_from_args(args)
        if filters.station is not None and filters.station != self.station:
            return self._refuse(
                conn,
                args,
                "recent_units",
                f"view the units of station {filters.station}",
                {"station": filters.station},
            )
        offset, limit = page_bounds(args, cap=RECENT_UNITS)
        page, count = recent_page(self.audit, self.station, filters, offset=offset, limit=limit)
        return {
            "units": [unit_to_wire(unit) for unit in page],
            "count": count,
            "station": self.station,
            "recent": RECENT_UNITS,
        }

    def recent_unit(self, conn: Connection, args: dict[str, Any]) -> Any:
        unit_id = _unit_id(args)
        if self._recent(unit_id) is None:
            # (A unit that does not exist is refused the same way: a technician learns nothing of the log.)
            return self._refuse(conn, args, "recent_unit", f"view unit {unit_id}", {"unit": unit_id})
        return detail_to_wire(read_unit_detail(self.audit, unit_id))

    def _recent(self, unit_id: int) -> Unit | None:
        """The unit, if it is one of this station's RECENT_UNITS most recent units (None otherwise, or if there is
        no such unit)."""
        oldest = recent_window(self.audit, self.station)
        try:
            unit = self.audit.unit(unit_id)
        except StationError:
            return None
        if unit.station != self.station or oldest is None or unit.id < oldest:
            return None
        return unit

    # -- a unit's label prints (the window's "Reprint label") --------------------------------------------------

    def label_prints(self, conn: Connection, args: dict[str, Any]) -> Any:
        """A unit's newest label prints (at most LABEL_PRINTS_CAP, oldest first; ``earlier`` says more were left
        out), for the history beside the window's "Reprint label".  Scoped like the audit tab: a technician's is
        this station's recent units (refused and recorded otherwise); a quality lead's — or a kiosk session of
        one — any unit."""
        unit_id = _unit_id(args)
        signed = args.get("_signed_in")
        roles = conn.roles | ({signed.role} if signed is not None else set())
        if allowed(roles, Role.QUALITY):
            try:
                unit: Unit | None = self.audit.unit(unit_id)
            except StationError:
                raise BadRequest(
                    f"there is no unit {unit_id} in the audit log — pick a unit the audit tab shows"
                ) from None
        else:
            unit = self._recent(unit_id)
            if unit is None:
                return self._refuse(
                    conn, args, "label_prints", f"view the label prints of unit {unit_id}", {"unit": unit_id}
                )
        assert unit is not None
        return label_history_to_wire(unit, self.audit.label_prints(unit_id, last=LABEL_PRINTS_CAP + 1))

    def _refuse(
        self, conn: Connection, args: dict[str, Any], op: str, what: str, detail: dict[str, Any]
    ) -> dict[str, Any]:
        """A technician's read outside this station's recent units: recorded, and answered with a refusal
        that names the role needed and how to get it."""
        signed = args.get("_signed_in")
        who = conn.caller.account + (f" (signed in: {signed.person})" if signed is not None else "")
        if signed is not None:
            detail = {**detail, "signed_in": signed.person}
        try:
            self.service.records.record_request(
                conn.caller, op=op, allowed=False, detail=detail, role_needed=Role.QUALITY.value
            )
        except StationError:
            pass  # the refusal stands; the service's log says the record failed
        roles = conn.roles | ({signed.role} if signed is not None else set())
        if allowed(roles, Role.QUALITY):
            # Someone who may read the whole log asked through the technician's scope: say so, not "may not".
            return {
                "refused": (
                    f"refused: {op} covers the {RECENT_UNITS} most recent units of {self.station} only (a technician's "
                    f"audit tab) — {who} reads the rest of the log as a {Role.QUALITY.words} (audit_units, audit_unit)"
                ),
                "role": Role.QUALITY.value,
            }
        return {
            "refused": (
                f"refused: {who} may not {what} — a technician's audit tab shows the {RECENT_UNITS} most recent "
                f"units of {self.station} only; the rest of the audit log needs the {Role.QUALITY.words} role "
                f"(OS group {Role.QUALITY.value}): a quality lead signs in at this window (Sign in as quality "
                "lead…), and that session lets the window read the whole log"
            ),
            "role": Role.QUALITY.value,
        }


def handlers(service: StationService) -> dict[str, Handler]:
    """The audit tab's requests (op name → handler); StationService merges them into its own."""
    reads = AuditReads(service)
    return {
        "audit_units": reads.units,
        "audit_count": reads.count,
        "audit_unit": reads.unit,
        "audit_yield": reads.yield_summary,
        "recent_units": reads.recent_units,
        "recent_unit": reads.recent_unit,
        "label_prints": reads.label_prints,
    }
