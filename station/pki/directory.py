"""The CA directory on disk: passphrase rules, refusing to overwrite a CA, private (0700/0600) files."""

from __future__ import annotations

from pathlib import Path

from station.errors import StationError
from station.pki.certs import CA_FILES, MIN_PASSPHRASE_LENGTH, STATION_CSR_FILE
from station.pki.token import TOKEN_FILE


def _check_new_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise StationError(
            f"The CA passphrase is shorter than {MIN_PASSPHRASE_LENGTH} characters — choose a longer one; "
            "it is the only protection of the CA key at rest."
        )
    if len(passphrase) > 1023:  # the PEM encryption of cryptography/OpenSSL accepts no more
        raise StationError("The CA passphrase is longer than 1023 bytes — choose a shorter one.")


def refuse_existing_ca(directory: Path) -> None:
    """Raise if ``directory`` already holds any CA file (ask before prompting for a new passphrase)."""
    existing = [name for name in (*CA_FILES, TOKEN_FILE, STATION_CSR_FILE) if (directory / name).exists()]
    if existing:
        raise StationError(
            f"A CA already exists in {directory} ({', '.join(existing)}) — refusing to overwrite it. "
            "See it with `station ca show`; to start over, move that directory away first."
        )


def _make_private_directory(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)  # mkdir's mode is filtered by the umask and ignored if it existed


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise StationError(
            f"{path} is readable or writable by group or others (mode {mode:04o}) — the CA's private keys "
            f"must be private to their owner. Run `chmod 600 {path}` and try again."
        )
