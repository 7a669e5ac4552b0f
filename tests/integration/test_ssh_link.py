"""The SSH link's choice of cipher and its SFTP sessions, against a real simulated board (OpenSSH)."""

from __future__ import annotations

import collections
import threading

import paramiko
import paramiko.common
import pytest

from station.shell import command
from station.transport import Deadline, LinkError
from station.transport.ssh import _Transport
from tests.helpers.boards import open_ssh_link


def test_the_link_negotiates_aes_gcm_with_openssh_and_still_offers_every_other_cipher(start_farm, sim_home):
    # An AEAD keeps paramiko's per-packet MAC check (a Python loop over the MAC's bytes) off the unit's
    # CPU; a board whose sshd lacks GCM still finds every cipher paramiko offers, in paramiko's order.
    offered = _Transport._preferred_ciphers
    assert offered[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert sorted(offered) == sorted(paramiko.Transport._preferred_ciphers)
    assert [name for name in offered if "gcm" not in name] == [
        name for name in paramiko.Transport._preferred_ciphers if "gcm" not in name
    ]
    (device,) = start_farm(1)
    link = open_ssh_link(sim_home, device)
    try:
        transport = link._transport
        assert transport is not None
        assert (transport.local_cipher, transport.remote_cipher) == (
            "aes128-gcm@openssh.com",
            "aes128-gcm@openssh.com",
        )
        assert link.run(command("echo", "through GCM"), Deadline(30)).stdout == "through GCM\n"
    finally:
        link.close()


def test_a_steps_transfers_share_one_sftp_session_and_the_next_step_or_a_failure_opens_another(
    start_farm, sim_home
):
    # A step's transfers run under its deadline: they share one SFTP session (one sftp-server on the
    # board); a transfer under another deadline (the next step, or a retry) starts its own, and a transfer
    # that failed leaves nothing open for the next to read from.
    (device,) = start_farm(1)
    link = open_ssh_link(sim_home, device)

    def sftp_servers() -> list[str]:
        answer = link.run(command("pgrep", "-x", "sftp-server"), Deadline(30), check=False)
        return answer.stdout.split()

    try:
        step = Deadline(30)
        link.put(b"first\n", "/tmp/one.txt", step)
        link.put(b"second\n", "/tmp/two.txt", step)
        (serving,) = sftp_servers()
        assert link.get("/tmp/one.txt", step) == b"first\n"
        assert sftp_servers() == [serving]

        next_step = Deadline(30)
        assert link.get("/tmp/two.txt", next_step) == b"second\n"
        (now_serving,) = sftp_servers()
        assert now_serving != serving

        with pytest.raises(LinkError, match="could not read /tmp/missing.txt"):
            link.get("/tmp/missing.txt", next_step)
        assert sftp_servers() == []
        assert link.get("/tmp/one.txt", next_step) == b"first\n"
        assert len(sftp_servers()) == 1
    finally:
        link.close()


def test_a_command_that_ends_before_the_station_has_said_eof_does_not_cost_the_connection(
    start_farm, sim_home, monkeypatch
):
    # paramiko #1705: a channel EOF the unit's thread has built but not yet sent when the reader thread answers
    # the board's CLOSE reaches sshd after the channel is freed; sshd drops the whole connection ("ieof packet
    # referred to nonexistent channel 0").  The fleet test on a loaded PC gave exactly that interleaving; here
    # every EOF sent from outside the reader thread is held until its channel is closed, so the interleaving
    # happens every time if the link sends one.
    (device,) = start_farm(1)
    link = open_ssh_link(sim_home, device)
    real_send = paramiko.Transport._send_user_message
    real_set_closed = paramiko.Channel._set_closed
    # By the channel's own number: the board's sshd gives every sequential session the same number, 0.
    closed: dict[int, threading.Event] = collections.defaultdict(threading.Event)
    held: list[int] = []

    def set_closed(channel: paramiko.Channel) -> None:
        real_set_closed(channel)
        closed[channel.chanid].set()

    def eof_held_until_close(transport: paramiko.Transport, data: object) -> None:
        raw = data.asbytes() if isinstance(data, paramiko.Message) else bytes(data)
        if (
            raw[:1] == bytes([paramiko.common.MSG_CHANNEL_EOF])
            and threading.current_thread() is not transport
        ):
            remote_id = int.from_bytes(raw[1:5], "big")
            open_here = [
                c for c in list(transport._channels.values()) if c.remote_chanid == remote_id and not c.closed
            ]
            for channel in open_here:
                held.append(remote_id)
                closed[channel.chanid].wait(5)
        real_send(transport, data)

    monkeypatch.setattr(paramiko.Channel, "_set_closed", set_closed)
    monkeypatch.setattr(paramiko.Transport, "_send_user_message", eof_held_until_close)
    try:
        for word in ("first", "second", "third"):
            assert link.run(command("echo", word), Deadline(30)).stdout == f"{word}\n"
        assert held == []  # the link never says EOF on a channel whose command may still close it
    finally:
        link.close()
