"""Painting a board's label: the same drawing on screen, on a label printer and into a PDF.

What goes on the label and where (millimetres) is decided by :mod:`station.label`; this module only
maps millimetres to the device's pixels.  Bars are drawn as rectangles (vectors in a PDF); on a
low-resolution device every module is snapped to whole pixels so no bar is blurred or uneven.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMarginsF, QRectF, QSizeF, Qt, QUrl
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QImage,
    QPageLayout,
    QPageSize,
    QPainter,
    QPalette,
    QPdfWriter,
    QPixmap,
)
from PySide6.QtPrintSupport import QPrinter
from PySide6.QtWidgets import QFileDialog, QFrame, QLabel, QSizePolicy, QWidget

from station.label import LabelSheet

# Below this many device pixels per module, bars are snapped to whole pixels.
SNAP_BELOW_PX = 8.0
PREVIEW_PX_PER_MM = 5.5
PNG_DPI = 300


def _page_size(sheet: LabelSheet) -> QPageSize:
    size = QSizeF(sheet.layout.width_mm, sheet.layout.height_mm)
    return QPageSize(
        size, QPageSize.Unit.Millimeter, sheet.layout.title, QPageSize.SizeMatchPolicy.ExactMatch
    )


def paint_label(
    painter: QPainter, sheet: LabelSheet, px_per_mm: float, *, x0: float = 0.0, y0: float = 0.0
) -> None:
    """Draw ``sheet`` with its top-left corner at (x0, y0) device pixels."""
    painter.save()
    try:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        width, height = sheet.layout.width_mm * px_per_mm, sheet.layout.height_mm * px_per_mm
        painter.fillRect(QRectF(x0, y0, width, height), QColor("white"))
        _paint_bars(painter, sheet, px_per_mm, x0, y0)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        painter.setPen(QColor("black"))
        for line in sheet.texts:
            box = QRectF(
                x0 + line.box.x * px_per_mm,
                y0 + line.box.y * px_per_mm,
                line.box.width * px_per_mm,
                line.box.height * px_per_mm,
            )
            font = QFont("DejaVu Sans Mono" if line.monospace else "DejaVu Sans")
            font.setStyleHint(QFont.StyleHint.Monospace if line.monospace else QFont.StyleHint.SansSerif)
            font.setBold(line.bold)
            font.setPixelSize(max(1, round(line.size_pt * 0.3528 * px_per_mm)))
            # Shrink a line that would not fit rather than cut it: every character matters.
            while QFontMetricsF(font).horizontalAdvance(line.text) > box.width() and font.pixelSize() > 4:
                font.setPixelSize(font.pixelSize() - 1)
            painter.setFont(font)
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, line.text)
    finally:
        painter.restore()


def _paint_bars(painter: QPainter, sheet: LabelSheet, px_per_mm: float, x0: float, y0: float) -> None:
    module_px = sheet.module_mm * px_per_mm
    top = y0 + sheet.barcode.y * px_per_mm
    bar_height = sheet.barcode.height * px_per_mm
    black = QColor("black")
    if module_px < SNAP_BELOW_PX:
        whole = max(1, int(module_px))
        # Keep the symbol centred where the layout put it.
        centre = x0 + (sheet.barcode.x + sheet.barcode.width / 2) * px_per_mm
        left = round(centre - whole * len(sheet.modules) / 2)
        for index, module in enumerate(sheet.modules):
            if module == "1":
                painter.fillRect(QRectF(left + index * whole, round(top), whole, round(bar_height)), black)
        return
    for x_mm, width_mm in sheet.bars():
        painter.fillRect(QRectF(x0 + x_mm * px_per_mm, top, width_mm * px_per_mm, bar_height), black)


def render_label(sheet: LabelSheet, *, dpi: int = PNG_DPI) -> QImage:
    px_per_mm = dpi / 25.4
    image = QImage(
        round(sheet.layout.width_mm * px_per_mm),
        round(sheet.layout.height_mm * px_per_mm),
        QImage.Format.Format_RGB32,
    )
    image.setDotsPerMeterX(round(dpi / 0.0254))
    image.setDotsPerMeterY(round(dpi / 0.0254))
    image.fill(QColor("white"))
    painter = QPainter(image)
    try:
        paint_label(painter, sheet, px_per_mm)
    finally:
        painter.end()
    return image


def label_png(sheet: LabelSheet, *, dpi: int = PNG_DPI) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    render_label(sheet, dpi=dpi).save(buffer, "PNG")  # type: ignore[call-overload]  # the stub says bytes; PySide wants str
    buffer.close()
    return bytes(data.data())


def save_label_pdf(sheet: LabelSheet, path: Path, *, dpi: int = 1200) -> None:
    """One PDF page the size of the label stock (vector bars and text)."""
    path.write_bytes(label_pdf(sheet, dpi=dpi))


def label_pdf(sheet: LabelSheet, *, dpi: int = 1200) -> bytes:
    """The label as the bytes of a one-page PDF (written by :func:`station.outputs.save_output`)."""
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    _paint_pdf(sheet, QPdfWriter(buffer), dpi)
    buffer.close()
    return bytes(data.data())


def _paint_pdf(sheet: LabelSheet, writer: QPdfWriter, dpi: int) -> None:
    writer.setTitle(f"Label {sheet.content.serial}")
    writer.setCreator("Welma provisioning station")
    writer.setResolution(dpi)
    writer.setPageLayout(
        QPageLayout(_page_size(sheet), QPageLayout.Orientation.Portrait, QMarginsF(0, 0, 0, 0))
    )
    painter = QPainter(writer)
    try:
        paint_label(painter, sheet, writer.resolution() / 25.4)
    finally:
        painter.end()


class OutputFileDialog(QFileDialog):
    """A save dialog rooted at the technician's output folder: it shows only that folder's tree (the
    sidebar offers nothing else, and wandering out brings it back).  What is typed is still checked by
    :func:`station.outputs.check_output_path` before anything is written."""

    def __init__(self, parent: QWidget | None, title: str, folder: Path, proposed: Path) -> None:
        super().__init__(parent, title, str(folder), "PDF (*.pdf)")
        self.folder = folder
        self.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        self.setFileMode(QFileDialog.FileMode.AnyFile)
        self.setOption(QFileDialog.Option.DontUseNativeDialog)  # a native dialog cannot be kept in the folder
        self.setSidebarUrls([QUrl.fromLocalFile(str(folder))])
        self.setHistory([])
        self.setDirectory(str(folder))
        self.selectFile(proposed.name)
        self.directoryEntered.connect(self._stay_inside)

    def _stay_inside(self, directory: str) -> None:
        entered = Path(directory).resolve()
        if entered != self.folder and self.folder not in entered.parents:
            self.setDirectory(str(self.folder))


def configure_printer(printer: QPrinter, sheet: LabelSheet) -> None:
    """Ask for the label stock's page size, no margins (the label already has its own)."""
    printer.setPageLayout(
        QPageLayout(_page_size(sheet), QPageLayout.Orientation.Portrait, QMarginsF(0, 0, 0, 0))
    )
    printer.setFullPage(True)
    printer.setDocName(f"label-{sheet.content.serial}")


def print_label(printer: QPrinter, sheet: LabelSheet) -> bool:
    """Paint the label on ``printer`` (already configured by the print dialog); False if it cannot start."""
    painter = QPainter()
    if not painter.begin(printer):
        return False
    try:
        paint_label(painter, sheet, printer.resolution() / 25.4)
    finally:
        painter.end()
    return True


class LabelPreview(QLabel):
    """The label as it will print, at a readable size, or a hint while there is none."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(round(29 * PREVIEW_PX_PER_MM) + 12)
        self.setAccessibleName("Label preview")
        self.setFrameShadow(QFrame.Shadow.Plain)
        palette = self.palette()
        palette.setColor(QPalette.ColorRole.WindowText, QColor("#5f6368"))
        self.setPalette(palette)
        self.sheet: LabelSheet | None = None
        self.show_sheet(None)

    def show_sheet(self, sheet: LabelSheet | None) -> None:
        self.sheet = sheet
        if sheet is None:
            self.setPixmap(QPixmap())
            self.setText("The label appears here when a board passes.")
            self.setFrameShape(QFrame.Shape.Box)
            return
        ratio = self.devicePixelRatioF() or 1.0
        image = render_label(sheet, dpi=round(PREVIEW_PX_PER_MM * 25.4 * ratio))
        pixmap = QPixmap.fromImage(image)
        pixmap.setDevicePixelRatio(ratio)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setPixmap(pixmap)
        self.setToolTip(" · ".join(sheet.content.lines))
