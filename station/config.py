"""station.toml: this station's settings, and fixture lists (station.toml or the simulator's file).

A malformed file is reported with its path, the line and the problem, because the person fixing it
is a line engineer with a text editor.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from station.errors import ConfigError
from station.profiles import DEFAULT_PROFILE
from station.tomlfile import config_error, read_toml
from station.tomlfile import refuse_unknown as _refuse_unknown
from station.transport.base import MAX_COMMAND_OUTPUT_BYTES, MAX_FILE_BYTES


@dataclass(frozen=True)
class Fixture:
    """A place on the bench where a board is connected: a name and the device's address."""

    name: str
    device: str
    profile: str | None = None
    console: str | None = None
    # The SSH host key the board on this fixture must show ("SHA256:…"), from the inventory
    # (`station fixtures pin NAME` writes it); None: not in the inventory.
    host_key: str | None = None


# What a board whose fixture has no host key in the inventory gets (station/identity.py FirstContact).
FIRST_CONTACT_CHOICES = ("pin-per-unit", "require-inventory")
HOST_KEY_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


@dataclass(frozen=True)
class IdentityConfig:
    """[identity]: how the station treats boards it does not know yet."""

    first_contact: str = "pin-per-unit"


def _identity(path: Path, text: str, data: dict[str, Any]) -> IdentityConfig:
    table = _table(path, text, data, "identity")
    _refuse_unknown(path, text, table, KNOWN_KEYS["identity"], prefix="identity.")
    first_contact = table.get("first_contact", "pin-per-unit")
    if first_contact not in FIRST_CONTACT_CHOICES:
        raise _fail(
            path,
            text,
            "identity.first_contact",
            f"must be one of {', '.join(repr(choice) for choice in FIRST_CONTACT_CHOICES)}",
        )
    return IdentityConfig(first_contact=first_contact)


# What a station does when the fleet database cannot be reached at the guard step.
OFFLINE_POLICIES = ("allow-and-flag", "refuse")


@dataclass(frozen=True)
class FleetConfig:
    """``[fleet]``: the central PostgreSQL database that is the fleet's system of record.

    ``dsn`` names the server, database and this station's own role — never a password (that is in the
    station home's pgpass file, written by ``station fleet init``).
    """

    dsn: str
    station_name: str
    line: str
    offline: str = "allow-and-flag"
    # The station role's password, written by `station fleet init` (HOME/fleet/pgpass, 0600).
    passfile: Path | None = None


@dataclass(frozen=True)
class BoardInputLimits:
    """station.toml [limits]: how much one board may send the station (every byte is bounded).

    A command's output over ``command_output_bytes`` or a file read from the board (the CSR, the
    token's public key) over ``file_bytes`` fails that unit with "the board sent more than …".
    """

    command_output_bytes: int = MAX_COMMAND_OUTPUT_BYTES
    file_bytes: int = MAX_FILE_BYTES


# Below this a normal answer (a key listing, a CSR) would not fit; above it one board could take
# the station's memory.
LIMIT_RANGE_BYTES = (4096, 1024 * 1024 * 1024)


@dataclass(frozen=True)
class OrdersConfig:
    """``[orders]``: whether a serial must belong to an open work order (station.orders) to be enrolled.

    ``required`` unset means "as production": off for demos and ``make run``, on in production mode.
    """

    required: bool | None = None


@dataclass(frozen=True)
class StationConfig:
    name: str = field(default_factory=socket.gethostname)
    # Production refuses demo PINs and re-provisioning without a reason; demos and training run without it.
    production: bool = False
    default_profile: str = DEFAULT_PROFILE
    # Address the TLS proof listens on; empty = the address the device reached us from.
    tls_listen_address: str = ""
    # Address the board dials for the TLS proof when it is not the listen address (NAT, a second
    # network card, QEMU user networking: 10.0.2.100); empty = the listen address.
    tls_dial_address: str = ""
    # Fixed TCP port of the TLS proof, so a forward or a firewall rule can name it (units then use it
    # one at a time); 0 = a free port per unit.
    tls_port: int = 0
    fixtures: tuple[Fixture, ...] = ()
    source: Path | None = None
    # [fleet]: None = this station keeps its record locally only (the default; no database server needed).
    fleet: FleetConfig | None = None
    limits: BoardInputLimits = field(default_factory=BoardInputLimits)
    # The line around the station (station/line/): label printer, serial scanner, MES hand-off.
    label: LabelSettings = field(default_factory=lambda: LabelSettings())
    scanner: ScannerSettings = field(default_factory=lambda: ScannerSettings())
    mes: MesSettings = field(default_factory=lambda: MesSettings())
    orders: OrdersConfig = OrdersConfig()
    identity: IdentityConfig = field(default_factory=lambda: IdentityConfig())
    # [people] (station/people.py): kiosk sign-in sessions and lockout; [output]: the technician's files.
    people: PeopleSettings = field(default_factory=lambda: PeopleSettings())
    output: OutputSettings = field(default_factory=lambda: OutputSettings())

    @property
    def orders_required(self) -> bool:
        """A serial in no open work order is refused (``[orders] required``; default: in production mode)."""
        return self.production if self.orders.required is None else self.orders.required


@dataclass(frozen=True)
class LabelSettings:
    """``[label]``: where labels go — a ZPL printer (``zpl://HOST:9100``), an IPP queue (``ipp://…``) or a file."""

    printer: str = ""
    stock: str = "62x29"
    print_on_pass: bool = False
    timeout_s: float = 5.0
    # Where "Save PDF…" proposes to save, and the file name it proposes ({serial} and {date} are filled in).
    folder: str = ""
    file_name: str = "label-{serial}.pdf"


@dataclass(frozen=True)
class ScannerSettings:
    """``[scanner]``: a serial (RS-232 / USB-CDC) barcode scanner beside the keyboard wedge."""

    device: str = ""
    baud: int = 9600
    terminator: str = "\r"
    reopen_s: float = 1.0


@dataclass(frozen=True)
class MesSettings:
    """``[mes]``: where a JSON record of every finished unit goes (HTTP endpoint and/or drop folder)."""

    url: str = ""
    drop_folder: str = ""
    timeout_s: float = 5.0
    retry_s: float = 5.0


@dataclass(frozen=True)
class PeopleSettings:
    """``[people]``: how long a quality lead's or administrator's sign-in lasts, when failed attempts lock
    a person out, and whether the shared admin PIN of demos is still accepted."""

    session_minutes: float = 15.0
    max_failed_attempts: int = 5
    lockout_minutes: float = 15.0
    # The demo-mode option: quality leads sign in with any name and the one admin PIN. Refused in production.
    shared_admin_pin: bool = False
    # The PAM service that checks the password of people enrolled by OS account (`station people add --pam`).
    pam_service: str = "login"


@dataclass(frozen=True)
class OutputSettings:
    """``[output]``: the folder the technician's labels and PDFs go to (never the station home)."""

    # Empty: ~/welma-station-output of the account running the window.
    folder: str = ""


def _people(path: Path, text: str, data: dict[str, Any], *, production: bool) -> PeopleSettings:
    table = _table(path, text, data, "people")
    _refuse_unknown(path, text, table, KNOWN_KEYS["people"], prefix="people.")
    defaults = PeopleSettings()
    values: dict[str, Any] = {}
    for key in sorted(KNOWN_KEYS["people"]):
        value = table.get(key, getattr(defaults, key))
        if key == "pam_service":
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", value):
                raise _fail(
                    path,
                    text,
                    "people.pam_service",
                    'must be the name of a file in /etc/pam.d, such as "login"',
                )
        elif key == "shared_admin_pin":
            if not isinstance(value, bool):
                raise _fail(path, text, "people.shared_admin_pin", "must be true or false")
            if value and production:
                raise _fail(
                    path,
                    text,
                    "people.shared_admin_pin",
                    "the shared admin PIN is a demo-mode option and is refused in production mode — remove "
                    "it and enrol each quality lead and administrator with `station people add NAME --role "
                    "quality|admin`",
                )
        elif key == "max_failed_attempts":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
                raise _fail(path, text, "people.max_failed_attempts", "must be a whole number from 1 to 100")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 24 * 60:
            raise _fail(
                path, text, f"people.{key}", "must be a number of minutes above 0 and at most 1440 (a day)"
            )
        values[key] = (
            value if key in ("shared_admin_pin", "max_failed_attempts", "pam_service") else float(value)
        )
    return PeopleSettings(**values)


def _output(path: Path, text: str, data: dict[str, Any]) -> OutputSettings:
    table = _table(path, text, data, "output")
    _refuse_unknown(path, text, table, KNOWN_KEYS["output"], prefix="output.")
    folder = table.get("folder", "")
    if not isinstance(folder, str):
        raise _fail(path, text, "output.folder", "must be a string (a folder path)")
    return OutputSettings(folder=folder)


def load_config(path: Path) -> StationConfig:
    """Read station.toml; a missing file means every default."""
    if not path.exists():
        return StationConfig(source=None)
    text, data = read_toml(path)
    _refuse_unknown(path, text, data, KNOWN_KEYS)
    station = _table(path, text, data, "station")
    tls = _table(path, text, data, "tls_proof")
    _refuse_unknown(path, text, station, KNOWN_KEYS["station"], prefix="station.")
    _refuse_unknown(path, text, tls, KNOWN_KEYS["tls_proof"], prefix="tls_proof.")
    name = station.get("name", socket.gethostname())
    production = station.get("production", False)
    profile = station.get("default_profile", DEFAULT_PROFILE)
    listen = tls.get("listen_address", "")
    dial = tls.get("dial_address", "")
    port = tls.get("port", 0)
    for key, value, kind in (
        ("station.name", name, str),
        ("station.production", production, bool),
        ("station.default_profile", profile, str),
        ("tls_proof.listen_address", listen, str),
        ("tls_proof.dial_address", dial, str),
    ):
        if not isinstance(value, kind):
            raise _fail(path, text, key, f"must be {'true or false' if kind is bool else 'a string'}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise _fail(
            path, text, "tls_proof.port", "must be a TCP port number (1-65535), or 0 for a free port per unit"
        )
    return StationConfig(
        orders=_orders(path, text, data),
        name=name,
        production=production,
        default_profile=profile,
        tls_listen_address=listen,
        tls_dial_address=dial,
        tls_port=port,
        fixtures=_fixtures(path, text, data),
        source=path,
        fleet=_fleet(path, text, data, default_name=name),
        limits=_limits(path, text, data),
        label=_section(path, text, data, "label", LabelSettings),
        scanner=_section(path, text, data, "scanner", ScannerSettings),
        mes=_section(path, text, data, "mes", MesSettings),
        identity=_identity(path, text, data),
        people=_people(path, text, data, production=production),
        output=_output(path, text, data),
    )


def _limits(path: Path, text: str, data: dict[str, Any]) -> BoardInputLimits:
    """The [limits] section: whole numbers of bytes within LIMIT_RANGE_BYTES."""
    table = _table(path, text, data, "limits")
    _refuse_unknown(path, text, table, KNOWN_KEYS["limits"], prefix="limits.")
    defaults = BoardInputLimits()
    values: dict[str, int] = {}
    low, high = LIMIT_RANGE_BYTES
    for key in sorted(KNOWN_KEYS["limits"]):
        value = table.get(key, getattr(defaults, key))
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _fail(path, text, f"limits.{key}", f"must be a whole number of bytes from {low} to {high}")
        values[key] = value
    return BoardInputLimits(**values)


_Section = TypeVar("_Section", LabelSettings, ScannerSettings, MesSettings)


def _section(path: Path, text: str, data: dict[str, Any], name: str, kind: type[_Section]) -> _Section:
    """A flat settings table read into its dataclass: every key known, every value of the default's type."""
    table = _table(path, text, data, name)
    defaults = kind()
    known = [f.name for f in fields(kind)]
    _refuse_unknown(path, text, table, known, prefix=f"{name}.")
    values: dict[str, Any] = {}
    for key, value in table.items():
        default = getattr(defaults, key)
        if isinstance(default, bool):
            ok, wanted = isinstance(value, bool), "true or false"
        elif isinstance(default, int | float):
            ok, wanted = (
                isinstance(value, int | float) and not isinstance(value, bool) and value > 0,
                "a positive number",
            )
            value = type(default)(value) if ok else value
        else:
            ok, wanted = isinstance(value, str), "a string"
        if not ok:
            raise _fail(path, text, f"{name}.{key}", f"must be {wanted}")
        values[key] = value
    settings = kind(**values)
    problem = settings_problem(settings)
    if problem:
        key, words = problem
        raise _fail(path, text, f"{name}.{key}", words)
    return settings


def settings_problem(settings: LabelSettings | ScannerSettings | MesSettings) -> tuple[str, str] | None:
    """(key, what is wrong and what to write instead) for a value the line parts could not use."""
    if isinstance(settings, LabelSettings):
        from station.label import LABEL_LAYOUTS

        if settings.stock not in LABEL_LAYOUTS:
            return "stock", f"choose one of: {', '.join(LABEL_LAYOUTS)}"
        if settings.printer and not re.match(r"(zpl|ipp|ipps)://[^/\s:]+(:\d+)?(/\S*)?$", settings.printer):
            return "printer", 'must look like "zpl://HOST:9100" or "ipp://HOST:631/printers/QUEUE"'
    if isinstance(settings, MesSettings):
        if settings.url and not re.match(r"https?://\S+$", settings.url):
            return "url", 'must be an http:// or https:// address, e.g. "http://mes.plant.local/api/units"'
    if isinstance(settings, ScannerSettings) and settings.terminator not in ("\r", "\n", "\r\n", "\t"):
        return "terminator", r'must be "\r", "\n", "\r\n" or "\t" (what the scanner sends after a code)'
    return None


def _fleet(path: Path, text: str, data: dict[str, Any], *, default_name: str) -> FleetConfig | None:
    if "fleet" not in data:
        return None
    fleet = _table(path, text, data, "fleet")
    _refuse_unknown(path, text, fleet, KNOWN_KEYS["fleet"], prefix="fleet.")
    values: dict[str, str] = {}
    for key, default in (
        ("dsn", None),
        ("station_name", default_name),
        ("line", ""),
        ("offline", "allow-and-flag"),
    ):
        value = fleet.get(key, default)
        if value is None:
            raise _fail(path, text, "fleet", 'needs dsn = "postgresql://…" (run station fleet init --dsn …)')
        if not isinstance(value, str):
            raise _fail(path, text, f"fleet.{key}", "must be a string")
        values[key] = value
    if not re.match(r"(postgresql|postgres)://", values["dsn"]):
        raise _fail(path, text, "fleet.dsn", "must be a URL postgresql://user@host:port/database")
    if re.search(r"://[^/@]*:[^/@]*@", values["dsn"]):
        raise _fail(
            path,
            text,
            "fleet.dsn",
            "must not contain a password — station fleet init keeps it in the "
            "station home's pgpass file; remove it from station.toml",
        )
    if values["offline"] not in OFFLINE_POLICIES:
        raise _fail(path, text, "fleet.offline", f"must be one of {', '.join(OFFLINE_POLICIES)}")
    if not values["station_name"].strip():
        raise _fail(path, text, "fleet.station_name", "must not be empty")
    return FleetConfig(
        dsn=values["dsn"],
        station_name=values["station_name"],
        line=values["line"],
        offline=values["offline"],
        passfile=path.parent / "fleet" / "pgpass",
    )


# A typo in station.toml must not be silently ignored: a line engineer would think it took effect.
KNOWN_KEYS: dict[str, frozenset[str]] = {
    "station": frozenset({"name", "production", "default_profile"}),
    "tls_proof": frozenset({"listen_address", "dial_address", "port"}),
    "fleet": frozenset({"dsn", "station_name", "line", "offline"}),
    "limits": frozenset({"command_output_bytes", "file_bytes"}),
    "fixture": frozenset({"name", "device", "profile", "console", "hostname", "host_key"}),
    "label": frozenset(f.name for f in fields(LabelSettings)),
    "scanner": frozenset(f.name for f in fields(ScannerSettings)),
    "mes": frozenset(f.name for f in fields(MesSettings)),
    "orders": frozenset({"required"}),
    "identity": frozenset({"first_contact"}),
    "people": frozenset(f.name for f in fields(PeopleSettings)),
    "output": frozenset({"folder"}),
    "ca": frozenset(
        {
            "pin_file",
            "max_certificates_per_day",
            "crl_next_update_days",
            "crl_publish",
            "crl_publish_every_minutes",
        }
    ),
}


def _orders(path: Path, text: str, data: dict[str, Any]) -> OrdersConfig:
    table = _table(path, text, data, "orders")
    _refuse_unknown(path, text, table, KNOWN_KEYS["orders"], prefix="orders.")
    required = table.get("required")
    if required is not None and not isinstance(required, bool):
        raise _fail(path, text, "orders.required", "must be true or false")
    return OrdersConfig(required=required)


@dataclass(frozen=True)
class CaSettings:
    """``[ca]`` of station.toml: how the station CA is unlocked, limited and published."""

    # A file holding the token PIN (mode 0600 or 0400, owned by the station's user); else the PIN is asked for.
    pin_file: Path | None = None
    max_certificates_per_day: int | None = None
    crl_next_update_days: int = 7
    # Where `station ca crl --publish` puts the CRL: a directory, or an http(s) URL it is PUT to.
    crl_publish: str = ""
    crl_publish_every_minutes: int | None = None


def load_ca_settings(path: Path) -> CaSettings:
    """Read ``[ca]`` of station.toml (every default when the file or the table is missing)."""
    if not path.exists():
        return CaSettings()
    text, data = read_toml(path)
    table = _table(path, text, data, "ca")
    _refuse_unknown(path, text, table, KNOWN_KEYS["ca"], prefix="ca.")
    pin_file = table.get("pin_file")
    if pin_file is not None and (not isinstance(pin_file, str) or not pin_file):
        raise _fail(path, text, "ca.pin_file", "must be the path of the file holding the token PIN")
    numbers: dict[str, int | None] = {}
    for key, minimum in (
        ("max_certificates_per_day", 1),
        ("crl_next_update_days", 1),
        ("crl_publish_every_minutes", 1),
    ):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise _fail(path, text, f"ca.{key}", f"must be a whole number of at least {minimum}")
        numbers[key] = value
    publish = table.get("crl_publish", "")
    if not isinstance(publish, str):
        raise _fail(path, text, "ca.crl_publish", "must be a directory or an http(s) URL")
    pin_path = Path(pin_file).expanduser() if pin_file else None
    if pin_path is not None and not pin_path.is_absolute():
        pin_path = path.parent / pin_path
    return CaSettings(
        pin_file=pin_path,
        max_certificates_per_day=numbers["max_certificates_per_day"],
        crl_next_update_days=numbers["crl_next_update_days"] or 7,
        crl_publish=publish,
        crl_publish_every_minutes=numbers["crl_publish_every_minutes"],
    )


def load_fixtures(path: Path) -> tuple[Fixture, ...]:
    """Fixtures from a file with ``[[fixture]]`` tables (station.toml or ``station sim``'s fixtures.toml)."""
    text, data = read_toml(path)
    return _fixtures(path, text, data)


def _fail(path: Path, text: str, key: str, problem: str, *, occurrence: int = 1) -> ConfigError:
    return config_error(path, text, key, problem, occurrence=occurrence)


def _table(path: Path, text: str, data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise _fail(path, text, name, "must be a table")
    return value


def _fixtures(path: Path, text: str, data: dict[str, Any]) -> tuple[Fixture, ...]:
    entries = data.get("fixture", [])
    if not isinstance(entries, list):
        raise _fail(path, text, "fixture", "must be written as [[fixture]] tables")
    fixtures = []
    names: set[str] = set()
    for index, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise _fail(path, text, "fixture", f"entry {index} must be a table")
        _refuse_unknown(path, text, entry, KNOWN_KEYS["fixture"], prefix="fixture.", occurrence=index)
        name, device = entry.get("name"), entry.get("device")
        if not isinstance(name, str) or not name:
            raise _fail(path, text, "fixture.name", f"fixture {index} needs a name", occurrence=index)
        if not isinstance(device, str) or not re.match(r"(ssh|serial)://", device):
            raise _fail(
                path,
                text,
                "fixture.device",
                f"fixture {name!r} needs a device address (ssh://… or serial://…)",
                occurrence=index,
            )
        if name in names:
            raise _fail(path, text, "fixture.name", f"fixture name {name!r} is used twice", occurrence=index)
        names.add(name)
        profile = entry.get("profile")
        console = entry.get("console")
        host_key = entry.get("host_key")
        if host_key is not None and (
            not isinstance(host_key, str) or not HOST_KEY_FINGERPRINT.fullmatch(host_key)
        ):
            raise _fail(
                path,
                text,
                "fixture.host_key",
                f"fixture {name!r}: host_key must be a fingerprint as ssh-keygen -lf prints it "
                "(SHA256: and 43 characters) — or run `station fixtures pin NAME` to write it",
                occurrence=index,
            )
        fixtures.append(
            Fixture(
                name=name,
                device=device,
                profile=profile if isinstance(profile, str) else None,
                console=console if isinstance(console, str) else None,
                host_key=host_key,
            )
        )
    return tuple(fixtures)
