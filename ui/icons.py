"""State icons drawn with QPainter (crisp at every size and font scale, nothing to install)."""

from __future__ import annotations

from functools import cache

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPainterPath, QPen, QPixmap, QPolygonF

from ui.style import StateLook


def _draw(painter: QPainter, size: float, shape: str, color: QColor) -> None:
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    margin = size * 0.06
    disc = QRectF(margin, margin, size - 2 * margin, size - 2 * margin)
    white = QPen(
        QColor("white"),
        size * 0.11,
        Qt.PenStyle.SolidLine,
        Qt.PenCapStyle.RoundCap,
        Qt.PenJoinStyle.RoundJoin,
    )
    if shape == "circle":  # hollow: nothing has happened yet
        painter.setPen(QPen(color, size * 0.1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawEllipse(disc.adjusted(size * 0.05, size * 0.05, -size * 0.05, -size * 0.05))
        return
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    painter.drawEllipse(disc)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.setPen(white)
    s = size
    if shape == "check":
        path = QPainterPath(QPointF(s * 0.28, s * 0.52))
        path.lineTo(s * 0.44, s * 0.68)
        path.lineTo(s * 0.73, s * 0.35)
        painter.drawPath(path)
    elif shape == "cross":
        painter.drawLine(QPointF(s * 0.33, s * 0.33), QPointF(s * 0.67, s * 0.67))
        painter.drawLine(QPointF(s * 0.67, s * 0.33), QPointF(s * 0.33, s * 0.67))
    elif shape == "play":
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("white"))
        painter.drawPolygon(
            QPolygonF([QPointF(s * 0.38, s * 0.28), QPointF(s * 0.74, s * 0.5), QPointF(s * 0.38, s * 0.72)])
        )
    elif shape == "retry":
        arc = QRectF(s * 0.28, s * 0.28, s * 0.44, s * 0.44)
        painter.drawArc(arc, 90 * 16, 270 * 16)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("white"))
        painter.drawPolygon(
            QPolygonF([QPointF(s * 0.50, s * 0.16), QPointF(s * 0.66, s * 0.28), QPointF(s * 0.50, s * 0.40)])
        )
    elif shape == "skip":
        for x in (0.30, 0.50):
            painter.drawPolyline(
                QPolygonF(
                    [QPointF(s * x, s * 0.32), QPointF(s * (x + 0.17), s * 0.5), QPointF(s * x, s * 0.68)]
                )
            )
    elif shape == "stop":
        painter.drawLine(QPointF(s * 0.3, s * 0.5), QPointF(s * 0.7, s * 0.5))


@cache
def _state_image(look: StateLook, size: int, ratio: float) -> QImage:
    # Cached as QImage, not QPixmap: a QPixmap must not outlive the QApplication.
    image = QImage(int(size * ratio), int(size * ratio), QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    try:
        _draw(painter, size * ratio, look.shape, QColor(look.color))
    finally:
        painter.end()
    image.setDevicePixelRatio(ratio)
    return image


def state_pixmap(look: StateLook, size: int, ratio: float = 2.0) -> QPixmap:
    return QPixmap.fromImage(_state_image(look, size, ratio))


def state_icon(look: StateLook, size: int = 20) -> QIcon:
    return QIcon(state_pixmap(look, size))
