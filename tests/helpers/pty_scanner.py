"""A serial barcode scanner that a test plugs in and out: a pty whose slave is reached through a stable path
(like /dev/ttyACM0 appearing and vanishing with the USB cable)."""

from __future__ import annotations

import os
import tty
from pathlib import Path


class PtyScanner:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.master: int | None = None
        self._slave: int | None = None
        self.plug()

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self.master, self._slave = master, slave
        self.path.unlink(missing_ok=True)
        self.path.symlink_to(os.ttyname(slave))

    def scan(self, code: str, terminator: str = "\r") -> None:
        assert self.master is not None, "the scanner is unplugged"
        os.write(self.master, (code + terminator).encode())

    def unplug(self) -> None:
        self.path.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    def close(self) -> None:
        if self.master is not None:
            self.unplug()
