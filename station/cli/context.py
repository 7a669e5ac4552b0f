"""What every command that works on units opens: the home, station.toml, the CA and the audit log."""

from __future__ import annotations

from dataclasses import dataclass

from station.audit import AuditLog
from station.audit_checkpoints import CheckpointSigner
from station.cli.ca import load_station_ca
from station.config import StationConfig, load_config
from station.home import StationHome
from station.pki import CertificateAuthority


@dataclass
class StationContext:
    home: StationHome
    config: StationConfig
    audit: AuditLog

    def load_ca(self) -> CertificateAuthority:
        """The station CA, unlocked (token PIN or file passphrase); it signs the audit log's checkpoints too."""
        ca = load_station_ca(self.home)
        self.audit.attach_checkpoint_signer(CheckpointSigner.for_certificate(ca.certificate, ca.sign_bytes))
        return ca

    def close(self) -> None:
        self.audit.close()


def open_station(home_arg: str | None) -> StationContext:
    home = StationHome.resolve(home_arg).create()
    config = load_config(home.config_file)
    return StationContext(home=home, config=config, audit=AuditLog(home.audit_db))
