"""Signing in at the window: a technician by name or badge (recorded as the units' operator); a quality lead or
administrator with their own credential, checked by the station service (``sign_in``), which gives this window
a time-limited session token sent with the requests that need it; the shared admin PIN only in demos
(``admin_unlock``).  Nothing here reads the station home: the service keeps the people and their lockouts."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from station.admin import operator_name
from station.errors import StationError
from station.people import SignedIn, clock_text
from station.roles import Role
from ui.bridge import StationClient
from ui.dialogs import AdminPinDialog, PersonSignInDialog
from ui.style import RED, emphasise

if TYPE_CHECKING:
    from ui.main_window import MainWindow

# The window's roles (the audit view's words): a technician, or a quality lead signed in with a credential.
TECHNICIAN = "technician"
QUALITY_LEAD = "quality_lead"
ROLE_TITLES = {TECHNICIAN: "technician", QUALITY_LEAD: "quality lead"}
# How long after an elevated session's end the window ends it: Qt's timers may fire a little early, and the
# service, reading its own clock, then journalled an expired session as signed out.
ELEVATED_END_MARGIN_MS = 250


@dataclass(frozen=True)
class KioskSession:
    """A person signed in at this window by the station service: who, their role until when, and the token."""

    signed: SignedIn
    token: str


def person_sign_in(client: StationClient, name: str, secret: str) -> KioskSession:
    """``sign_in`` with a person's own credential (blocking: a worker thread's call); raises StationError with
    the service's words (wrong credential, tries left, locked out until…)."""
    answer = client.call("sign_in", {"name": name, "secret": secret})
    if answer.get("how") != "person" or not answer.get("session"):
        raise StationError(
            "the station service did not sign a person in — type your name and credential again"
        )
    signed = SignedIn(
        person=str(answer["signed_in"]),
        role=Role(answer["role"]),
        started_at=time.time(),
        expires_at=float(answer["expires_at"]),
        account=str(answer["account"]),
    )
    return KioskSession(signed, str(answer["session"]))


def shared_pin_or_person(client: StationClient, name: str, secret: str) -> KioskSession | None:
    """Demo mode ([people] shared_admin_pin): an enrolled person's own credential, else the shared admin PIN
    checked by the service's one lock (None: accepted as the shared PIN).  Raises the PIN's refusal."""
    try:
        return person_sign_in(client, name, secret)
    except StationError:
        client.call("admin_unlock", {"pin": secret})
        return None


class SignInPage(QWidget):
    """The page a window opens on: the operator's name or badge, Sign in, Sign in as quality lead."""

    def __init__(self, station_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.addStretch(2)
        box = QWidget(self)
        box.setMaximumWidth(560)
        layout = QVBoxLayout(box)
        self.title_label = QLabel("Welma provisioning station", box)
        layout.addWidget(self.title_label)
        layout.addWidget(QLabel(f"Station {station_name}", box))
        layout.addSpacing(16)
        prompt = QLabel(
            "Sign in before provisioning: type your &name or scan your badge, then press Enter.", box
        )
        prompt.setWordWrap(True)
        layout.addWidget(prompt)
        self.operator_field = QLineEdit(box)
        self.operator_field.setAccessibleName("Operator name or badge")
        self.operator_field.setPlaceholderText("Operator name or badge")
        prompt.setBuddy(self.operator_field)
        layout.addWidget(self.operator_field)
        self.sign_in_button = QPushButton("&Sign in", box)
        self.quality_lead_button = QPushButton("Sign in as &quality lead…", box)
        self.quality_lead_button.setToolTip(
            "Quality leads (and administrators) export the audit log and revoke "
            "certificates; they type their name, then their own PIN or badge"
        )
        sign_in_row = QHBoxLayout()
        sign_in_row.addWidget(self.sign_in_button)
        sign_in_row.addWidget(self.quality_lead_button)
        sign_in_row.addStretch(1)
        layout.addLayout(sign_in_row)
        self.sign_in_problem = QLabel(box)
        self.sign_in_problem.setTextFormat(Qt.TextFormat.PlainText)
        self.sign_in_problem.setWordWrap(True)
        emphasise(self.sign_in_problem, RED)
        layout.addWidget(self.sign_in_problem)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(box, 3)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(3)


class SignInMixin:
    """MainWindow's signing in and out (a part of :class:`ui.main_window.MainWindow`)."""

    def _build_sign_in(self: MainWindow) -> QWidget:
        page = SignInPage(self.session.config.name, self)
        self.title_label = page.title_label
        self.operator_field = page.operator_field
        self.sign_in_button = page.sign_in_button
        self.quality_lead_button = page.quality_lead_button
        self.sign_in_problem = page.sign_in_problem
        self.operator_field.returnPressed.connect(self.sign_in_from_field)
        self.sign_in_button.clicked.connect(self.sign_in_from_field)
        self.quality_lead_button.clicked.connect(self.sign_in_as_quality_lead)
        return page

    def sign_in_from_field(self: MainWindow) -> None:
        self.sign_in(self.operator_field.text())

    def sign_in(self: MainWindow, entry: str, *, role: str = TECHNICIAN) -> bool:
        """Sign ``entry`` in; ``role="quality_lead"`` only after the service accepted a credential
        (:meth:`sign_in_as_quality_lead`)."""
        if role not in ROLE_TITLES:
            raise ValueError(f"role must be one of {', '.join(ROLE_TITLES)}, not {role!r}")
        try:
            name = operator_name(entry)
        except StationError as exc:
            self.sign_in_problem.setText(f"✗ {exc}")
            self.operator_field.selectAll()
            return False
        self.operator = name
        if role != self.role:
            self._drop_audit_view()  # built again, for the new role, when the Audit tab is opened
        self.role = role
        self.batch.operator = name
        self.operator_field.clear()
        self.sign_in_problem.clear()
        title = " (quality lead)" if role == QUALITY_LEAD else ""
        self.operator_label.setText(f"Operator: <b>{html.escape(name)}</b>{title}")
        self.pages.setCurrentWidget(self.station_page)
        if self.mode() == "audit":
            self._open_audit_view()
        self._feedback(f"Signed in as {name}. Scan a board's serial label.", ok=True)
        self._update_buttons()
        self.focus_scan()
        QTimer.singleShot(0, self._announce_ready)
        return True

    def _announce_ready(self: MainWindow) -> None:
        if self.pages.currentWidget() is self.station_page:
            self.ready.emit()

    def sign_in_as_quality_lead(self: MainWindow) -> None:
        """Quality leads and administrators sign in with their name and their own credential (checked by the
        station service); the shared admin PIN only where [people] shared_admin_pin allows it (demos)."""
        try:
            name = operator_name(self.operator_field.text())
        except StationError as exc:
            self.sign_in_problem.setText(f"✗ {exc} — then press Sign in as quality lead")
            self.operator_field.setFocus()
            return
        if self.session.config.people.shared_admin_pin and not self.session.config.production:
            # Whether an admin PIN is set now (set in a terminal since the window opened, say): the service says.
            self.with_fresh_view(lambda: self._sign_in_with_shared_pin(name))
            return
        client = self.session.client
        dialog = PersonSignInDialog(
            lambda secret: person_sign_in(client, name, secret), self.pool, name, self
        )
        dialog.signed_in.connect(self._signed_in_elevated)
        dialog.finished.connect(dialog.deleteLater)
        self.person_dialog = dialog
        dialog.open()

    def _signed_in_elevated(self: MainWindow, kiosk: object) -> None:
        assert isinstance(kiosk, KioskSession)
        session = kiosk.signed
        if not session.role.allows(Role.QUALITY):
            self._close_kiosk_session(kiosk.token)
            self.sign_in_problem.setText(
                f"✗ {session.person} is enrolled as {session.role.words} — press Sign in (technicians need no PIN)"
            )
            return
        # The token goes with this window's requests from now on: the service gives them the person's role and
        # records the person (a unit's operator is the person signed in, not a typed name).
        self.session.client.token = kiosk.token
        if self.sign_in(session.person, role=QUALITY_LEAD):
            self.elevated = session
            # A moment past the end, so the service (another clock reading) sees the time up too.
            self._elevated_ends.start(max(1, round(session.remaining_s() * 1000) + ELEVATED_END_MARGIN_MS))
            self.operator_label.setText(
                f"Operator: <b>{html.escape(session.person)}</b> ({session.role.words} until "
                f"{clock_text(session.expires_at)})"
            )
        else:
            self._close_kiosk_session(kiosk.token)

    def _close_kiosk_session(self: MainWindow, token: str | None) -> None:
        """``sign_out`` at the service (on a worker; the journal records it)."""
        client = self.session.client
        if client.token == token:
            client.token = None
        if token is not None:
            self.pool.submit(lambda: client.call("sign_out", {"session": token}), lambda _done: None)

    def end_elevated_session(self: MainWindow, *, expired: bool = False) -> None:
        """The quality lead's or administrator's session ends (signed out, or its time is up): the window
        drops back to the sign-in page — or, with units running, to a technician's view."""
        session, self.elevated = self.elevated, None
        self._elevated_ends.stop()
        if session is None:
            return
        self._close_kiosk_session(self.session.client.token)
        if expired:
            words = (
                f"{session.person}'s {session.role.words} session ended at {clock_text(session.expires_at)} — "
                "sign in again"
            )
            if self._anything_running():
                self._drop_audit_view()
                self.role = TECHNICIAN
                self.operator_label.setText(f"Operator: <b>{html.escape(session.person)}</b> (session ended)")
                self._feedback(words, ok=False, mark="✗")
            else:
                self.sign_out()
                self.sign_in_problem.setText(f"✗ {words}")

    def _sign_in_with_shared_pin(self: MainWindow, name: str) -> None:
        """Demo mode only ([people] shared_admin_pin = true): any name and the station's admin PIN (or an
        enrolled person's own credential), checked by the service."""
        if not self.session.view.admin_pin_set:
            self.sign_in_problem.setText(
                "✗ No admin PIN is set on this station, so nobody can sign in as quality lead here. An "
                f"administrator sets one in a terminal: station --home {self.session.home.root} admin set-pin"
            )
            return
        client = self.session.client
        dialog = AdminPinDialog(
            lambda secret: shared_pin_or_person(client, name, secret),
            self.pool,
            self,
            title="Quality lead sign-in",
            intro=f"Quality leads export the audit log and revoke certificates. Type the admin PIN to sign in "
            f"{name} as quality lead.",
        )

        def accepted() -> None:
            if isinstance(dialog.value, KioskSession):
                self._signed_in_elevated(dialog.value)
            else:
                self.sign_in(name, role=QUALITY_LEAD)

        dialog.unlocked.connect(accepted)
        dialog.finished.connect(dialog.deleteLater)
        self.pin_dialog = dialog
        dialog.open()

    def sign_out(self: MainWindow) -> None:
        if self._anything_running() or self.operator is None:
            return
        if self.elevated is not None:
            self.end_elevated_session()
        self.operator = None
        self.batch.operator = None
        self.role = TECHNICIAN
        self._drop_audit_view()
        self.operator_label.clear()
        self.pages.setCurrentWidget(self.sign_in_page)
        self.operator_field.setFocus()
        self._update_buttons()
