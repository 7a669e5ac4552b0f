"""Closing a command's channel while the board still streams into it must not kill the connection.

paramiko's reader thread signals the pipe behind ``Channel.fileno()`` (look at ``_closed``, then
``os.write``) under the buffer's lock, while ``Channel.close`` closes that pipe under the channel's lock
only.  CI twice lost a connection to this (``test_over_ssh_stderr_counts_too_and_the_connection_outlives_a_
refused_answer``: EBADF in the transport thread).  Here the reader thread is held exactly between the check
and the write, and the close is made while it waits there.
"""

from __future__ import annotations

import os
import threading
import types

import paramiko
import paramiko.pipe

from station.transport.ssh import close_channel

HOLD_S = 0.3


def test_a_signal_in_flight_finishes_on_an_open_pipe_before_close_channel_closes_it(monkeypatch):
    channel = paramiko.Channel(7)
    channel.fileno()  # what SshLink.run waits on: creates the pipe the transport thread signals
    pipe = channel._pipe
    in_write = threading.Event()
    may_write = threading.Event()
    real_write = os.write

    def held_write(fd: int, data: bytes) -> int:
        in_write.set()  # past PosixPipe.set's `_closed` check, under the stderr buffer's lock
        may_write.wait(5)
        return real_write(fd, data)

    monkeypatch.setattr(paramiko.pipe, "os", types.SimpleNamespace(**{**vars(os), "write": held_write}))
    failures: list[BaseException] = []

    def feed() -> None:  # what the transport thread does with a board's stderr (Channel._feed_extended)
        try:
            channel.in_stderr_buffer.feed(b"x" * 32768)
        except BaseException as exc:  # noqa: BLE001 - the test reports what the reader thread met
            failures.append(exc)

    feeder = threading.Thread(target=feed)
    feeder.start()
    assert in_write.wait(5), "the feed never reached the pipe's write"
    closer = threading.Thread(target=close_channel, args=(channel,))
    closer.start()
    closer.join(HOLD_S)
    # The close waits for the signal in flight rather than pulling the descriptor from under it.
    assert closer.is_alive()
    may_write.set()
    feeder.join(5)
    closer.join(5)
    assert not feeder.is_alive() and not closer.is_alive()
    assert failures == []
    assert channel._pipe is None
    # Both descriptors released: a signal arriving later finds the pipe closed and writes nothing.
    assert pipe._closed


class _GoneTransport:
    """A transport whose connection has just died: sending the close fails as paramiko's packetizer does."""

    def _send_user_message(self, message: object) -> None:
        raise EOFError()


def test_closing_a_channel_whose_connection_died_does_not_raise_over_what_the_caller_reports():
    # Seen with plain Channel.close: a refused answer (OutputTooLarge) replaced by a bare EOFError from the close
    # in run's `finally`, when the connection dropped as the command was given up on.
    channel = paramiko.Channel(9)
    channel.transport = _GoneTransport()
    channel.active = True
    channel.fileno()
    close_channel(channel)
    assert channel.closed
    assert channel._pipe is None
