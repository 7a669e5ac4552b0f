"""What every command that works on units opens: the home, station.toml, the CA and the audit log."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from station.audit import AuditLog
from station.audit.checkpoints import CheckpointSigner
from station.cli.ca import load_station_ca
from station.config import StationConfig, load_config
from station.home import StationHome
from station.line.handoff import LineHandOff
from station.permissions import secure_home
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
    _line: LineHandOff | None = field(default=None, repr=False)

    def load_ca(self) -> CertificateAuthority:
        """The station CA, unlocked (token PIN or file passphrase); it signs the audit log's checkpoints too."""
        ca = load_station_ca(self.home)
        self.audit.attach_checkpoint_signer(CheckpointSigner.for_certificate(ca.certificate, ca.sign_bytes))
        return ca

    def line(self) -> LineHandOff:
        """The label printer and MES hand-off ([label], [mes]); their words go to stderr."""
        if self._line is None:
            self._line = LineHandOff(
                config=self.config,
                home=self.home,
                audit=self.audit,
                notify=lambda message: print(message, file=sys.stderr, flush=True),
            )
        return self._line

    def close(self) -> None:
        if self._line is not None:
            # Labels already queued are printed (each bounded by [label] timeout_s); MES records stay in
            # the outbox for the next run if the MES did not take them yet.
            self._line.wait_printed(self.config.label.timeout_s * 2 + 1)
            if not self._line.mes.wait_delivered(self.config.mes.timeout_s):
                print(
                    f"{self._line.mes.pending()} MES record(s) kept in {self.home.root / 'mes'}; they are sent "
                    "the next time the station runs",
                    file=sys.stderr,
                )
            self._line.close()
        if self.forwarder is not None:
            from station.fleet.forwarder import stop_forwarder

            stop_forwarder(self.forwarder)
            self.forwarder = None
        self.audit.close()


def open_station(home_arg: str | None) -> StationContext:
    home = StationHome.resolve(home_arg).create()
    config = load_config(home.config_file)
    for change in secure_home(home):  # already done by `station` itself; here for other callers
        print(f"station: {change}", file=sys.stderr)
    context = StationContext(home=home, config=config, audit=AuditLog(home.audit_db))
    if config.fleet is not None:
        from station.fleet.forwarder import start_forwarder

        context.forwarder = start_forwarder(config.fleet, context.audit)
    return context
