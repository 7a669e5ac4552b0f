"""What every command that works on units opens: the home, station.toml, the CA and the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from station.audit import AuditLog
from station.cli.ca import read_passphrase
from station.config import StationConfig, load_config
from station.home import StationHome
from station.pki import CertificateAuthority

if TYPE_CHECKING:
    from station.fleet.forwarder import Forwarder


@dataclass
class StationContext:
    home: StationHome
    config: StationConfig
    audit: AuditLog
    # [fleet]: this process's sender of audit events to the fleet (None without a fleet).
    forwarder: Forwarder | None = None

    def load_ca(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.home.ca_dir, passphrase=read_passphrase(new=False))

    def close(self) -> None:
        if self.forwarder is not None:
            from station.fleet.forwarder import stop_forwarder

            stop_forwarder(self.forwarder)
            self.forwarder = None
        self.audit.close()


def open_station(home_arg: str | None) -> StationContext:
    home = StationHome.resolve(home_arg).create()
    config = load_config(home.config_file)
    context = StationContext(home=home, config=config, audit=AuditLog(home.audit_db))
    if config.fleet is not None:
        from station.fleet.forwarder import start_forwarder

        context.forwarder = start_forwarder(config.fleet, context.audit)
    return context
