"""A station for the flow's unit tests: the real executor, audit log and CA, a FakeLink for the board.

``FlowStation.provision(...)`` runs one unit exactly as the engine's worker does (``Provisioner.admit`` then
``run_admitted``), with the board replaced by a :class:`~tests.helpers.fake_link.FakeLink` that replays
recorded transcripts.  No root, no network, no subprocess.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import station.flow
from station.audit import AuditLog, StepRecord, Unit
from station.config import StationConfig
from station.flow import FlowEvent, Provisioner, UnitResult
from station.home import StationHome
from station.pki import CertificateAuthority
from station.profiles import DEFAULT_PROFILE, DeviceProfile, load_profile
from tests.helpers.fake_link import FakeLink, FakeTlsProof
from tests.helpers.transcripts import Transcript

CA_PASSPHRASE = b"flow unit tests passphrase"
DEVICE = "ssh://root@127.0.0.2:2222"


def recorded(*names: str) -> list[Transcript]:
    return [Transcript.load(name) for name in names]


@dataclass
class FlowStation:
    """One station home with its audit log and CA, and one fake board on its fixture."""

    home: StationHome
    ca: CertificateAuthority
    board: FakeLink
    profile: DeviceProfile
    serial: str
    config: StationConfig = field(default_factory=lambda: StationConfig(name="unit-test-station"))
    events: list[FlowEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.audit = AuditLog(self.home.audit_db)
        self.provisioner = Provisioner(
            home=self.home, config=self.config, ca=self.ca, audit=self.audit, observer=self.events.append
        )
        self.tls = FakeTlsProof(self.board, self.profile.cert_path)

    def provision(self, *, cancel: threading.Event | None = None, **options: Any) -> UnitResult:
        """One unit of the serial on the board (``resume=True``, ``reprovision_reason=…`` as the CLI passes)."""
        self.events.clear()
        admission = self.provisioner.admit(
            serial=options.pop("serial", self.serial),
            device=DEVICE,
            profile=self.profile,
            operator="alice",
            **options,
        )
        return self.provisioner.run_admitted(
            admission,
            profile=admission.profile or self.profile,
            cancel=cancel or threading.Event(),
            tls=self.tls,
            identity_file="/nonexistent/fake-link-needs-no-key",
        )

    def started_steps(self) -> list[str]:
        """The steps the last unit started, in order, once per attempt."""
        return [event.step for event in self.events if event.kind == "step_started"]

    def outcomes(self, unit: Unit, step: str) -> list[str]:
        """The recorded outcome of every attempt of ``step`` in ``unit``."""
        return [record.outcome for record in self.steps(unit) if record.step == step]

    def steps(self, unit: Unit) -> list[StepRecord]:
        return self.audit.steps(unit.id)


@pytest.fixture(scope="session")
def flow_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """One file CA for the whole session (making one costs a passphrase derivation)."""
    return CertificateAuthority.init(tmp_path_factory.mktemp("flow-ca") / "ca", passphrase=CA_PASSPHRASE)


@pytest.fixture
def flow(tmp_path: Path, flow_ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch) -> FlowStation:
    """A station whose board answers from two recorded units of the welma-optee profile (two token keys)."""
    transcripts = recorded("welma-optee-unit-a", "welma-optee-unit-b")
    board = FakeLink(*transcripts)
    monkeypatch.setattr(station.flow, "open_link", board.connect)
    return FlowStation(
        home=StationHome(tmp_path / "home").create(),
        ca=flow_ca,
        board=board,
        profile=load_profile(DEFAULT_PROFILE),
        serial=transcripts[0].serial,
    )


@pytest.fixture
def refusals() -> Transcript:
    """What the recorded board's tools said to wrong PINs, a missing key, a doubled key."""
    return Transcript.load("welma-optee-refusals")
