"""Dialogs: the CA passphrase at start, "no CA yet", the admin PIN in front of the settings, and a
person's own credential when they sign in as quality lead or administrator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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

from station.admin import AdminLock
from station.errors import StationError
from station.people import People, SignedIn
from station.pki import CA_FILES, CertificateAuthority
from ui.bridge import TaskPool
from ui.style import RED, emphasise


def _message_label(parent: QWidget) -> QLabel:
    label = QLabel(parent)
    label.setTextFormat(Qt.TextFormat.PlainText)  # messages from the core are never markup
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class PassphraseDialog(QDialog):
    """Asks for the CA passphrase until it opens the CA, or the technician quits."""

    def __init__(self, ca_dir: Path, *, problem: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ca_dir = ca_dir
        self.ca: CertificateAuthority | None = None
        # What unlocked it, for the window to hand once to a station service whose CA is still locked.
        self.secret: str | None = None
        self.setWindowTitle("Unlock the station's CA")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        intro = _message_label(self)
        intro.setText(
            "The station signs each board's certificate with its CA, whose key is encrypted.\n"
            "Type the CA passphrase (or the token PIN of a station CA in a token). It is asked once and kept in\n"
            "memory only, until the window closes."
        )
        layout.addWidget(intro)
        prompt = QLabel("CA &passphrase:", self)
        self.field = QLineEdit(self)
        self.field.setEchoMode(QLineEdit.EchoMode.Password)
        self.field.setAccessibleName("CA passphrase")
        prompt.setBuddy(self.field)
        layout.addWidget(prompt)
        layout.addWidget(self.field)
        self.problem = _message_label(self)
        emphasise(self.problem, RED)
        layout.addWidget(self.problem)
        self.show_problem(problem)
        buttons = QDialogButtonBox(self)
        self.unlock_button = buttons.addButton("&Unlock", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton("&Quit", QDialogButtonBox.ButtonRole.RejectRole)
        self.unlock_button.setDefault(True)
        buttons.accepted.connect(self.try_unlock)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.field.setFocus()

    def show_problem(self, problem: str | None) -> None:
        self.problem.setText(f"✗ {problem}" if problem else "")
        self.problem.setVisible(bool(problem))

    def try_unlock(self) -> None:
        passphrase = self.field.text().encode()
        self.field.clear()
        if not passphrase:
            self.show_problem("No passphrase typed — type the CA passphrase, then press Enter.")
            return
        try:
            # Decrypting the keys (scrypt) or logging in to the token takes a fraction of a second, once.
            # A station CA in a token takes what was typed as its PIN; a file CA as its passphrase.
            self.ca = CertificateAuthority.load(self.ca_dir, passphrase=passphrase, pin=passphrase.decode())
        except StationError as exc:
            self.show_problem(f"Not unlocked: {exc}")
            self.field.setFocus()
            return
        self.secret = passphrase.decode()
        self.accept()


def ca_exists(ca_dir: Path) -> bool:
    return any((ca_dir / name).exists() for name in CA_FILES)


def explain_missing_ca(home_root: Path, parent: QWidget | None = None) -> bool:
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
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
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
    """Asks for the admin PIN; the PIN is checked on a worker (PBKDF2 takes ~0.15 s)."""

    unlocked = Signal()
    _refusal_prefix = "✗ Refused: "
    _unchecked = "the PIN could not be checked"

    def __init__(
        self,
        lock: AdminLock,
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
        self._lock = lock
        self.unlock_button = self._button

    def _checker(self, secret: str) -> Callable[[], object]:
        lock = self._lock
        return lambda: lock.unlock(secret)

    def _accepted(self, _value: object) -> None:
        self.unlocked.emit()
        self.accept()


class PersonSignInDialog(_SecretDialog):
    """Asks a quality lead or administrator for their OWN credential (PIN or badge code), checked by
    :mod:`station.people` on a worker (PBKDF2); emits ``signed_in`` with their time-limited session."""

    signed_in = Signal(object)  # station.people.SignedIn
    _empty_refusal = "type your PIN or scan your badge, then press Enter"
    _unchecked = "the credential could not be checked"

    def __init__(
        self, people: People, pool: TaskPool, name: str, account: str, parent: QWidget | None = None
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
        self._people = people
        self.name = name
        self._account = account
        self.sign_in_button = self._button

    def _checker(self, secret: str) -> Callable[[], object]:
        name, account, people = self.name, self._account, self._people
        return lambda: people.verify(name, secret, account=account)

    def _accepted(self, session: object) -> None:
        assert isinstance(session, SignedIn)
        self.signed_in.emit(session)
        self.accept()
