"""What goes on a board's label, and where: a Code128 barcode of the serial, the certificate's short
fingerprint and the date.

The content and its geometry (in millimetres) are decided here, without Qt, so every output agrees:
the GUI paints the same :class:`LabelSheet` on screen, on a printer and into a PDF, and
:func:`barcode_png` renders the barcode with python-barcode's Pillow writer for anything that needs a
raster image.  The barcode is drawn from python-barcode's own module pattern, so what is printed is
exactly what python-barcode encodes.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import date

from station.errors import StationError

# Code128 needs a quiet zone of at least 10 modules on each side for a scanner to find the code.
QUIET_ZONE_MODULES = 10
# The narrowest bar a 203 dpi thermal label printer still prints reliably is two dots (0.25 mm);
# 0.33 mm is the common default and scans well with every handheld scanner at the line.
PREFERRED_MODULE_MM = 0.33
MIN_MODULE_MM = 0.19
# Bytes of the certificate's SHA-256 printed on the label: enough to tell two boards' certificates
# apart by eye and to look one up in the audit log, short enough to fit a 25 mm label.
SHORT_FINGERPRINT_BYTES = 8


class LabelError(StationError):
    """A label cannot be made as asked (serial not encodable, label too small for the code)."""


@dataclass(frozen=True)
class LabelLayout:
    """A label stock the line prints on."""

    name: str
    title: str
    width_mm: float
    height_mm: float
    margin_mm: float = 2.0


LABEL_LAYOUTS: dict[str, LabelLayout] = {
    layout.name: layout
    for layout in (
        LabelLayout("62x29", "62 × 29 mm (Brother DK-11209)", 62.0, 29.0),
        LabelLayout("50x25", "50 × 25 mm", 50.0, 25.0, margin_mm=1.5),
        LabelLayout("100x50", "100 × 50 mm", 100.0, 50.0, margin_mm=3.0),
    )
}
DEFAULT_LAYOUT = "62x29"


def label_layout(name: str) -> LabelLayout:
    try:
        return LABEL_LAYOUTS[name]
    except KeyError:
        raise LabelError(
            f"no label layout named {name!r} — choose one of: {', '.join(LABEL_LAYOUTS)}"
        ) from None


@dataclass(frozen=True)
class LabelContent:
    """The facts printed on one board's label."""

    serial: str
    fingerprint_sha256: str
    issued_on: date

    @property
    def short_fingerprint(self) -> str:
        return short_fingerprint(self.fingerprint_sha256)

    @property
    def lines(self) -> tuple[str, ...]:
        """The human-readable lines under the barcode, in print order."""
        return (self.serial, f"cert SHA-256 {self.short_fingerprint}", self.issued_on.isoformat())


@dataclass(frozen=True)
class Box:
    """A rectangle on the label, in millimetres from the label's top-left corner."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class TextLine:
    text: str
    box: Box
    size_pt: float
    bold: bool = False
    monospace: bool = False


@dataclass(frozen=True)
class LabelSheet:
    """One label laid out: where each bar and each line of text goes (millimetres)."""

    content: LabelContent
    layout: LabelLayout
    modules: str
    module_mm: float
    barcode: Box
    texts: tuple[TextLine, ...]

    def bars(self) -> list[tuple[float, float]]:
        """(x, width) in mm of every dark bar, merging runs of dark modules into one bar."""
        result: list[tuple[float, float]] = []
        for match in re.finditer("1+", self.modules):
            x = self.barcode.x + match.start() * self.module_mm
            result.append((x, (match.end() - match.start()) * self.module_mm))
        return result


def short_fingerprint(fingerprint_sha256: str, *, length: int = SHORT_FINGERPRINT_BYTES) -> str:
    """``AB:CD:EF:…`` — the first ``length`` bytes of a hex SHA-256 fingerprint (colons optional)."""
    digits = fingerprint_sha256.replace(":", "").strip().lower()
    if len(digits) != 64 or not re.fullmatch(r"[0-9a-f]+", digits):
        raise LabelError(
            f"{fingerprint_sha256!r} is not a SHA-256 fingerprint (64 hex digits) — the label needs the "
            "fingerprint of the certificate issued to the board"
        )
    return ":".join(digits[i : i + 2] for i in range(0, length * 2, 2)).upper()


def label_file_name(pattern: str, serial: str, issued_on: date) -> str:
    """The file name a saved label gets (``[label] file_name``; ``{serial}`` and ``{date}`` filled in)."""
    safe_serial = re.sub(r"[^A-Za-z0-9._-]", "_", serial)
    try:
        name = pattern.format(serial=safe_serial, date=issued_on.isoformat())
    except (KeyError, IndexError, ValueError):
        name = f"label-{safe_serial}.pdf"
    name = name.replace("/", "_").strip() or f"label-{safe_serial}.pdf"
    return name if name.lower().endswith(".pdf") else name + ".pdf"


def code128_modules(serial: str) -> str:
    """The serial's Code128 symbol as a string of modules (``1`` dark, ``0`` light), stop bar included."""
    if not serial or not serial.isascii() or not serial.isprintable():
        raise LabelError(f"serial {serial!r} cannot be encoded in Code128 — it must be printable ASCII")
    import barcode  # on first use: python-barcode brings Pillow, which a unit's worker never needs

    code = barcode.get("code128", serial)
    return str(code.build()[0])


def build_label(serial: str, fingerprint_sha256: str, *, issued_on: date | None = None) -> LabelContent:
    """The label content for a board whose certificate has this fingerprint."""
    code128_modules(serial)  # refuse an unencodable serial now, not at the printer
    short_fingerprint(fingerprint_sha256)
    return LabelContent(
        serial=serial, fingerprint_sha256=fingerprint_sha256, issued_on=issued_on or date.today()
    )


def lay_out(content: LabelContent, layout: LabelLayout) -> LabelSheet:
    """Place the barcode and text on the label stock.

    The barcode takes the full usable width at up to :data:`PREFERRED_MODULE_MM` per module (quiet
    zones included) and about half the height; the three text lines share the rest.
    """
    modules = code128_modules(content.serial)
    usable_w = layout.width_mm - 2 * layout.margin_mm
    usable_h = layout.height_mm - 2 * layout.margin_mm
    total_modules = len(modules) + 2 * QUIET_ZONE_MODULES
    module_mm = min(PREFERRED_MODULE_MM, usable_w / total_modules)
    if module_mm < MIN_MODULE_MM:
        raise LabelError(
            f"serial {content.serial!r} needs {total_modules} barcode modules; at most "
            f"{int(usable_w / MIN_MODULE_MM)} fit on a {layout.title} label — choose a wider label layout"
        )
    bar_width = len(modules) * module_mm
    bar_height = usable_h * 0.52
    barcode_box = Box(layout.margin_mm + (usable_w - bar_width) / 2, layout.margin_mm, bar_width, bar_height)
    # Text: the serial a little larger (people read it back), then fingerprint and date.
    text_top = layout.margin_mm + bar_height + usable_h * 0.03
    text_h = layout.height_mm - layout.margin_mm - text_top
    weights = (1.25, 1.0, 1.0)
    unit = text_h / sum(weights)
    texts: list[TextLine] = []
    y = text_top
    for index, (line, weight) in enumerate(zip(content.lines, weights, strict=True)):
        height = unit * weight
        # 1 pt = 0.3528 mm; the glyphs take about 75 % of the line.
        size_pt = height * 0.75 / 0.3528
        texts.append(
            TextLine(
                line,
                Box(layout.margin_mm, y, usable_w, height),
                size_pt,
                bold=index == 0,
                monospace=index < 2,
            )
        )
        y += height
    return LabelSheet(content, layout, modules, module_mm, barcode_box, tuple(texts))


def barcode_png(
    serial: str, *, module_mm: float = PREFERRED_MODULE_MM, height_mm: float = 12.0, dpi: int = 300
) -> bytes:
    """The serial's Code128 barcode as PNG bytes (python-barcode's Pillow writer), quiet zones included."""
    code128_modules(serial)
    import barcode
    from barcode.writer import ImageWriter

    writer = ImageWriter(format="PNG", dpi=dpi)
    code = barcode.get("code128", serial, writer=writer)
    out = io.BytesIO()
    code.write(
        out,
        options={
            "module_width": module_mm,
            "module_height": height_mm,
            "quiet_zone": QUIET_ZONE_MODULES * module_mm,
            "write_text": False,
            "background": "white",
            "foreground": "black",
        },
    )
    return out.getvalue()
