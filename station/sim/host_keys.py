"""A simulated board's SSH host key: generating the ed25519 pair in OpenSSH format, and its SHA256 fingerprint
as ``ssh-keygen -lf`` prints it.  Moved out of :mod:`station.sim.farm`, which re-exports every name.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def host_key_fingerprint(public_key_line: str) -> str:
    """SHA256 fingerprint of an OpenSSH public key line, in ``ssh-keygen -lf`` format."""
    blob = base64.b64decode(public_key_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def generate_host_key(private_path: Path, public_path: Path, hostname: str) -> None:
    """An ed25519 SSH host key pair in OpenSSH format (the private file readable by its owner only)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private)
    public_path.write_bytes(public + f" root@{hostname}\n".encode())
