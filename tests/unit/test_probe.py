"""The fixture reachability probe: does a device answer at its address, without logging in?"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from station.transport.base import DeviceAddress, probe


def test_an_ssh_device_that_accepts_a_connection_answers() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        answers, detail = probe(DeviceAddress.parse(f"ssh://root@127.0.0.1:{port}"), 2.0)
    assert answers is True
    assert detail.startswith(f"127.0.0.1:{port} answered in ") and detail.endswith(" ms")


def test_nothing_listening_is_no_answer_with_the_reason() -> None:
    with socket.socket() as placeholder:  # a port that was free a moment ago and has no listener
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    answers, detail = probe(DeviceAddress.parse(f"ssh://root@127.0.0.1:{port}"), 2.0)
    assert answers is False
    assert detail == f"127.0.0.1:{port}: Connection refused"


def test_a_device_that_never_replies_is_no_answer_within_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[float] = []

    def silent(address: tuple[str, int], timeout: float) -> socket.socket:
        asked.append(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    answers, detail = probe(DeviceAddress.parse("ssh://root@127.0.0.2:2222"), 0.25)
    assert (answers, detail) == (False, "127.0.0.2:2222: no reply within 0.25 s")
    assert asked == [0.25]  # the deadline reaches the connect


def test_a_serial_console_answers_when_its_port_exists(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB0"
    address = DeviceAddress.parse(f"serial://{port}?baud=115200")
    assert probe(address, 1.0) == (False, f"{port} missing")
    port.touch()
    assert probe(address, 1.0) == (True, f"{port} present")


def test_the_probe_sends_nothing_to_the_device() -> None:
    received: list[bytes] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def accept() -> None:
            connection, _ = server.accept()
            with connection:
                connection.settimeout(2.0)
                received.append(connection.recv(1024))

        listener = threading.Thread(target=accept)
        listener.start()
        assert probe(DeviceAddress.parse(f"ssh://root@127.0.0.1:{port}"), 2.0)[0]
        listener.join(5)
    assert received == [b""]  # connected, then closed without a byte
