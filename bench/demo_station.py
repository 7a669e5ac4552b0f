"""A throw-away station with real simulated boards, for screenshots and measurements of the window.

Creates a station home in a temporary directory, a CA, and a simulated farm (``station.sim``: needs
root and Linux namespaces), and always powers the farm off again.  Also helpers to drive the window
and wait for it without blocking its event loop.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEventLoop, QTimer, SignalInstance

from station.home import StationHome
from station.pki import CertificateAuthority
from station.sim.farm import Farm, SimDevice

DEMO_PASSPHRASE = "demo station passphrase"


@dataclass
class DemoStation:
    home: StationHome
    farm: Farm
    devices: list[SimDevice]
    ca: CertificateAuthority


@contextmanager
def demo_station(count: int = 2, **farm_options: Any) -> Iterator[DemoStation]:
    """A station home with a CA and ``count`` running simulated boards (stopped on exit)."""
    # `timeout` or Ctrl-C must still power the farm off: turn SIGTERM into an exception.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="station-demo-") as tmp:
        home = StationHome(Path(tmp) / "home").create()
        ca = CertificateAuthority.init(home.ca_dir, passphrase=DEMO_PASSPHRASE.encode())
        farm = Farm(home)
        try:
            devices = farm.up(count, **farm_options)
            yield DemoStation(home, farm, devices, ca)
        finally:
            farm.down()
            signal.signal(signal.SIGTERM, previous)


def wait_for(
    signal: SignalInstance, timeout_s: float, accept: Callable[..., bool] = lambda *args: True
) -> list[Any]:
    """Run the event loop until ``signal`` carries arguments ``accept`` likes; raise after ``timeout_s``."""
    loop = QEventLoop()
    got: list[Any] = []
    arrived = False  # a signal without arguments leaves ``got`` empty

    def seen(*args: Any) -> None:
        nonlocal arrived
        if not arrived and accept(*args):
            arrived = True
            got.extend(args)
            loop.quit()

    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    signal.connect(seen)
    timer.start(round(timeout_s * 1000))
    try:
        loop.exec()
    finally:
        timer.stop()
        signal.disconnect(seen)
    if not arrived:
        raise TimeoutError(f"nothing arrived within {timeout_s:g} s")
    return got


def pause(seconds: float) -> None:
    """Let the event loop run for a while (the window keeps painting and receiving events)."""
    loop = QEventLoop()
    QTimer.singleShot(round(seconds * 1000), loop.quit)
    loop.exec()


def ensure_display() -> None:
    if not any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
