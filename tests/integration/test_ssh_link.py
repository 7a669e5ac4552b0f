"""The SSH link's choice of cipher, against a real simulated board (OpenSSH)."""

from __future__ import annotations

import paramiko

from station.shell import command
from station.transport import Deadline
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
