"""The administrator's settings dialog (opened only after the admin PIN, or an administrator's own credential,
was accepted).  The station service checks and saves what is chosen (``settings``, recorded); the window only
shows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from station.admin import StationSettings
from station.label import LABEL_LAYOUTS
from ui.bridge import TaskPool, WindowView
from ui.session import Session
from ui.style import RED, emphasise


class SettingsDialog(QDialog):
    """Profile, fixtures file, auto-start on scan, large font, label layout."""

    def __init__(self, session: Session, pool: TaskPool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.pool = pool
        self.setWindowTitle("Station settings (administrator)")
        self.setMinimumWidth(620)
        current = session.settings
        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)

        self.profile = QComboBox(self)
        self.profile.addItem(f"station default ({session.config.default_profile})", None)
        for name in session.profile_names():
            self.profile.addItem(name, name)
        self.profile.setCurrentIndex(max(0, self.profile.findData(current.profile)))
        form.addRow("Device &profile:", self.profile)

        self.fixtures = QLineEdit(current.fixtures_file or "", self)
        self.fixtures.setPlaceholderText("station.toml's fixtures, else the simulated farm's")
        browse = QPushButton("&Browse…", self)
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.fixtures, 1)
        row.addWidget(browse)
        fixtures_label = QLabel("&Fixtures file:", self)
        fixtures_label.setBuddy(self.fixtures)
        form.addRow(fixtures_label, row)

        self.auto_start = QCheckBox("Start provisioning as soon as a serial is &scanned", self)
        self.auto_start.setChecked(current.auto_start)
        form.addRow("Auto-start:", self.auto_start)

        self.large_font = QCheckBox("&Large font", self)
        self.large_font.setChecked(current.large_font)
        form.addRow("Display:", self.large_font)

        self.label_layout = QComboBox(self)
        for name, stock in LABEL_LAYOUTS.items():
            self.label_layout.addItem(stock.title, name)
        self.label_layout.setCurrentIndex(max(0, self.label_layout.findData(current.label_layout)))
        form.addRow("&Label stock:", self.label_layout)

        self.problem = QLabel(self)
        self.problem.setWordWrap(True)
        emphasise(self.problem, RED)
        self.problem.hide()
        layout.addWidget(self.problem)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.save_button = buttons.button(QDialogButtonBox.StandardButton.Save)
        self.profile.setFocus()

    def chosen(self) -> StationSettings:
        return StationSettings(
            profile=self.profile.currentData(),
            fixtures_file=self.fixtures.text().strip() or None,
            auto_start=self.auto_start.isChecked(),
            large_font=self.large_font.isChecked(),
            label_layout=str(self.label_layout.currentData()),
        )

    def save(self) -> None:
        """Send the settings to the station service (on a worker): it checks and saves them, or says why not."""
        session, chosen = self.session, self.chosen()
        self.save_button.setEnabled(False)
        self.problem.setText("Saving…")
        self.problem.show()
        self.pool.submit(lambda: session.save_settings(chosen), self._saved, self._refused)

    def _saved(self, view: Any) -> None:
        if isinstance(view, WindowView):
            self.session.use_view(view, saved_settings=True)
        self.problem.hide()
        self.accept()

    def _refused(self, error: BaseException) -> None:
        self.save_button.setEnabled(True)
        self.problem.setText(f"✗ Not saved: {error}")
        self.problem.show()

    def _browse(self) -> None:
        # The file is read by the station service, as its account: a path it can read (never the home's own files).
        path, _ = QFileDialog.getOpenFileName(
            self, "Fixtures file", str(Path.home()), "Fixtures (*.toml);;All files (*)"
        )
        if path:
            self.fixtures.setText(path)
