"""What an administrator does at the window, through the station service: the settings (``settings``: shown and
saved by the service, recorded), the shared admin PIN of demos (``admin_unlock``), and unlocking the station's CA
when the service says it is locked (``ca_unlock``) — a part of :class:`ui.main_window.MainWindow`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QMessageBox

from station.roles import Role
from ui.bridge import WindowView
from ui.dialogs import AdminPinDialog, CaUnlockDialog
from ui.settings import SettingsDialog

if TYPE_CHECKING:
    from ui.main_window import MainWindow


class AdminMixin:
    """Settings, the admin PIN and the CA's unlock dialog."""

    # -- what the service says now ---------------------------------------------------------------------

    def with_fresh_view(self: MainWindow, then: Callable[[], None]) -> None:
        """Read what the service says now (on a worker), use it, then ``then()`` — with the last view if the
        service could not be asked (the window says so)."""
        session = self.session

        def fresh(view: Any) -> None:
            if isinstance(view, WindowView):
                session.use_view(view)
            then()

        def stale(error: BaseException) -> None:
            self.line_status.setText(f"✗ the station service did not answer: {error}")
            then()

        if not self.pool.submit(session.read_view, fresh, stale):
            then()

    def refresh_view(self: MainWindow) -> None:
        """Read the station's settings and fixtures again and show them (``view_changed`` once shown)."""

        def shown() -> None:
            self.apply_settings()
            self.view_changed.emit()

        self.with_fresh_view(shown)

    # -- settings --------------------------------------------------------------------------------------

    def open_settings(self: MainWindow) -> None:
        if self._anything_running():
            return
        if (
            self.elevated is not None
            and self.elevated.role.allows(Role.ADMIN)
            and not self.elevated.expired()
        ):
            self._show_settings()  # an administrator signed in with their own credential
            return
        if self.session.config.production:
            QMessageBox.information(
                self,
                "Settings are locked",
                "Settings are for administrators. Sign out, type your name, press Sign in as quality lead and use "
                "your own administrator credential (an administrator enrols you with `station people add NAME "
                "--role admin`).",
            )
            return
        # Whether an admin PIN is set now (it may have been set in a terminal since the window opened).
        self.with_fresh_view(self._ask_admin_pin)

    def _ask_admin_pin(self: MainWindow) -> None:
        if not self.session.view.admin_pin_set:
            QMessageBox.information(
                self,
                "Settings are locked",
                "No admin PIN is set on this station, so its settings cannot be changed here.\n\n"
                f"An administrator sets one in a terminal:\n    station --home {self.session.home.root} admin set-pin",
            )
            return
        client = self.session.client
        dialog = AdminPinDialog(lambda pin: client.call("admin_unlock", {"pin": pin}), self.pool, self)
        dialog.unlocked.connect(self._show_settings)
        dialog.finished.connect(dialog.deleteLater)
        self.pin_dialog = dialog
        dialog.open()

    def _show_settings(self: MainWindow) -> None:
        dialog = SettingsDialog(self.session, self.pool, self)
        dialog.accepted.connect(self.apply_settings)
        dialog.finished.connect(dialog.deleteLater)
        dialog.finished.connect(lambda _result: self.focus_scan())
        self.settings_dialog = dialog
        dialog.open()

    # -- the CA ----------------------------------------------------------------------------------------

    def ask_ca_secret(self: MainWindow, why: str, ca: object) -> None:
        """The service's CA is locked (a unit asked for waits): ask for its secret, once at a time."""
        if self._closing:
            self.engine.refuse_waiting()
            return
        if getattr(self, "ca_dialog", None) is not None:
            return
        client = self.session.client
        dialog = CaUnlockDialog(
            lambda secret: client.call("ca_unlock", {"secret": secret}),
            self.pool,
            dict(ca) if isinstance(ca, dict) else {},
            self,
            problem=None,
        )
        self.ca_dialog = dialog
        dialog.unlocked.connect(self.engine.send_waiting)
        dialog.rejected.connect(self.engine.refuse_waiting)

        def gone(_result: int) -> None:
            self.ca_dialog = None
            dialog.deleteLater()

        dialog.finished.connect(gone)
        self.line_status.setToolTip(why)
        self.line_status.setText("✗ the station's CA is locked — a board waits for it to be unlocked")
        if self._unit_active and self.request is not None:
            self.result.show_state(
                "running",
                f"Board {self.request.serial} waits: the station's CA is locked in the station service.",
                "an administrator types the CA passphrase (or token PIN) in the dialog; Cancel gives this board up.",
            )
        dialog.open()
