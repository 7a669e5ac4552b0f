"""The station home: the one directory that holds all of a station's state.

station.toml, the CA, the audit database, the station's own SSH key, pinned host keys and the
simulated device farm all live below it, never in system directories.  It is chosen with
``--home DIR``, else ``STATION_HOME``, else ``~/.local/share/welma-station``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

ENV_VAR = "STATION_HOME"
DEFAULT_HOME = Path.home() / ".local" / "share" / "welma-station"


@dataclass(frozen=True)
class StationHome:
    """Paths of everything a station keeps, below one root directory."""

    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None) -> StationHome:
        """The home named on the command line, else by ``STATION_HOME``, else the default."""
        chosen = explicit or os.environ.get(ENV_VAR) or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def config_file(self) -> Path:
        return self.root / "station.toml"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def audit_db(self) -> Path:
        return self.root / "audit.db"

    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def ssh_key(self) -> Path:
        """The station's own private key, which it uses to log in to devices."""
        return self.ssh_dir / "id_ed25519"

    @property
    def ssh_public_key(self) -> Path:
        return self.ssh_dir / "id_ed25519.pub"

    @property
    def profiles_dir(self) -> Path:
        """Device profiles added by the line engineer (override the shipped ones by name)."""
        return self.root / "profiles"

    @property
    def sim_dir(self) -> Path:
        """State of the simulated device farm (``station sim``)."""
        return self.root / "sim"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def create(self) -> StationHome:
        """Create the home with owner-only permissions; keys and the audit DB live inside."""
        # umask first: every file created below (CA key, DB, SSH key) must be private from birth.
        os.umask(0o077)
        for directory in (self.root, self.ssh_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def ensure_station_key(self) -> Path:
        """Create the station's SSH key pair on first use; return the private key path.

        Devices authorise the public half (the simulator installs it in every simulated device).
        """
        self.create()
        if not self.ssh_key.exists():
            key = ed25519.Ed25519PrivateKey.generate()
            private = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
            public = key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            fd = os.open(self.ssh_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(private)
            self.ssh_public_key.write_bytes(public + b" welma-station\n")
        return self.ssh_key
