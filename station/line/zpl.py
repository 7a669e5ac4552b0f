"""ZPL II for thermal label printers (Zebra and the many printers that speak its language).

:func:`label_zpl` lays out the same facts as the PDF label (:mod:`station.label`) — the serial as Code 128 and
as text, the certificate's short fingerprint, the date — plus the station's name and a QR code holding the
serial and the certificate's whole SHA-256 fingerprint, on one label stock at the printer's resolution.

:func:`parse_host_status` reads the printer's answer to ``~HS`` (host status) into problems a person can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from station.label import QUIET_ZONE_MODULES, LabelContent, LabelError, LabelLayout, code128_modules

# 203 dpi, the resolution of most line label printers (8 dots per millimetre).
DOTS_PER_MM = 8
# The narrowest Code 128 bar that a 203 dpi print head prints evenly is two dots (0.25 mm).
MIN_MODULE_DOTS = 2
MAX_MODULE_DOTS = 3
# Characters with a meaning in ZPL are sent as hex escapes (^FH) so no field can end a command early.
_HEX_INDICATOR = "_"
_ESCAPED = frozenset("^~_")


def qr_payload(content: LabelContent) -> str:
    """What the label's QR code holds: the serial and the certificate's whole SHA-256 fingerprint."""
    digits = content.fingerprint_sha256.replace(":", "").upper()
    return f"{content.serial} SHA256:{digits}"


@dataclass(frozen=True)
class ZplLabel:
    """One label in ZPL, with the geometry it was laid out for (dots)."""

    zpl: str
    width_dots: int
    height_dots: int
    dots_per_mm: int

    def encode(self) -> bytes:
        return self.zpl.encode("utf-8")


# long: one label layout in ZPL, field after field, in printing order
def label_zpl(
    content: LabelContent, layout: LabelLayout, *, station: str, dots_per_mm: int = DOTS_PER_MM
) -> ZplLabel:
    """The board's label in ZPL II for ``layout`` (the label stock) at ``dots_per_mm``.

    Top: the Code 128 barcode across the label. Below it, left: the serial (large), ``SHA-256 <short
    fingerprint>``, the date and the station; right: the QR code.
    """
    width = round(layout.width_mm * dots_per_mm)
    height = round(layout.height_mm * dots_per_mm)
    margin = round(layout.margin_mm * dots_per_mm)
    usable_w, usable_h = width - 2 * margin, height - 2 * margin
    gap = max(6, round(usable_h * 0.04))
    modules = len(code128_modules(content.serial))
    # The QR code (version 4 at most: serial + 64 hex digits in alphanumeric mode, level M) on the right,
    # as large as the height allows up to 0.5 mm per module; Code 128 and the text share the left.
    qr_modules = 33
    for magnification in range(min(4, usable_h // qr_modules), 1, -1):
        qr_size = qr_modules * magnification
        left_w = usable_w - qr_size - gap
        # The quiet zone left of the bars may lie in the label's own margin; the one on the right may not.
        module = min(MAX_MODULE_DOTS, (left_w + margin) // (modules + 2 * QUIET_ZONE_MODULES))
        if module >= MIN_MODULE_DOTS:
            break
    else:
        raise LabelError(
            f"serial {content.serial!r} needs {modules + 2 * QUIET_ZONE_MODULES} barcode modules beside the QR code; they do not fit on a "
            f"{layout.title} label at {dots_per_mm * 25.4:.0f} dpi — choose a wider label stock in [label] stock"
        )
    bar_h = round(usable_h * 0.45)
    bar_w = modules * module
    quiet = QUIET_ZONE_MODULES * module
    first, last = max(margin, quiet), margin + left_w - quiet
    bar_x = first + (last - first - bar_w) // 2
    qr_x = margin + left_w + gap
    qr_y = margin + (usable_h - qr_size) // 2
    text_top = margin + bar_h + gap
    rest_h = height - margin - text_top
    serial_h = round(rest_h * 0.38)
    small_h = round(rest_h * 0.25)
    small_w = round(small_h * 0.5)
    lines = [
        (text_top, serial_h, round(serial_h * 0.75), content.serial),
        (text_top + serial_h + gap // 2, small_h, small_w, f"SHA-256 {content.short_fingerprint}"),
        (
            text_top + serial_h + small_h + gap,
            small_h,
            small_w,
            f"{content.issued_on.isoformat()}  {station}".rstrip(),
        ),
    ]
    parts = [
        "^XA",
        "^CI28",  # field data is UTF-8
        f"^PW{width}",
        f"^LL{height}",
        "^LH0,0",
        # The QR code comes before ^BY: a renderer (and some firmware) moves ^BQ down by the ^BY bar height.
        # ^BQ prints about ten dots below its field origin; the QR quiet zone is the label's own white.
        f"^FO{qr_x},{max(0, qr_y - 10)}^BQN,2,{magnification}{_field('MA,' + qr_payload(content))}",
        f"^FO{bar_x},{margin}^BY{module},3,{bar_h}^BCN,{bar_h},N,N,N,A{_field(content.serial)}",
    ]
    for y, h, w, text in lines:
        parts.append(f"^FO{margin},{y}^A0N,{h},{w}^FB{left_w},1,0,C,0{_field(text)}")
    parts.append("^PQ1")
    parts.append("^XZ")
    return ZplLabel("\n".join(parts) + "\n", width, height, dots_per_mm)


def _field(text: str) -> str:
    """``^FH^FD<text>^FS`` with ZPL's command characters hex-escaped."""
    if any(ord(c) < 32 for c in text):
        raise LabelError(f"{text!r} holds control characters, which a label cannot print")
    escaped = "".join(
        "".join(f"{_HEX_INDICATOR}{b:02X}" for b in c.encode()) if c in _ESCAPED else c for c in text
    )
    return f"^FH{_HEX_INDICATOR}^FD{escaped}^FS"


# ------------------------------------------------------------------------------------------- ~HS


@dataclass(frozen=True)
class PrinterStatus:
    """What a printer said about itself; ``problems`` are in words, each with what to do."""

    problems: tuple[str, ...]
    raw: str = ""

    @property
    def ready(self) -> bool:
        return not self.problems


_STATUS_LINE = re.compile(r"\x02([^\x03]*)\x03")


def parse_host_status(answer: bytes) -> PrinterStatus:
    """Parse the three ``<STX>…<ETX>`` strings a ZPL printer answers to ``~HS``.

    String 1: ``aaa,b,c,dddd,eee,f,g,h,iii,j,k,l`` — b paper out, c paused, f buffer full, j corrupt RAM,
    k under temperature, l over temperature. String 2: ``mmm,n,o,p,q,…`` — o head up, p ribbon out,
    q thermal-transfer mode (a ribbon only matters then).
    """
    text = answer.decode("latin-1")
    strings = [match.split(",") for match in _STATUS_LINE.findall(text)]
    if len(strings) < 2 or len(strings[0]) < 12 or len(strings[1]) < 5:
        raise LabelError(
            f"the printer's status answer is not ZPL host status ({text[:60]!r}) — check that [label] printer "
            "points at a ZPL label printer"
        )
    first, second = strings[0], strings[1]

    def flag(values: list[str], index: int) -> bool:
        return values[index].strip() == "1"

    problems = []
    if flag(first, 1):
        problems.append("out of labels — load a new roll and close the print head")
    if flag(second, 2):
        problems.append("print head open — close the print head")
    if flag(second, 3) and flag(second, 4):
        problems.append("out of ribbon — load a new ribbon")
    if flag(first, 2):
        problems.append("paused — press PAUSE on the printer to resume")
    if flag(first, 5):
        problems.append("receive buffer full — wait for the printer to finish, then reprint")
    if flag(first, 9):
        problems.append("memory corrupt — switch the printer off and on")
    if flag(first, 10):
        problems.append("print head too cold — wait for it to warm up")
    if flag(first, 11):
        problems.append("print head too hot — let it cool down")
    return PrinterStatus(tuple(problems), text)


def host_status_answer(
    *,
    paper_out: bool = False,
    paused: bool = False,
    head_open: bool = False,
    ribbon_out: bool = False,
    thermal_transfer: bool = False,
) -> bytes:
    """A printer's ``~HS`` answer with these flags (what test printers send back)."""
    first = f"030,{int(paper_out)},{int(paused)},1218,000,0,0,0,000,0,0,0"
    second = f"001,0,{int(head_open)},{int(ribbon_out)},{int(thermal_transfer)},2,6,0,00000000,1,000"
    return f"\x02{first}\x03\r\n\x02{second}\x03\r\n\x021234,0\x03\r\n".encode()
