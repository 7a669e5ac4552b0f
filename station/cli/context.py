"""What every command that works on units opens: the home, station.toml, the CA and the audit log."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from station.audit import AuditLog
from station.cli.ca import read_passphrase
from station.config import StationConfig, load_config
from station.home import StationHome
from station.permissions import secure_home
from station.pki import CertificateAuthority


@dataclass
class StationContext:
    home: StationHome
    config: StationConfig
    audit: AuditLog

    def load_ca(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.home.ca_dir, passphrase=read_passphrase(new=False))

    def close(self) -> None:
        self.audit.close()


def open_station(home_arg: str | None) -> StationContext:
    home = StationHome.resolve(home_arg).create()
    config = load_config(home.config_file)
    for change in secure_home(home):  # already done by `station` itself; here for other callers
        print(f"station: {change}", file=sys.stderr)
    return StationContext(home=home, config=config, audit=AuditLog(home.audit_db))
