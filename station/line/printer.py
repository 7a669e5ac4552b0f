"""Sending labels to a label printer: raw ZPL over TCP (``zpl://HOST:9100``) or an IPP queue (``ipp://…``).

Every exchange has a deadline: a printer that is switched off, unplugged or that accepts the connection and
then says nothing is reported in words within ``[label] timeout_s``, never waited for.  The printer's own
status is read before a label is sent (``~HS`` for ZPL, ``printer-state-reasons`` for IPP); a printer that
is out of labels, open or paused is not sent the label (it would come out later, on the wrong board) — the
person is told what to fix and reprints from the unit's detail.

IPP goes through ``ipptool`` (CUPS' own IPP client, Debian package cups-ipp-utils): it is maintained with
CUPS by OpenPrinting, speaks every IPP version and transport (ipp, ipps, IPP Everywhere), and needs neither
a local CUPS daemon (as pycups does) nor an event loop (pyipp is asyncio-only and has no Print-Job).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from station.label import LabelError
from station.line.zpl import PrinterStatus, parse_host_status

ZPL_PORT = 9100
IPP_PORT = 631
# The ZPL document format a ZPL-capable IPP printer (LPrint, a Zebra's IPP server) accepts as is.
ZPL_MIME = "application/vnd.zebra-zpl"
# Bytes of a ~HS answer we read at most (three short lines; anything longer is not a printer).
STATUS_MAX_BYTES = 512


class PrinterError(LabelError):
    """The label could not be handed to the printer (what happened, what to do)."""


class LabelPrinter(Protocol):
    url: str

    def status(self) -> PrinterStatus: ...

    def send(self, document: bytes, *, name: str) -> None: ...


def open_printer(url: str, *, timeout_s: float) -> LabelPrinter:
    scheme = urlsplit(url).scheme
    if scheme == "zpl":
        return ZplPrinter(url, timeout_s=timeout_s)
    if scheme in ("ipp", "ipps"):
        return IppPrinter(url, timeout_s=timeout_s)
    raise PrinterError(f"printer {url!r} is neither zpl://HOST:9100 nor ipp://… — fix [label] printer")


@dataclass
class ZplPrinter:
    """A ZPL printer's raw port: ``~HS`` and the label go over one TCP connection each, under one deadline."""

    url: str
    timeout_s: float = 5.0

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or ZPL_PORT

    def status(self) -> PrinterStatus:
        with self._connect() as conn:
            deadline = time.monotonic() + self.timeout_s
            conn.sendall(b"~HS\r\n")
            answer = b""
            while answer.count(b"\x03") < 3 and len(answer) < STATUS_MAX_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                conn.settimeout(left)
                try:
                    chunk = conn.recv(STATUS_MAX_BYTES - len(answer))
                except TimeoutError:
                    break
                except OSError as exc:
                    raise self._unreachable(exc) from exc
                if not chunk:
                    break
                answer += chunk
        if answer.count(b"\x03") < 2:
            raise PrinterError(
                f"printer {self.url} did not answer its status request within {self.timeout_s:g} s — check that "
                "it is switched on, online and that [label] printer is its address"
            )
        return parse_host_status(answer)

    def send(self, document: bytes, *, name: str) -> None:
        with self._connect() as conn:
            deadline = time.monotonic() + self.timeout_s
            view = memoryview(document)
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PrinterError(
                        f"printer {self.url} did not take label {name} within {self.timeout_s:g} s — check the "
                        "printer, then reprint from the unit's detail"
                    )
                conn.settimeout(left)
                try:
                    view = view[conn.send(view) :]
                except OSError as exc:
                    raise self._unreachable(exc) from exc
            conn.shutdown(socket.SHUT_WR)

    def _connect(self) -> socket.socket:
        try:
            return socket.create_connection(self.address, timeout=self.timeout_s)
        except OSError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: OSError) -> PrinterError:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return PrinterError(
            f"printer {self.url} cannot be reached ({reason}) — check that it is switched on and on the network, "
            "then reprint from the unit's detail"
        )


# printer-state-reasons (RFC 8011 / PWG 5100) a label printer reports, in the words of the line.
_IPP_REASONS = {
    "media-empty": "out of labels — load a new roll",
    "media-needed": "out of labels — load a new roll",
    "media-jam": "labels jammed — clear the jam",
    "cover-open": "cover open — close it",
    "door-open": "cover open — close it",
    "marker-supply-empty": "out of ribbon — load a new ribbon",
    "paused": "paused — resume the printer",
    "offline": "offline — put the printer online",
    "shutdown": "shut down — switch the printer on",
}


@dataclass
class IppPrinter:
    """An IPP print queue, driven by ``ipptool`` with a deadline on every request."""

    url: str
    timeout_s: float = 5.0

    def status(self) -> PrinterStatus:
        output = self._ipptool(_GET_STATUS, None)
        state = re.search(r"printer-state \(enum\) = (\S+)", output)
        reasons = re.search(r"printer-state-reasons \([^)]*\) = (\S+)", output)
        found = [
            r.removesuffix("-error").removesuffix("-warning").removesuffix("-report")
            for r in (reasons.group(1).split(",") if reasons else [])
        ]
        problems = list(dict.fromkeys(_IPP_REASONS[r] for r in found if r in _IPP_REASONS))
        if state and state.group(1) == "stopped" and not problems:
            problems.append("stopped — look at the printer's display")
        return PrinterStatus(tuple(problems), output)

    def send(self, document: bytes, *, name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="station-ipp-") as tmp:
            path = Path(tmp) / f"{name}.zpl"
            path.write_bytes(document)
            self._ipptool(_PRINT_JOB.replace("@NAME@", _ipp_text(name)), path)

    def _ipptool(self, test: str, document: Path | None) -> str:
        tool = shutil.which("ipptool")
        if tool is None:
            raise PrinterError(
                f"ipptool is not installed — install the Debian package cups-ipp-utils to print to {self.url}"
            )
        with tempfile.NamedTemporaryFile("w", suffix=".test", prefix="station-ipp-") as file:
            file.write(test)
            file.flush()
            argv = [tool, "-T", f"{self.timeout_s:g}", "-t"]
            if document is not None:
                argv += ["-f", str(document)]
            argv += [self.url, file.name]
            try:
                done = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    timeout=self.timeout_s + 2,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                raise PrinterError(
                    f"printer {self.url} did not answer within {self.timeout_s:g} s — check the print "
                    "queue, then reprint from the unit's detail"
                ) from None
        if done.returncode != 0:
            last = _last_line(done.stdout + done.stderr)
            raise PrinterError(
                f"printer {self.url} refused the request ({last}) — check the print queue, then "
                "reprint from the unit's detail"
            )
        return done.stdout


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and "PASS" not in line]
    return lines[-1][:200] if lines else "no answer"


def _ipp_text(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60]


_GET_STATUS = """{
  NAME "printer status"
  OPERATION Get-Printer-Attributes
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR name requesting-user-name station
  ATTR keyword requested-attributes printer-state,printer-state-reasons
  STATUS successful-ok
  DISPLAY printer-state
  DISPLAY printer-state-reasons
}
"""

_PRINT_JOB = (
    """{
  NAME "print label"
  OPERATION Print-Job
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR name requesting-user-name station
  ATTR name job-name @NAME@
  ATTR mimeMediaType document-format """
    + ZPL_MIME
    + """
  FILE $filename
  STATUS successful-ok
  STATUS successful-ok-ignored-or-substituted-attributes
}
"""
)
