"""Printing a unit's label on the line's label printer (``[label] printer``), and recording it in the audit log.

One call, :meth:`LabelDesk.print_unit`, serves the automatic print on PASS and the reprint from the unit's
detail: it builds the label from what the audit log recorded (serial, certificate fingerprint, end date), asks
the printer for its status, sends the label if the printer is ready, and journals the attempt either way.  It
never raises for a printer problem — it returns the outcome in words, so a printer out of labels never stops
the unit, the batch or the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from station.audit import AuditLog, Unit
from station.config import StationConfig
from station.errors import StationError
from station.label import LabelContent, build_label, label_layout
from station.line.printer import open_printer
from station.line.zpl import ZplLabel, label_zpl
from station.states import UnitState


@dataclass(frozen=True)
class PrintOutcome:
    """What happened to one label: printed, or why not and what to do."""

    serial: str
    printed: bool
    message: str


def unit_label(unit: Unit) -> LabelContent:
    """The label content of a unit that passed, from what the audit log recorded."""
    if unit.state != UnitState.PASSED or not unit.certificate_fingerprint:
        raise StationError(
            f"board {unit.serial} has no label: unit {unit.id} is {unit.state} and holds no certificate — "
            "only a board that passed gets a label"
        )
    issued = (unit.ended_at or unit.started_at).astimezone().date()
    return build_label(unit.serial, unit.certificate_fingerprint, issued_on=issued)


def unit_zpl(unit: Unit, config: StationConfig) -> ZplLabel:
    return label_zpl(unit_label(unit), label_layout(config.label.stock), station=unit.station or config.name)


class LabelDesk:
    """The station's label printer, as the line configured it."""

    def __init__(self, *, config: StationConfig, audit: AuditLog) -> None:
        self.config = config
        self.audit = audit

    @property
    def configured(self) -> bool:
        return bool(self.config.label.printer)

    def print_unit(self, unit_id: int, *, by: str, reprint: bool = False) -> PrintOutcome:
        settings = self.config.label
        unit = self.audit.unit(unit_id)
        if not settings.printer:
            return PrintOutcome(
                unit.serial, False, "no label printer is configured — set [label] printer in station.toml"
            )
        try:
            document = unit_zpl(unit, self.config)
            printer = open_printer(settings.printer, timeout_s=settings.timeout_s)
            status = printer.status()
            if status.ready:
                printer.send(document.encode(), name=f"label-{unit.serial}")
                outcome = PrintOutcome(unit.serial, True, f"label {unit.serial} sent to {settings.printer}")
            else:
                outcome = PrintOutcome(
                    unit.serial,
                    False,
                    f"label {unit.serial} not printed: printer {settings.printer} is "
                    f"{'; '.join(status.problems)} — then reprint it from the unit's detail",
                )
        except StationError as exc:
            outcome = PrintOutcome(unit.serial, False, f"label {unit.serial} not printed: {exc}")
        self.audit.record_label_print(
            unit.id,
            by=by,
            printer=settings.printer,
            reprint=reprint,
            printed=outcome.printed,
            message=outcome.message,
        )
        return outcome
