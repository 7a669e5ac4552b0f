"""What the line does with a unit once it has finished: print its label (``[label] print_on_pass``) and hand
its record to the MES.  :meth:`LineHandOff.unit_finished` is called from one place, where a unit's end is
recorded (station.flow), and returns at once: the MES record is in the durable outbox before it returns, the
label is printed by the hand-off's own thread, so a slow or absent printer never holds up a unit.

Whoever watches (the GUI's status bar, the CLI) learns the outcome through ``notify`` — in words.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from station.audit import AuditLog, Unit
from station.config import StationConfig
from station.home import StationHome
from station.identity_log import IdentityLog
from station.line.labels import LabelDesk, PrintOutcome
from station.line.mes import MesHandOff
from station.states import UnitState

Notify = Callable[[str], None]


class LineHandOff:
    """Label printer and MES hand-off of one station, fed with every finished unit."""

    def __init__(
        self, *, config: StationConfig, home: StationHome, audit: AuditLog, notify: Notify | None = None
    ) -> None:
        self.config = config
        self.audit = audit
        self.labels = LabelDesk(config=config, audit=audit)
        self.mes = MesHandOff(config.mes, home.root / "mes", notify=self._notify)
        self.notify: Notify = notify or (lambda message: None)
        self.printed: Callable[[PrintOutcome], None] = lambda outcome: None
        self._jobs: queue.Queue[tuple[int, str, bool] | None] = queue.Queue()
        self._printer_thread: threading.Thread | None = None
        self.mes.start()

    def _notify(self, message: str) -> None:
        try:
            self.notify(message)
        except Exception:  # noqa: BLE001 - a broken watcher must never stop the hand-off
            pass

    def unit_finished(self, unit: Unit) -> None:
        """The unit has ended (passed, failed or aborted): queue its label and its MES record."""
        try:
            identity = IdentityLog(self.audit).soc_id_of(unit.id) if self.mes.configured else None
            self.mes.unit_finished(unit, soc_id=identity.soc_id if identity else None)
        except OSError as exc:
            self._notify(
                f"MES record of board {unit.serial} could not be kept ({exc.strerror or exc}) — "
                "free disk space in the station home"
            )
        if unit.state == UnitState.PASSED and self.config.label.print_on_pass and self.labels.configured:
            self.request_print(unit.id, by=unit.operator, reprint=False)

    def request_print(self, unit_id: int, *, by: str, reprint: bool) -> None:
        """Print (or reprint) a unit's label on the hand-off's thread; the outcome goes to ``printed``."""
        if self._printer_thread is None:
            self._printer_thread = threading.Thread(
                target=self._print_loop, name="label-printer", daemon=True
            )
            self._printer_thread.start()
        self._jobs.put((unit_id, by, reprint))

    def _print_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            unit_id, by, reprint = job
            try:
                outcome = self.labels.print_unit(unit_id, by=by, reprint=reprint)
            except Exception as exc:  # noqa: BLE001 - told, never lost in a dead thread
                outcome = PrintOutcome("?", False, f"label of unit {unit_id} not printed: {exc}")
            self._notify(outcome.message)
            try:
                self.printed(outcome)
            except Exception:  # noqa: BLE001
                pass
            self._jobs.task_done()

    def wait_printed(self, timeout_s: float) -> bool:
        """For tests and shutdown: whether every queued label was handled within ``timeout_s``."""
        done = threading.Event()

        def wait() -> None:
            self._jobs.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout_s)

    def close(self) -> None:
        self._jobs.put(None)
        if self._printer_thread is not None:
            self._printer_thread.join(self.config.label.timeout_s * 2 + 1)
        self.mes.stop()
