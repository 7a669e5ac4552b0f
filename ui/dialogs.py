"""Dialogs: the CA's passphrase (or token PIN) for a station service whose CA is locked, "no CA yet", the admin
PIN in front of the settings, and a person's own credential when they sign in as quality lead or administrator.
Every secret is checked by the station service, on a worker thread; the window keeps none of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from station.errors import StationError
from ui.bridge import TaskPool
from ui.style import RED, emphasise


def _message_label(parent: QWidget) -> QLabel:
    label = QLabel(parent)
    label.setTextFormat(Qt.TextFormat.PlainText)  # messages from the core are never markup
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def explain_missing_ca(home_root: Path | str, parent: QWidget | None = None) -> bool:
    """Tell the technician there is no CA and how to make one; True if they want to check again."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("No CA on this station")
    box.setText("This station has no certificate authority yet, so it cannot enrol boards.")
    box.setInformativeText(
        "An administrator creates it once, in a terminal:\n\n"
        f"    station --home {home_root} ca init\n\n"
        "Then press Check again (or start the station again)."
    )
    again = box.addButton("&Check again", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("&Quit", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(again)
    box.exec()
    return box.clickedButton() is again


class _SecretDialog(QDialog):
    """A dialog that asks one secret (a PIN, a badge code) and checks it on a worker (PBKDF2 takes ~0.15 s):
    the field is cleared and disabled while "Checking…", and a refusal is said in red with the field back."""

    # What a subclass says: how an empty field, a refusal and a failed check read.
    _empty_refusal = ""
    _refusal_prefix = "✗ "
    _unchecked = "the secret could not be checked"

    def __init__(
        self,
        pool: TaskPool,
        parent: QWidget | None,
        *,
        title: str,
        width: int,
        intro: str,
        prompt: str,
        accessible_name: str,
        button: str,
    ) -> None:
        super().__init__(parent)
        self._pool = pool
        self.setWindowTitle(title)
        self.setMinimumWidth(width)
        layout = QVBoxLayout(self)
        intro_label = _message_label(self)
        intro_label.setText(intro)
        layout.addWidget(intro_label)
        prompt_label = QLabel(prompt, self)
        self.field = QLineEdit(self)
        self.field.setEchoMode(QLineEdit.EchoMode.Password)
        self.field.setAccessibleName(accessible_name)
        prompt_label.setBuddy(self.field)
        layout.addWidget(prompt_label)
        layout.addWidget(self.field)
        self.problem = _message_label(self)
        emphasise(self.problem, RED)
        self.problem.hide()
        layout.addWidget(self.problem)
        buttons = QDialogButtonBox(self)
        self._button: QPushButton = buttons.addButton(button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self._button.setDefault(True)
        buttons.accepted.connect(self.check)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.field.setFocus()

    def check(self) -> None:
        secret = self.field.text()
        self.field.clear()
        if self._empty_refusal and not secret:
            self._refused(StationError(self._empty_refusal))
            return
        self._button.setEnabled(False)
        self.field.setEnabled(False)
        self.problem.setText("Checking…")
        emphasise(self.problem, None, bold=False)
        self.problem.show()
        self._pool.submit(self._checker(secret), self._accepted, self._refused)

    def _checker(self, secret: str) -> Callable[[], object]:
        raise NotImplementedError

    def _accepted(self, value: object) -> None:
        raise NotImplementedError

    def _refused(self, error: BaseException) -> None:
        text = str(error) if isinstance(error, StationError) else f"{self._unchecked} ({error!r})"
        self.problem.setText(f"{self._refusal_prefix}{text}")
        emphasise(self.problem, RED)
        self.problem.show()
        self.adjustSize()  # a lockout message runs to three lines: show all of it
        self._button.setEnabled(True)
        self.field.setEnabled(True)
        self.field.setFocus()


class AdminPinDialog(_SecretDialog):
    """Asks for the shared admin PIN (demos); ``check`` asks the station service (``admin_unlock``: its one lock
    counts wrong PINs for every window).  What ``check`` returned stays in :attr:`value`."""

    unlocked = Signal()
    _refusal_prefix = "✗ Refused: "
    _unchecked = "the PIN could not be checked"

    def __init__(
        self,
        check: Callable[[str], object],
        pool: TaskPool,
        parent: QWidget | None = None,
        *,
        title: str = "Administrator",
        intro: str = "Station settings are for administrators. Type the admin PIN to change them.",
    ) -> None:
        super().__init__(
            pool,
            parent,
            title=title,
            width=440,
            intro=intro,
            prompt="Admin &PIN:",
            accessible_name="Admin PIN",
            button="&Unlock",
        )
        self._check = check
        self.value: object = None
        self.unlock_button = self._button

    def _checker(self, secret: str) -> Callable[[], object]:
        check = self._check
        return lambda: check(secret)

    def _accepted(self, value: object) -> None:
        self.value = value
        self.unlocked.emit()
        self.accept()


class PersonSignInDialog(_SecretDialog):
    """Asks a quality lead or administrator for their OWN credential (PIN or badge code); ``check`` has the
    station service verify it (``sign_in``) and emits ``signed_in`` with the kiosk session it gave."""

    signed_in = Signal(object)  # ui.window_sign_in.KioskSession
    _empty_refusal = "type your PIN or scan your badge, then press Enter"
    _unchecked = "the credential could not be checked"

    def __init__(
        self, check: Callable[[str], object], pool: TaskPool, name: str, parent: QWidget | None = None
    ) -> None:
        super().__init__(
            pool,
            parent,
            title="Quality lead sign-in",
            width=460,
            intro=(
                f"Signing in {name}. Type your own PIN or scan your badge — the one an administrator "
                "enrolled for you (station people add)."
            ),
            prompt="Your &PIN or badge:",
            accessible_name="Your PIN or badge",
            button="&Sign in",
        )
        self._check = check
        self.name = name
        self.sign_in_button = self._button

    def _checker(self, secret: str) -> Callable[[], object]:
        check = self._check
        return lambda: check(secret)

    def _accepted(self, session: object) -> None:
        self.signed_in.emit(session)
        self.accept()


class CaUnlockDialog(_SecretDialog):
    """The station service's CA is locked: an administrator types its passphrase (or its token's PIN), sent once
    to the service (``ca_unlock``, over the socket: never in an argument, the environment or a log).  The
    service says whether it took it; a technician's account is refused and told who may unlock it."""

    unlocked = Signal()
    _empty_refusal = "type the CA passphrase (or the token PIN), then press Enter"
    _refusal_prefix = "✗ Not unlocked: "
    _unchecked = "the CA could not be unlocked"

    def __init__(
        self,
        unlock: Callable[[str], object],
        pool: TaskPool,
        ca: dict[str, Any],
        parent: QWidget | None = None,
        *,
        problem: str | None = None,
        cancel_text: str | None = None,
    ) -> None:
        token = ca.get("kind") == "token"
        what = f"the PIN of token {ca.get('label', '')!r}" if token else "the CA passphrase"
        super().__init__(
            pool,
            parent,
            title="Unlock the station's CA",
            width=520,
            intro=(
                "The station signs each board's certificate with its CA, which is locked in the station service.\n"
                f"An administrator types {what} once; the service keeps the key unlocked, not the secret, "
                "until it stops."
            ),
            prompt="CA &PIN:" if token else "CA &passphrase:",
            accessible_name="CA PIN" if token else "CA passphrase",
            button="&Unlock",
        )
        self._unlock = unlock
        self.unlock_button = self._button
        if cancel_text:
            self.cancel_button.setText(cancel_text)
        if problem:
            self._refused(StationError(problem))

    def _checker(self, secret: str) -> Callable[[], object]:
        unlock = self._unlock
        return lambda: unlock(secret)

    def _accepted(self, _value: object) -> None:
        self.unlocked.emit()
        self.accept()
