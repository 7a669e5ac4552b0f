"""The board on the fixture: its SoC id and host key as the unit saw them, what the station verified itself
and what it only has the board's word for, and — on a simulated fixture — "Next board".

"Next board" puts a factory-fresh simulated board on the fixture (`station sim swap`: new SoC id, new host
key, empty storage), so a demo or a training session can enrol any number of boards from the window.  The
swap runs on the window's task pool; the GUI thread never waits for it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QGroupBox, QLabel, QPushButton, QVBoxLayout, QWidget

from station.config import Fixture
from station.flow import FlowEvent
from station.identity import Basis, render_claims, trust_summary
from station.sim.farm import Farm, SimDevice
from station.states import StepOutcome
from ui.bridge import Ending, TaskPool, UnitOutcome
from ui.session import Session

_SOC_ID = re.compile(r"^SoC unique id (\S+) \(")


class BoardIdentityPanel(QGroupBox):
    """Identity and trust of the last board, and the simulator's "Next board"."""

    board_swapped = Signal(object)  # SimDevice: a factory-fresh board is on the fixture

    def __init__(
        self,
        session: Session,
        pool: TaskPool,
        current_fixture: Callable[[], Fixture | None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Board identity", parent)
        self.session = session
        self.pool = pool
        self.current_fixture = current_fixture
        self.soc_id: str | None = None
        self.in_inventory = False
        self.attested = False
        self.passed_steps: list[str] = []
        self.outcome: UnitOutcome | None = None
        self.swapping = False
        layout = QVBoxLayout(self)
        self.text = QLabel(self)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setWordWrap(True)
        self.text.setAccessibleName("Board identity")
        layout.addWidget(self.text)
        self.next_button = QPushButton("&Next board — a factory-fresh simulated board (F7)", self)
        self.next_button.setMinimumHeight(36)
        self.next_button.setVisible(False)
        self.next_button.clicked.connect(self.next_board)
        layout.addWidget(self.next_button)
        shortcut = QShortcut(QKeySequence("F7"), self)
        shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
        shortcut.activated.connect(self.next_board)
        notes = [html.escape(note) for note in session.startup_notes]
        self.text.setText(
            "<br>".join(f"⚠ {note}" for note in notes) or "The board's SoC id shows here once it is read."
        )

    # -- what the unit saw -------------------------------------------------------------------

    def on_event(self, event: FlowEvent) -> None:
        if event.kind == "unit_started":
            self.soc_id, self.in_inventory, self.passed_steps, self.outcome = None, False, [], None
            self.attested = False
            self.next_button.setVisible(False)
            self.text.setText(f"Board {html.escape(event.serial)}: identifying…")
        elif event.kind == "output":
            match = _SOC_ID.match(event.message)
            if match:
                self.soc_id = match.group(1)
                self.text.setText(f"SoC unique id <b>{html.escape(self.soc_id)}</b> ({Basis.REPORTED})")
            elif event.message.startswith(f"{Basis.VERIFIED}: host key"):
                self.in_inventory = True
            elif event.message.startswith(f"{Basis.VERIFIED}: the token key is attested"):
                self.attested = True
        elif event.kind == "step_finished" and event.outcome == StepOutcome.PASSED:
            self.passed_steps.append(event.step)

    def on_finished(self, outcome: UnitOutcome) -> None:
        self.outcome = outcome
        claims = trust_summary(
            self.passed_steps,
            host_key_in_inventory=self.in_inventory,
            soc_id=self.soc_id,
            attested=self.attested,
        )
        self.setToolTip(render_claims(claims))  # the long form
        parts = []
        for basis, mark in ((Basis.VERIFIED, "✔"), (Basis.REPORTED, "☐")):
            shorts = [html.escape(claim.short) for claim in claims if claim.basis == basis]
            if shorts:
                parts.append(f"<b>{mark} {str(basis).capitalize()}:</b> {' · '.join(shorts)}")
        self.text.setText("<br>".join(parts) or "Nothing was learnt about this board.")
        self._offer_next_board()

    # -- the simulator's next board ----------------------------------------------------------

    def simulated_name(self, fixture: Fixture | None) -> str | None:
        """The simulated board behind ``fixture``, if it is one (never in production mode; the station service
        says which fixtures are the simulated farm's)."""
        if (
            fixture is None
            or self.session.config.production
            or fixture.name not in self.session.view.simulated
        ):
            return None
        return fixture.name

    def _offer_next_board(self) -> None:
        fixture = self.current_fixture()
        show = (
            self.outcome is not None
            and self.outcome.kind in (Ending.PASSED, Ending.FAILED, Ending.ABORTED, Ending.REFUSED)
            and self.simulated_name(fixture) is not None
            and not self.swapping
        )
        self.next_button.setVisible(show)
        self.next_button.setEnabled(show)

    def next_board(self) -> bool:
        """Put a factory-fresh board on the selected simulated fixture; False if that is not possible now."""
        name = self.simulated_name(self.current_fixture())
        if name is None or self.swapping or not self.next_button.isVisible():
            return False
        self.swapping = True
        self.next_button.setEnabled(False)
        self.text.setText(f"Putting a factory-fresh board on fixture {html.escape(name)}…")
        farm = Farm(self.session.home)
        if not self.pool.submit(lambda: farm.swap(name), self._swapped, self._swap_failed):
            self.swapping = False
            return False
        return True

    def _swapped(self, device: object) -> None:
        self.swapping = False
        self.next_button.setVisible(False)
        assert isinstance(device, SimDevice)
        self.soc_id, self.outcome = None, None
        self.text.setText(
            f"Fixture {html.escape(device.name)} now holds a factory-fresh board: SoC id "
            f"<b>{html.escape(device.soc_id)}</b>, host key {html.escape(device.host_key_fingerprint)}. "
            "Scan its serial label."
        )
        self.board_swapped.emit(device)

    def _swap_failed(self, error: BaseException) -> None:
        self.swapping = False
        self.next_button.setEnabled(True)
        self.text.setText(
            f"✗ No new board: {html.escape(str(error))} — press Next board again, or run "
            "<tt>station sim status</tt>."
        )
