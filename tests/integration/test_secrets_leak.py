"""Secrets stay secret: after a day's work, nothing a person or a file can see holds one.

A station with its own (non-demo) PINs provisions several boards through the CLI — passes, a board
whose command fails and echoes its command line (PINs included), a board whose TLS proof fails, a
batch — then everything it left behind is searched: the CLI's output, the station home's logs
(and the simulated boards' boot logs), a full dump of the audit database, and the CSV and JSON
Lines exports.  None may contain the CA passphrase, a PIN, a PEM private key, or the CA's private
key material in hex or base64.

And two refusals at the command line: a CA key file others can read, and the tutorial's demo PINs
on a station in production mode.
"""

from __future__ import annotations

import base64
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from station.audit import AuditLog
from station.home import StationHome
from station.service.client import home_socket
from station.sim.farm import SimDevice
from tests.helpers.kit import PASSPHRASE, certificate_on_board, profile_copy, station_cli
from tests.helpers.service import running_service

pytestmark = pytest.mark.integration

SO_PIN = "48213377"
USER_PIN = "582194"
PROFILE = "plant-pins"


def plant_profile(home: StationHome) -> None:
    profile_copy(
        home,
        PROFILE,
        replace={
            'so_pin = "00000000"': f'so_pin = "{SO_PIN}"',
            'user_pin = "0000"': f'user_pin = "{USER_PIN}"',
        },
    )


@dataclass
class Haystack:
    """Everything the station let a person or a file see, by where it came from."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: str) -> None:
        self.texts[where] = self.texts.get(where, "") + text

    def add_run(self, where: str, run: object) -> None:
        self.add(where, f"{run.stdout}\n{run.stderr}")  # type: ignore[attr-defined]

    @property
    def size(self) -> int:
        return sum(len(text) for text in self.texts.values())


@dataclass(frozen=True)
class Needle:
    name: str
    pattern: re.Pattern[str]


def needles(home: StationHome) -> list[Needle]:
    """What must never show: by exact text, or (short PINs) as a whole word, as the masking defines."""
    found: list[Needle] = [
        Needle("CA passphrase", re.compile(re.escape(PASSPHRASE))),
        Needle("SO PIN", re.compile(re.escape(SO_PIN))),
        # A four-digit PIN also occurs inside hex digests and base64 by chance; as a word it must not.
        Needle("user PIN", re.compile(rf"(?<![0-9A-Za-z]){USER_PIN}(?![0-9A-Za-z])")),
        Needle("PEM private key", re.compile(r"PRIVATE KEY")),
        Needle("OpenSSH private key", re.compile(r"OPENSSH PRIVATE")),
    ]
    ssh_key_body = "".join(home.ssh_key.read_text().splitlines()[1:-1])
    found.append(Needle("station SSH key (base64)", re.compile(re.escape(ssh_key_body[20:80]))))
    for name in ("ca.key", "system.key"):
        key = serialization.load_pem_private_key((home.ca_dir / name).read_bytes(), PASSPHRASE.encode())
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        b64 = base64.b64encode(der).decode()
        numbers = key.private_numbers()  # type: ignore[union-attr]
        secret = getattr(numbers, "private_value", None) or numbers.d  # EC or RSA
        found += [
            Needle(f"{name} DER (hex)", re.compile(der[-24:].hex(), re.I)),
            Needle(f"{name} DER (base64)", re.compile(re.escape(b64[len(b64) // 2 : len(b64) // 2 + 32]))),
            Needle(f"{name} private number (hex)", re.compile(f"{secret:x}"[:32], re.I)),
            Needle(f"{name} private number (decimal)", re.compile(str(secret)[:30])),
        ]
    return found


def audit_dump(db: Path) -> str:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def search(haystack: Haystack, home: StationHome) -> list[str]:
    hits = []
    for needle in needles(home):
        for where, text in haystack.texts.items():
            for match in needle.pattern.finditer(text):
                context = text[max(0, match.start() - 40) : match.end() + 40]
                hits.append(f"{needle.name} in {where}: …{context!r}…")
    return hits


def test_no_secret_in_output_logs_database_or_exports_after_a_days_work(
    start_farm, sim_farm, sim_home, tmp_path
):
    hay = Haystack()
    devices: list[SimDevice] = start_farm(4)
    run = station_cli(sim_home, "ca", "init")
    assert run.returncode == 0, run.stderr
    hay.add_run("station ca init", run)
    plant_profile(sim_home)

    def provision(serial: str, device: SimDevice, *extra: str) -> int:
        done = station_cli(
            sim_home,
            "provision",
            "--serial",
            serial,
            "--device",
            device.ssh_url,
            "--profile",
            PROFILE,
            "--operator",
            "olga",
            *extra,
        )
        hay.add_run(f"station provision {serial} {' '.join(extra)}", done)
        return done.returncode

    assert provision("202600000000101", devices[0]) == 0
    # A board whose key generation fails and says so with its whole command line (PIN included).
    sim_farm.set_fault(devices[1].name, "fail:--keypairgen")
    assert provision("202600000000102", devices[1]) == 1
    # A board whose TLS proof fails: the s_client line carries pin-value=… in its key URI.
    sim_farm.set_fault(devices[2].name, "fail:openssl s_client")
    assert provision("202600000000103", devices[2]) == 1
    sim_farm.set_fault(devices[1].name, None)
    sim_farm.set_fault(devices[2].name, None)
    assert provision("202600000000102", devices[1], "--resume") == 0
    assert provision("202600000000103", devices[2], "--restart") == 0, hay.texts[
        "station provision 202600000000103 --restart"
    ]
    assert provision("202600000000101", devices[0], "--reprovision", "--reason", "customer return") == 0
    manifest = tmp_path / "boards.csv"
    manifest.write_text(f"serial,device\n202600000000104,{devices[3].ssh_url}\n")
    batch = station_cli(
        sim_home, "batch", "--manifest", str(manifest), "--profile", PROFILE, "--operator", "olga"
    )
    assert batch.returncode == 0, batch.stdout + batch.stderr
    hay.add_run("station batch", batch)
    for args in (("units",), ("audit", "verify"), ("sim", "status")):
        done = station_cli(sim_home, *args)
        assert done.returncode == 0, done.stderr
        hay.add_run(f"station {' '.join(args)}", done)
    for fmt, extra in (("csv", ()), ("jsonl", ("--steps",))):
        out = tmp_path / f"units.{fmt}"
        done = station_cli(sim_home, "audit", "export", "--format", fmt, "--out", str(out), *extra)
        assert done.returncode == 0, done.stderr
        hay.add_run(f"station audit export {fmt}", done)
        hay.add(f"export {out.name}", out.read_text(encoding="utf-8"))

    for path in sorted(sim_home.log_dir.rglob("*")) + sorted(sim_home.sim_dir.glob("devices/*/boot.log")):
        if path.is_file():
            hay.add(str(path.relative_to(sim_home.root)), path.read_text(errors="replace"))
    dump = audit_dump(sim_home.audit_db)
    hay.add("audit database dump", dump)

    # The search must be able to find what it looks for: the PINs did travel (the failing board
    # printed them, with the line as it received it: the station closes every command's stdin there), and
    # they were masked where they landed.
    assert (
        "--login --pin **** </dev/null: Input/output error" in hay.texts["station provision 202600000000102 "]
    )
    assert "pin-value=****" in hay.texts["station provision 202600000000103 "]
    assert "--pin ****" in dump and "pin-value=****" in dump
    assert all(certificate_on_board(device) for device in devices)
    hits = search(hay, sim_home)
    print(
        f"secrets search: {len(needles(sim_home))} needles in {len(hay.texts)} sources, "
        f"{hay.size} characters: {len(hits)} hits"
    )
    assert hits == [], "\n".join(hits[:20])


def test_the_search_finds_a_planted_secret(sim_home):
    # The search is only worth its zero if it can find a leak: plant each kind and see it found.
    from station.pki import CertificateAuthority

    CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    sim_home.ensure_station_key()
    key_pem = (sim_home.ca_dir / "ca.key").read_bytes()
    ca_key = serialization.load_pem_private_key(key_pem, PASSPHRASE.encode())
    der = ca_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    planted = {
        "passphrase": f"unlocked with {PASSPHRASE}",
        "so pin": f"--so-pin {SO_PIN}",
        "user pin": f"'pkcs11:object=key0;pin-value={USER_PIN}'",
        "pem": "-----BEGIN EC PRIVATE KEY-----",
        "der hex": der.hex(),
        "der base64": base64.b64encode(der).decode(),
    }
    for name, text in planted.items():
        assert search(Haystack({name: text}), sim_home), name
    # ... and does not cry wolf at a serial, a timestamp or a digest that merely contain the digits.
    innocent = f"serial 20260058210001 at 2026-11-26T10:58:21.582100 sha256 ab{USER_PIN}cd duration 15821 s"
    assert search(Haystack({"innocent": innocent}), sim_home) == []


# -- refusals at the command line -----------------------------------------------------------------


def test_a_ca_key_readable_by_others_is_refused_before_any_board_is_touched(start_farm, sim_home):
    (device,) = start_farm(1)
    assert station_cli(sim_home, "ca", "init").returncode == 0
    plant_profile(sim_home)
    (sim_home.ca_dir / "ca.key").chmod(0o644)
    run = station_cli(
        sim_home, "provision", "--serial", "202600000000201", "--device", device.ssh_url, "--profile", PROFILE
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "ca.key is readable or writable by group or others (mode 0644)" in run.stderr
    assert "chmod 600" in run.stderr
    assert "Identify board" not in run.stdout and certificate_on_board(device) is None
    with AuditLog(sim_home.audit_db) as log:
        assert log.units() == []


def test_production_mode_refuses_the_tutorials_demo_pins_and_takes_the_plants_own(start_farm, sim_home):
    (device,) = start_farm(1)
    assert station_cli(sim_home, "ca", "init").returncode == 0
    plant_profile(sim_home)
    sim_home.config_file.write_text('[station]\nname = "line-1"\nproduction = true\n')
    # In production mode the units run in the station service, its CA unlocked from a credential file.
    credential = sim_home.root.parent / "ca-passphrase"
    credential.write_text(PASSPHRASE + "\n")
    credential.chmod(0o600)
    with running_service(sim_home, home_socket(sim_home), credential=credential):
        production_day(sim_home, device)


def production_day(sim_home: StationHome, device: SimDevice) -> None:
    # Production mode enrols only boards of an open work order (the order's profile is the unit's).
    demo_order = sim_home.root / "demo-order.csv"
    demo_order.write_text("order,profile,quantity,serials\nWO-300,welma-optee,1,202600000000300\n")
    assert station_cli(sim_home, "order", "import", str(demo_order), "--by", "Q. Lead").returncode == 0
    demo = station_cli(
        sim_home,
        "provision",
        "--serial",
        "202600000000300",
        "--device",
        device.ssh_url,
        "--profile",
        "welma-optee",
    )
    assert demo.returncode == 1 and "Traceback" not in demo.stderr
    assert "uses the tutorial's demo PINs" in demo.stderr and "production mode" in demo.stderr
    assert "Identify board" not in demo.stdout
    with AuditLog(sim_home.audit_db) as log:
        assert log.units() == []
    unordered = station_cli(
        sim_home, "provision", "--serial", "202600000000301", "--device", device.ssh_url, "--profile", PROFILE
    )
    assert unordered.returncode == 1 and "belongs to no open work order" in unordered.stderr
    order = sim_home.root / "order.csv"
    order.write_text(f"order,profile,quantity,serials\nWO-301,{PROFILE},1,202600000000301\n")
    assert station_cli(sim_home, "order", "import", str(order), "--by", "Q. Lead").returncode == 0
    plant = station_cli(
        sim_home, "provision", "--serial", "202600000000301", "--device", device.ssh_url, "--profile", PROFILE
    )
    assert plant.returncode == 0, plant.stdout + plant.stderr
