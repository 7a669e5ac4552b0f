"""What the SSH link says when paramiko gives it nothing to say.

paramiko's reader thread keeps a bare ``EOFError()`` when the board closes the connection (or sends SSH's
disconnect), and hands it to whatever waits next: CI showed "stopped answering while starting a command () —".
"""

from __future__ import annotations

import threading

import pytest

from station.shell import command
from station.transport import Deadline, DeviceAddress, LinkLost
from station.transport.ssh import SshLink


class _ClosedByTheBoard:
    """A transport that still looked active, whose session request meets the connection closed by the board."""

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float | None = None) -> object:
        raise EOFError()

    def close(self) -> None:
        pass


def test_a_command_that_meets_a_closed_connection_says_so_in_words():
    link = SshLink(
        DeviceAddress.parse("ssh://root@127.0.0.9:2222"),
        identity_file="/nonexistent",
        pinned_host_key=None,
        cancel=threading.Event(),
    )
    link._transport = _ClosedByTheBoard()  # type: ignore[assignment]
    with pytest.raises(LinkLost) as failure:
        link.run(command("true"), Deadline(5, what="test"))
    message = str(failure.value)
    assert "stopped answering while starting a command (the board closed the connection)" in message
    assert "()" not in message
