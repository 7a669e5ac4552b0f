"""The Welma secure-storage enrollment tutorial, run verbatim on a simulated board with plain OpenSSH."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers.processes import read_until

pytestmark = pytest.mark.integration

SERIAL = "202600000000001"
MODULE = "/usr/lib/libckteec.so.0"

# Step 2 and 3 as the tutorial prints them (line continuations joined).
WIPE = r"find /var/lib/tee -mindepth 1 -exec rm {} \;"
INIT_TOKEN = f"pkcs11-tool --module {MODULE} --init-token --label token0 --so-pin 00000000"
INIT_PIN = f"pkcs11-tool --module {MODULE} --init-pin --label token0 --login --so-pin 00000000 --pin 0000"
KEYGEN = f"pkcs11-tool --module {MODULE} --keypairgen --label key0 --key-type rsa:2048 --login --pin 0000"
CSR = (
    f"SERIAL={SERIAL}; PKCS11_MODULE_PATH={MODULE} openssl req -new -batch -engine pkcs11 -keyform engine "
    '-key "pkcs11:object=key0;pin-value=0000" -subj "/CN=serial:$SERIAL/" -out /tmp/key0.csr'
)
PRIVATE_KEY_ACCESS = "Access:     sensitive, always sensitive, never extractable, local"


def workstation(command: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A workstation command line of the tutorial, split as the shell would (no expansions in them)."""
    done = subprocess.run(
        shlex.split(command), cwd=cwd, input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done


def test_steps_2_and_3_run_verbatim_and_the_key_never_leaves_the_token(start_farm, ssh, wait_for_state):
    (device,) = start_farm(1)

    ssh(device, WIPE)
    reboot = ssh(device, "reboot", check=False)
    assert reboot.returncode == 255, "reboot must drop the SSH session"
    wait_for_state(device.name, "up")

    assert "Token successfully initialized" in ssh(device, INIT_TOKEN).stdout
    assert "User PIN successfully initialized" in ssh(device, INIT_PIN).stdout
    keygen = ssh(device, KEYGEN).stdout
    assert "Key pair generated:" in keygen
    assert PRIVATE_KEY_ACCESS in keygen

    ssh(device, CSR)  # openssl prints 'Engine "pkcs11" set.' on stderr: not a failure
    objects = ssh(device, f"pkcs11-tool --module {MODULE} --list-objects --login --pin 0000").stdout
    private = objects.split("Private Key Object")[1].split("Public Key Object")[0]
    assert "label:      key0" in private
    assert PRIVATE_KEY_ACCESS in private
    assert "extractable," not in private.replace("never extractable,", "")

    csr = ssh(device, "cat /tmp/key0.csr").stdout
    subject = subprocess.run(
        ["openssl", "req", "-verify", "-noout", "-subject"],
        input=csr,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert f"CN = serial:{SERIAL}" in subject.stdout


def test_enrollment_and_mutual_tls_from_the_board(start_farm, ssh, sim_home, tmp_path):
    """Steps 1, 4 and 5: the workstation's CA, certificates back on the board, then TLS with key0."""
    (device,) = start_farm(1)
    for command in (INIT_TOKEN, INIT_PIN, KEYGEN, CSR):
        ssh(device, command)

    ws = tmp_path / "workstation"
    ws.mkdir()
    for command in (
        "openssl genrsa -out ca.key 2048",
        'openssl req -new -x509 -subj "/CN=ca" -out ca.cert -key ca.key',
        "openssl genrsa -out system.key 2048",
        'openssl req -new -batch -key system.key -subj "/CN=system" -out system.csr',
        "openssl req -CA ca.cert -CAkey ca.key -in system.csr -out system.cert -days 3650",
    ):
        workstation(command, ws)

    # Step 4: `ssh device-under-test cat /tmp/key0.csr | openssl req -CA …`, then scp to /var/lib/.
    csr = ssh(device, "cat /tmp/key0.csr").stdout
    workstation(
        "openssl req -CA ca.cert -CAkey ca.key -in /dev/stdin -out key0.cert -days 3650", ws, stdin=csr
    )
    scp = [
        "scp",
        "-F",
        "/dev/null",
        "-i",
        str(sim_home.ssh_key),
        "-o",
        f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
        "-o",
        "BatchMode=yes",
        "-P",
        str(device.port),
        "key0.cert",
        "ca.cert",
        f"root@{device.address}:/var/lib/",
    ]
    subprocess.run(scp, cwd=ws, capture_output=True, timeout=30, check=True)

    # Step 5: the workstation's TLS server; the board shares the host's network, so SERVERIP is loopback.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        tls_port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{tls_port}",
            "-key",
            "system.key",
            "-cert",
            "system.cert",
            "-verifyCAfile",
            "ca.cert",
            "-Verify",
            "1",
            "-naccept",
            "1",
        ],
        cwd=ws,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        started = read_until(server, b"ACCEPT", timeout_s=10)
        client = ssh(
            device,
            "SERVERIP=127.0.0.1; PKCS11_MODULE_PATH=/usr/lib/libckteec.so.0 openssl s_client "
            f"-connect $SERVERIP:{tls_port} -engine pkcs11 -keyform engine "
            "-key 'pkcs11:object=key0;pin-value=0000' -CAfile /var/lib/ca.cert -cert /var/lib/key0.cert "
            "-verify_return_error </dev/null",
        )
        assert "Verify return code: 0 (ok)" in client.stdout
        rest, _ = server.communicate(timeout=20)
        output = (started + rest).decode(errors="replace")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=5)
    assert re.search(rf"subject=CN\s*=\s*serial:{SERIAL}", output), output
    assert "issuer=CN = ca" in output
