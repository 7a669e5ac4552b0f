"""Board identity: which board is on the fixture, and what the station can honestly say about it.

Three things a serial label alone cannot tell:

* the **SoC unique id** (fuses; read at identify as the profile says) ties an enrollment to the
  silicon, so the same board under two labels, or one label on two boards, is caught;
* the **host-key inventory** (a fixture's ``host_key`` in its fixtures file, written by
  ``station fixtures pin NAME``) says which board may answer on a fixture before any command runs;
* the **trust model**: what the station verified itself and what it only has the board's word for
  (:func:`trust_summary`), written the same way in the audit, the window and the README.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from station.config import Fixture, StationConfig, load_fixtures
from station.errors import ConfigError, StationError
from station.pki import write_file_atomically
from station.profiles import IdentitySettings
from station.shell import ShellCommand, command
from station.transport import Deadline, DeviceLink

# Every byte a board sends is bounded: an id longer than this is not an id.
SOC_ID_MAX_LENGTH = 128
_SOC_ID = re.compile(r"[\x21-\x7e]+")
SIM_FIXTURES = Path("sim") / "fixtures.toml"


class SocIdUnreadable(StationError):
    """The profile requires the board's SoC id and the board did not give one."""


# -- the SoC unique id --------------------------------------------------------------------------


@dataclass(frozen=True)
class SocId:
    value: str
    source: str  # the path or command it was read from


def read_soc_id(link: DeviceLink, settings: IdentitySettings, deadline: Deadline) -> SocId | None:
    """Read the board's SoC unique id as the profile says; None when it has none and none is required."""
    tried: list[str] = []
    sources: Iterable[tuple[str, ShellCommand]]
    if settings.soc_id_command:
        sources = [(" ".join(settings.soc_id_command), ShellCommand(settings.soc_id_command))]
    else:
        sources = [(path, command("cat", path)) for path in settings.soc_id_paths]
    for source, cmd in sources:
        result = link.run(cmd, deadline, check=False)
        # Device-tree strings end in NUL; fuses read through sysfs end in a newline.
        value = result.stdout.replace("\x00", "").strip()
        if result.exit_status != 0:
            last = [line for line in result.output.splitlines() if line.strip()][-1:] or ["no output"]
            tried.append(f"{source}: exit {result.exit_status}, {last[0].strip()[:120]}")
            continue
        if not value:
            tried.append(f"{source}: empty")
            continue
        if len(value) > SOC_ID_MAX_LENGTH or not _SOC_ID.fullmatch(value):
            tried.append(f"{source}: not an id ({len(value)} characters, or spaces or control characters)")
            continue
        return SocId(value, source)
    if not settings.soc_id_required:
        return None
    raise SocIdUnreadable(
        "the board did not give its SoC unique id, which its profile requires ("
        + "; ".join(tried)
        + ") — the board's image does not expose its fuses, or the board is not the kind the profile "
        "is for. Set the board aside and tell the line engineer (the profile's [identity] names where the "
        "id is read)"
    )


# -- the host-key inventory ----------------------------------------------------------------------


class FirstContact(StrEnum):
    """What a board whose fixture has no host key in the inventory gets."""

    PIN_PER_UNIT = "pin-per-unit"  # the key seen first is pinned for that unit only
    REQUIRE_INVENTORY = "require-inventory"  # refused until an administrator pins the fixture


@dataclass(frozen=True)
class KnownFixture:
    """A fixture as defined in one fixtures file (station.toml, the admin's file or the simulator's)."""

    fixture: Fixture
    file: Path | None
    origin: str


def known_fixtures(
    home_root: Path | None, config: StationConfig, *, settings_file: str | None = None
) -> list[KnownFixture]:
    """Every fixture definition the station may use, most authoritative first.

    The simulator's fixtures file counts only outside production mode.
    """
    found: list[KnownFixture] = []
    if settings_file:
        path = Path(settings_file).expanduser()
        if path.is_file():
            found += [KnownFixture(f, path, "station settings") for f in load_fixtures(path)]
    found += [KnownFixture(f, config.source, "station.toml") for f in config.fixtures]
    sim = home_root / SIM_FIXTURES if home_root is not None else None
    if not config.production and sim is not None and sim.is_file():
        found += [KnownFixture(f, sim, "simulated farm") for f in load_fixtures(sim)]
    return found


def find_fixture(fixtures: list[KnownFixture], *, name: str | None, device: str) -> KnownFixture | None:
    """The definition of the fixture a unit runs on: by name (and address), else by address alone."""
    if name:
        named = [known for known in fixtures if known.fixture.name == name]
        same = [known for known in named if known.fixture.device == device]
        return (same or named)[0] if same or named else None
    return next((known for known in fixtures if known.fixture.device == device), None)


def host_key_mismatch_advice(fixture: str) -> str:
    return (
        "nothing was run on the board. If another board was put on this fixture on purpose, an administrator "
        "checks the key on that board's console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and runs "
        f"`station fixtures pin {fixture}`; otherwise another machine may be answering on the fixture's "
        "network — check its cabling. Until then, set the board aside"
    )


_FIXTURE_HEADER = re.compile(r"^\s*\[\[\s*fixture\s*\]\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[")
_HOST_KEY_LINE = re.compile(r"^\s*host_key\s*=")
_NAME_LINE = re.compile(r"^\s*name\s*=")


def set_fixture_host_key(path: Path, name: str, fingerprint: str) -> str | None:
    """Write ``host_key = "<fingerprint>"`` into fixture ``name``'s table of ``path``; return the old key.

    The file is edited as text (comments and layout kept) and replaced atomically; the result is read
    back as TOML to prove the edit took.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    starts = [index for index, line in enumerate(lines) if _FIXTURE_HEADER.match(line)]
    for start in starts:
        end = next((i for i in range(start + 1, len(lines)) if _TABLE_HEADER.match(lines[i])), len(lines))
        try:
            table = tomllib.loads("".join(lines[start + 1 : end]))
        except tomllib.TOMLDecodeError:
            continue
        if table.get("name") != name:
            continue
        previous = table.get("host_key")
        new_line = f'host_key = "{fingerprint}"\n'
        existing = next((i for i in range(start + 1, end) if _HOST_KEY_LINE.match(lines[i])), None)
        if existing is not None:
            lines[existing] = new_line
        else:
            after = next((i for i in range(start + 1, end) if _NAME_LINE.match(lines[i])), start)
            if not lines[after].endswith("\n"):
                lines[after] += "\n"
            lines.insert(after + 1, new_line)
        write_file_atomically(
            path, "".join(lines).encode("utf-8"), mode=path.stat().st_mode & 0o777, replace=True
        )
        if not any(f.name == name and f.host_key == fingerprint for f in load_fixtures(path)):
            raise ConfigError(
                f"{path}: the host key of fixture {name!r} could not be written — edit it by hand"
            )
        return previous if isinstance(previous, str) else None
    raise ConfigError(f"{path} has no [[fixture]] named {name!r}")


# -- the trust model ----------------------------------------------------------------------------


class Basis(StrEnum):
    VERIFIED = "verified by the station"
    REPORTED = "reported by the board"


@dataclass(frozen=True)
class Claim:
    what: str
    basis: Basis
    short: str  # a few words, for the window


# long: one table of claims, each with the steps it rests on; read top to bottom
def trust_summary(
    passed_steps: Iterable[str],
    *,
    host_key_in_inventory: bool = False,
    soc_id: str | None = None,
    attested: bool = False,
) -> list[Claim]:
    """What the station may claim about a unit, given the steps that passed, and on whose word."""
    done = set(passed_steps)
    token_basis = Basis.VERIFIED if attested else Basis.REPORTED
    claims: list[Claim] = []
    if host_key_in_inventory:
        claims.append(
            Claim(
                "the board answering is the one whose host key the fixture's inventory holds",
                Basis.VERIFIED,
                "host key = fixture inventory",
            )
        )
    elif "identify" in done:
        claims.append(
            Claim(
                "the SSH host key seen first was pinned for this unit (not in an inventory)",
                Basis.VERIFIED,
                "host key pinned for this unit",
            )
        )
    if soc_id:
        claims.append(
            Claim(
                f"SoC unique id {soc_id} (read from the board's fuses by the board's own kernel)",
                Basis.REPORTED,
                f"SoC id {soc_id}",
            )
        )
        if "guard" in done:
            claims.append(
                Claim(
                    "the SoC id is enrolled under no other serial, and this serial under no other SoC",
                    Basis.VERIFIED,
                    "SoC id and serial enrolled nowhere else",
                )
            )
    if "keygen" in done:
        claims.append(
            Claim(
                "the key is sensitive, never extractable and was generated in the token",
                token_basis,
                "key flags (never extractable, local)",
            )
        )
    if "fetch_csr" in done:
        claims.append(
            Claim("the public key read from the token is the token's key", token_basis, "token's public key")
        )
    if "check_csr" in done:
        claims.append(
            Claim(
                "CSR signature, subject, key equal to the token's reported key, key never certified before",
                Basis.VERIFIED,
                "CSR signature, subject, key, no reuse",
            )
        )
    if "push" in done:
        claims.append(
            Claim(
                "certificates read back from the board with the digests written",
                Basis.VERIFIED,
                "certificates read back",
            )
        )
    if "tls_proof" in done:
        claims.append(
            Claim(
                "the board holds the private key of the certificate issued (mutual TLS)",
                Basis.VERIFIED,
                "holds the certified key (mutual TLS)",
            )
        )
    return claims


def render_claims(claims: Iterable[Claim]) -> str:
    """The claims as lines, grouped verified first: what the audit and the unit detail show."""
    ordered = sorted(claims, key=lambda claim: claim.basis != Basis.VERIFIED)
    return "\n".join(f"{claim.basis}: {claim.what}" for claim in ordered)
