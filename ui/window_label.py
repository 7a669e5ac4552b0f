"""A passed board's label on the single-board page: drawn from the unit's data the service sent (serial and
certificate fingerprint), printed by the station service on the line's label printer (``labels``, recorded by
whom) or through a print dialog, saved as a PDF only in the technician's output folder (a part of
:class:`ui.main_window.MainWindow`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtPrintSupport import QPrintDialog, QPrinter
from PySide6.QtWidgets import QMessageBox

from station.errors import StationError
from station.label import build_label, label_file_name, label_layout, lay_out
from station.outputs import ensure_output_folder, free_name, output_folder, save_output
from ui.bridge import UnitOutcome
from ui.label import OutputFileDialog, configure_printer, label_pdf, print_label

if TYPE_CHECKING:
    from ui.main_window import MainWindow


class LabelMixin:
    """The label box of the single-board page."""

    def _show_label(self: MainWindow, outcome: UnitOutcome) -> None:
        if not outcome.certificate_fingerprint:
            self.label_preview.show_sheet(None)
            self.label_preview.setText("No certificate is recorded for this unit — no label.")
            return
        try:
            content = build_label(outcome.serial, outcome.certificate_fingerprint)
            self.sheet = lay_out(content, label_layout(self.session.settings.label_layout))
        except StationError as exc:
            self.sheet = None
            self.label_preview.show_sheet(None)
            self.label_preview.setText(f"✗ No label: {exc}")
            return
        self.label_preview.show_sheet(self.sheet)
        self._update_buttons()

    def print_label(self: MainWindow) -> None:
        if self.sheet is None:
            return
        if self.session.config.label.printer and self.outcome is not None and self.outcome.unit_id:
            # The line's label printer ([label] printer): the service prints it and records who asked.
            self.print_on_line_printer(self.sheet.content.serial)
            return
        printer = QPrinter(QPrinter.PrinterMode.HighResolution)
        configure_printer(printer, self.sheet)
        dialog = QPrintDialog(printer, self)
        dialog.setWindowTitle(f"Print label {self.sheet.content.serial}")
        if dialog.exec() == QPrintDialog.DialogCode.Accepted and not print_label(printer, self.sheet):
            QMessageBox.warning(
                self,
                "Label not printed",
                "The printer could not be started — check it is switched on and has labels, "
                "then press Ctrl+P again.",
            )
        self.focus_scan()

    def print_on_line_printer(self: MainWindow, serial: str) -> None:
        """``labels`` for ``serial`` (a reprint when it was printed before: the service knows), on a worker; what
        the printer said shows in the status bar."""
        client, by = self.session.client, self.operator or ""
        self.line_status.setText(f"printing label {serial}…")

        def printed(answer: Any) -> None:
            mark = "🖨 " if answer.get("printed") else "✗ "
            self.line_status.setText(mark + str(answer.get("message") or ""))
            self.line.printed.emit(answer)

        self.pool.submit(
            lambda: client.call("labels", {"serial": serial, "by": by}),
            printed,
            lambda error: self.line_status.setText(f"✗ label {serial} not printed: {error}"),
        )

    def save_label_dialog(self: MainWindow) -> None:
        """Save the label as a PDF in the technician's output folder ([output] folder) — never elsewhere."""
        if self.sheet is None:
            return
        try:
            folder = ensure_output_folder(self.session.config, self.session.home)
        except StationError as exc:
            self._feedback(f"label not saved: {exc}", ok=False, mark="✗")
            return
        settings = self.session.config.label
        proposed = free_name(
            folder,
            label_file_name(settings.file_name, self.sheet.content.serial, self.sheet.content.issued_on),
        )
        dialog = self.label_save_dialog = OutputFileDialog(self, "Save label as PDF", folder, proposed)
        if dialog.exec() == OutputFileDialog.DialogCode.Accepted and dialog.selectedFiles():
            self.save_label(Path(dialog.selectedFiles()[0]))
        self.focus_scan()

    def save_label(self: MainWindow, path: Path) -> bool:
        """Write the label PDF to ``path`` if it is a new file in the output folder; say why not otherwise."""
        if self.sheet is None:
            return False
        try:
            folder = output_folder(self.session.config, self.session.home)
            saved = save_output(
                path, label_pdf(self.sheet), folder=folder, home=self.session.home, suffix=".pdf"
            )
        except StationError as exc:
            self._feedback(f"label not saved: {exc}", ok=False, mark="✗")
            return False
        self._feedback(f"label saved to {saved}", ok=True)
        return True
