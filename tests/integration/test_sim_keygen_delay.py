"""--keygen-delay makes key generation as slow as on a real OP-TEE board, with the same command line."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

MODULE = "/usr/lib/libckteec.so.0"
DELAY_S = 1.5


def board_seconds(ssh, device, command: str) -> float:
    """Wall time of ``command``, measured on the board (no SSH overhead)."""
    timed = f"start=$(date +%s%N); {command} >/dev/null; status=$?; echo $(( $(date +%s%N) - start )); exit $status"
    return int(ssh(device, timed).stdout.split()[-1]) / 1e9


def keygen_seconds(ssh, device, label: str) -> float:
    return board_seconds(
        ssh,
        device,
        f"pkcs11-tool --module {MODULE} --keypairgen --label {label} --key-type rsa:2048 --login --pin 0000",
    )


def test_keygen_delay_slows_key_generation(start_farm, ssh):
    (device,) = start_farm(1, keygen_delay=0.0)
    ssh(device, f"pkcs11-tool --module {MODULE} --init-token --label token0 --so-pin 00000000")
    ssh(
        device,
        f"pkcs11-tool --module {MODULE} --init-pin --label token0 --login --so-pin 00000000 --pin 0000",
    )
    plain = keygen_seconds(ssh, device, "key0")

    (device,) = start_farm(1, keygen_delay=DELAY_S)  # same home: the token survives the restart
    delayed = keygen_seconds(ssh, device, "key1")
    listed = ssh(device, f"pkcs11-tool --module {MODULE} --list-objects --login --pin 0000").stdout

    assert delayed >= DELAY_S
    assert delayed / plain > 2, (plain, delayed)
    assert "key0" in listed and "key1" in listed
    # Only key generation is slowed down.
    assert board_seconds(ssh, device, f"pkcs11-tool --module {MODULE} --list-slots") < DELAY_S
