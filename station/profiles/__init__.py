"""Device profiles: what a kind of board needs, as data (TOML).

A profile holds the enrollment's command lines as argument vectors with ``{placeholders}``, the
serial-number pattern, PINs, paths, and each step's deadline and retry count.  The shipped
``welma-optee`` profile is the tutorial verbatim; a line engineer adds variants under
``$STATION_HOME/profiles/``.  Building a device command from a profile goes through
:mod:`station.shell`, the one place that quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station.errors import ConfigError, StationError
from station.shell import ShellCommand
from station.tomlfile import config_error, read_toml, refuse_unknown

SHIPPED_DIR = Path(__file__).parent
DEFAULT_PROFILE = "welma-optee"

# The enrollment, in order.  A profile may leave out "reboot" and "tls_proof".
STEP_NAMES = (
    "identify",
    "guard",
    "wipe",
    "reboot",
    "init_token",
    "init_pin",
    "keygen",
    "csr",
    "fetch_csr",
    "check_csr",
    "sign",
    "push",
    "tls_proof",
)
COMMAND_NAMES = (
    "wipe",
    "init_token",
    "init_pin",
    "keygen",
    "list_private_key",
    "read_public_key",
    "csr",
    "tls_client",
)
KEY_TYPES = ("rsa:2048", "rsa:3072", "rsa:4096", "EC:prime256v1", "EC:secp384r1")
# The tutorial's demo PINs: fine for a demo, refused by a station in production mode.
DEMO_PINS = frozenset({"00000000", "0000", "1234", "123456", "12345678"})
# A station in production mode takes only PINs that are not guessable from the tutorial or a keypad.
MIN_PRODUCTION_PIN_LENGTH = 6
MAX_SERIAL_LENGTH = 64
_SERIAL_SAFE = re.compile(r"[A-Za-z0-9._:/+-]+")
_STRING_SETTINGS = (
    "description",
    "subject",
    "so_pin",
    "user_pin",
    "module",
    "storage_dir",
    "token_label",
    "key_label",
    "key_id",
    "key_type",
    "csr_path",
    "pubkey_path",
    "cert_path",
    "ca_cert_path",
    # Optional URLs the station writes into each device certificate (CRL distribution point, AIA).
    "crl_url",
    "ca_issuers_url",
    "ocsp_url",
)
# What a profile file may hold; anything else is refused with its file and line (a typo such as
# ``timout_s = 90`` must not silently keep the default).
PROFILE_TABLES = ("profile", "console", "identity", "attestation", "steps", "commands")
PROFILE_KEYS = (
    "name",
    "serial_pattern",
    "validity_days",
    "reboot_after_wipe",
    "tls_proof",
    "device_has_network",
    "tools",
    *_STRING_SETTINGS,
)
CONSOLE_KEYS = ("login_user", "login_password", "prompt_pattern")
STEP_KEYS = ("timeout_s", "retries")


class InvalidSerial(StationError):
    """A scanned serial that must not go anywhere near a device."""


@dataclass(frozen=True)
class StepPolicy:
    timeout_s: float
    retries: int = 0


@dataclass(frozen=True)
class ConsoleSettings:
    login_user: str = "root"
    login_password: str = ""
    prompt_pattern: str = r"[#$] ?$"


# Where a Welma board shows its SoC unique id, tried in order.  i.MX 8M: OCOTP fuses via soc0;
# STM32MP: the device tree (/proc/device-tree links to /sys/firmware/devicetree/base).
DEFAULT_SOC_ID_PATHS = (
    "/sys/devices/soc0/serial_number",
    "/proc/device-tree/serial-number",
    "/sys/firmware/devicetree/base/serial-number",
)
SOC_ID_IN_CERTIFICATE = ("none", "subject-serialNumber")
ATTESTATION_FORMATS = ("none", "x509-chain")


@dataclass(frozen=True)
class IdentitySettings:
    """How the station reads the board's SoC unique id, and what it does with it ([identity])."""

    soc_id_paths: tuple[str, ...] = DEFAULT_SOC_ID_PATHS
    # A command printing the id (one element per shell word); when set it is used instead of the paths.
    soc_id_command: tuple[str, ...] = ()
    soc_id_required: bool = True
    # "subject-serialNumber": the station adds serialNumber=<SoC id> to the certificate's subject.
    soc_id_in_certificate: str = "none"


@dataclass(frozen=True)
class AttestationSettings:
    """A key-attestation statement the station verifies before signing ([attestation]).

    ``x509-chain``: the command prints a PEM chain, leaf first, whose leaf certifies the token key and
    which chains to ``vendor_root`` (as YubiKey PIV and Microchip ATECC/TA100 devices provide).
    OP-TEE's PKCS#11 TA has no attestation, so the shipped profiles use "none".
    """

    format: str = "none"
    command: tuple[str, ...] = ()
    vendor_root: str = ""


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of board, loaded from a TOML file."""

    name: str
    source: Path
    serial_pattern: re.Pattern[str]
    settings: dict[str, str]
    validity_days: int
    reboot_after_wipe: bool
    tls_proof: bool
    device_has_network: bool
    tools: tuple[str, ...]
    console: ConsoleSettings
    steps: dict[str, StepPolicy]
    commands: dict[str, tuple[str, ...]]
    command_env: dict[str, dict[str, str]] = field(default_factory=dict)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    attestation: AttestationSettings = field(default_factory=AttestationSettings)

    # The [profile] strings, typed (``settings`` keeps them all for filling command placeholders).

    @property
    def description(self) -> str:
        return self.settings["description"]

    @property
    def subject(self) -> str:
        return self.settings["subject"]

    @property
    def so_pin(self) -> str:
        return self.settings["so_pin"]

    @property
    def user_pin(self) -> str:
        return self.settings["user_pin"]

    @property
    def module(self) -> str:
        return self.settings["module"]

    @property
    def storage_dir(self) -> str:
        return self.settings["storage_dir"]

    @property
    def token_label(self) -> str:
        return self.settings["token_label"]

    @property
    def key_label(self) -> str:
        return self.settings["key_label"]

    @property
    def key_id(self) -> str:
        return self.settings["key_id"]

    @property
    def key_type(self) -> str:
        return self.settings["key_type"]

    @property
    def csr_path(self) -> str:
        return self.settings["csr_path"]

    @property
    def pubkey_path(self) -> str:
        return self.settings["pubkey_path"]

    @property
    def cert_path(self) -> str:
        return self.settings["cert_path"]

    @property
    def ca_cert_path(self) -> str:
        return self.settings["ca_cert_path"]

    @property
    def crl_url(self) -> str:
        return self.settings["crl_url"]

    @property
    def ca_issuers_url(self) -> str:
        return self.settings["ca_issuers_url"]

    @property
    def ocsp_url(self) -> str:
        return self.settings["ocsp_url"]

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log, the audit DB or an export."""
        candidates = (self.settings["so_pin"], self.settings["user_pin"], self.console.login_password)
        return tuple(secret for secret in candidates if secret)

    @property
    def uses_demo_pins(self) -> bool:
        return bool({self.settings["so_pin"], self.settings["user_pin"]} & DEMO_PINS)

    def production_pin_problems(self) -> list[str]:
        """Why this profile's PINs are not fit for production (empty when they are)."""
        problems = []
        for key in ("so_pin", "user_pin"):
            problem = pin_weakness(self.settings[key])
            if problem:
                problems.append(f"{key} {problem}")
        if self.settings["so_pin"] and self.settings["so_pin"] == self.settings["user_pin"]:
            problems.append("so_pin and user_pin are the same")
        return problems

    def step_names(self) -> tuple[str, ...]:
        """The enrollment as this profile runs it (the step list is data)."""
        names = list(STEP_NAMES)
        if not self.reboot_after_wipe:
            names.remove("reboot")
        if not self.tls_proof:
            names.remove("tls_proof")
        return tuple(names)

    def policy(self, step: str) -> StepPolicy:
        return self.steps[step]

    def validate_serial(self, serial: str) -> str:
        """Return the serial if it may be used; raise :class:`InvalidSerial` saying why not."""
        shown = repr(serial if len(serial) <= 40 else serial[:40] + "…")
        if not serial:
            raise InvalidSerial("the scanned serial is empty — scan the board's label again")
        if len(serial) > MAX_SERIAL_LENGTH:
            raise InvalidSerial(
                f"the scanned serial is {len(serial)} characters long (at most {MAX_SERIAL_LENGTH}) — "
                "the scanner probably read two labels; scan the board's label again"
            )
        if not serial.isascii() or not _SERIAL_SAFE.fullmatch(serial):
            raise InvalidSerial(
                f"the scanned serial {shown} contains characters a serial number cannot have — "
                "scan the board's label again"
            )
        if not self.serial_pattern.fullmatch(serial):
            raise InvalidSerial(
                f"the scanned serial {shown} does not match profile {self.name}'s pattern "
                f"{self.serial_pattern.pattern} — check you scanned the serial-number label, not another code"
            )
        return serial

    def subject_for(self, serial: str) -> str:
        return self.settings["subject"].format(serial=self.validate_serial(serial))

    def command(self, name: str, *, serial: str, **extra: str) -> ShellCommand:
        """The device command ``name`` for this board, every placeholder filled per argument."""
        values = self._values(serial, extra)
        argv = tuple(word.format_map(values) for word in self.commands[name])
        env = {key: value.format_map(values) for key, value in self.command_env.get(name, {}).items()}
        return ShellCommand(argv, env)

    def _values(self, serial: str, extra: dict[str, str]) -> dict[str, str]:
        values = dict(self.settings)
        values["serial"] = self.validate_serial(serial)
        values["subject"] = self.subject_for(serial)
        values.update(extra)
        return values


def pin_weakness(pin: str) -> str | None:
    """What makes ``pin`` guessable (a demo value, too short, one repeated character, a run), or None."""
    if pin in DEMO_PINS:
        return "is one of the tutorial's demo PINs"
    if len(pin) < MIN_PRODUCTION_PIN_LENGTH:
        return f"is shorter than {MIN_PRODUCTION_PIN_LENGTH} characters"
    if len(set(pin)) == 1:
        return "repeats one character (like 1111 or 0000)"
    steps = {ord(b) - ord(a) for a, b in zip(pin, pin[1:], strict=False)}
    if steps in ({1}, {-1}):
        return "is a sequence (like 123456 or 654321)"
    return None


def available_profiles(profiles_dir: Path | None = None) -> list[str]:
    names = {path.stem for path in SHIPPED_DIR.glob("*.toml")}
    if profiles_dir and profiles_dir.is_dir():
        names |= {path.stem for path in profiles_dir.glob("*.toml")}
    return sorted(names)


def load_profile(name: str, profiles_dir: Path | None = None) -> DeviceProfile:
    """Load profile ``name``: the line engineer's copy under ``profiles_dir`` wins over the shipped one."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ConfigError(f"profile name {name!r} is not valid — use letters, digits, '.', '_' and '-'")
    for directory in (profiles_dir, SHIPPED_DIR):
        if directory is not None and (directory / f"{name}.toml").is_file():
            return load_profile_file(directory / f"{name}.toml")
    raise ConfigError(
        f"no device profile named {name!r} — available: {', '.join(available_profiles(profiles_dir))}"
    )


def load_profile_file(path: Path) -> DeviceProfile:
    text, data = read_toml(path)
    return _ProfileReader(path, text, data).read()


class _ProfileReader:
    """Turns parsed TOML into a DeviceProfile, naming file, line and key for every problem."""

    def __init__(self, path: Path, text: str, data: dict[str, Any]) -> None:
        self.path = path
        self.text = text
        self.data = data

    def fail(self, key: str, problem: str) -> ConfigError:
        return config_error(self.path, self.text, key, problem)

    def table(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "must be a table")
        return value

    def refuse_unknown(self, table: dict[str, Any], known: tuple[str, ...], prefix: str = "") -> None:
        refuse_unknown(self.path, self.text, table, known, prefix=prefix)

    # long: reads every table of a profile in file order, each key refused or converted where it stands
    def read(self) -> DeviceProfile:
        self.refuse_unknown(self.data, PROFILE_TABLES)
        profile = self.table("profile")
        self.refuse_unknown(profile, PROFILE_KEYS, "profile.")
        settings: dict[str, str] = {}
        for key in _STRING_SETTINGS:
            value = profile.get(key, "")
            if not isinstance(value, str):
                raise self.fail(f"profile.{key}", f"must be a string, not {type(value).__name__}")
            settings[key] = value
        for required in (
            "subject",
            "module",
            "token_label",
            "key_label",
            "key_type",
            "csr_path",
            "cert_path",
            "ca_cert_path",
            "storage_dir",
            "pubkey_path",
        ):
            if not settings[required]:
                raise self.fail(f"profile.{required}", "is required")
        if settings["key_type"] not in KEY_TYPES:
            raise self.fail(
                "profile.key_type", f"{settings['key_type']!r} is not one of {', '.join(KEY_TYPES)}"
            )
        if "{serial}" not in settings["subject"]:
            raise self.fail("profile.subject", "must contain {serial}")
        name = profile.get("name", self.path.stem)
        if not isinstance(name, str) or not name:
            raise self.fail("profile.name", "must be a non-empty string")
        pattern_text = profile.get("serial_pattern", "")
        if not isinstance(pattern_text, str) or not pattern_text:
            raise self.fail("profile.serial_pattern", "is required (a regular expression for valid serials)")
        try:
            pattern = re.compile(pattern_text)
        except re.error as exc:
            raise self.fail("profile.serial_pattern", f"is not a valid regular expression ({exc})") from exc
        validity = self.integer(profile, "profile.validity_days", 3650, minimum=1)
        tools = profile.get("tools", ["pkcs11-tool", "openssl"])
        if not isinstance(tools, list) or not all(isinstance(tool, str) for tool in tools):
            raise self.fail("profile.tools", "must be a list of program names")
        console_table = self.table("console")
        self.refuse_unknown(console_table, CONSOLE_KEYS, "console.")
        console = ConsoleSettings(
            login_user=str(console_table.get("login_user", "root")),
            login_password=str(console_table.get("login_password", "")),
            prompt_pattern=str(console_table.get("prompt_pattern", r"[#$] ?$")),
        )
        try:
            re.compile(console.prompt_pattern)
        except re.error as exc:
            raise self.fail("console.prompt_pattern", f"is not a valid regular expression ({exc})") from exc
        built = DeviceProfile(
            name=name,
            source=self.path,
            serial_pattern=pattern,
            settings=settings,
            validity_days=validity,
            reboot_after_wipe=self.boolean(profile, "profile.reboot_after_wipe", True),
            tls_proof=self.boolean(profile, "profile.tls_proof", True),
            device_has_network=self.boolean(profile, "profile.device_has_network", True),
            tools=tuple(tools),
            console=console,
            steps=self.step_policies(),
            commands=self.command_templates(),
            command_env=self.command_envs(),
            identity=self.identity(),
            attestation=self.attestation(),
        )
        self.check_templates(built)
        return built

    def words(self, table: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = table.get(key.rsplit(".", 1)[-1], list(default))
        if not isinstance(value, list) or not all(isinstance(word, str) and word for word in value):
            raise self.fail(key, "must be a list of non-empty strings")
        return tuple(value)

    def choice(self, table: dict[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(repr(choice) for choice in choices)}")
        return str(value)

    def identity(self) -> IdentitySettings:
        table = self.table("identity")
        known = {"soc_id_paths", "soc_id_command", "soc_id_required", "soc_id_in_certificate"}
        for key in table:
            if key not in known:
                raise self.fail(
                    f"identity.{key}", f"is not an identity setting (known: {', '.join(sorted(known))})"
                )
        settings = IdentitySettings(
            soc_id_paths=self.words(table, "identity.soc_id_paths", DEFAULT_SOC_ID_PATHS),
            soc_id_command=self.words(table, "identity.soc_id_command", ()),
            soc_id_required=self.boolean(table, "identity.soc_id_required", True),
            soc_id_in_certificate=self.choice(
                table, "identity.soc_id_in_certificate", "none", SOC_ID_IN_CERTIFICATE
            ),
        )
        if not settings.soc_id_paths and not settings.soc_id_command:
            raise self.fail(
                "identity.soc_id_paths", "is empty and no soc_id_command is given — name where the id is"
            )
        return settings

    def attestation(self) -> AttestationSettings:
        table = self.table("attestation")
        known = {"format", "command", "vendor_root"}
        for key in table:
            if key not in known:
                raise self.fail(
                    f"attestation.{key}", f"is not an attestation setting (known: {', '.join(sorted(known))})"
                )
        settings = AttestationSettings(
            format=self.choice(table, "attestation.format", "none", ATTESTATION_FORMATS),
            command=self.words(table, "attestation.command", ()),
            vendor_root=str(table.get("vendor_root", "")),
        )
        if settings.format != "none":
            if not settings.command:
                raise self.fail("attestation.command", f"is required with format {settings.format!r}")
            root = Path(settings.vendor_root).expanduser()
            if not settings.vendor_root or not root.is_absolute():
                raise self.fail(
                    "attestation.vendor_root",
                    "must be the absolute path of the vendor's root certificate (PEM)",
                )
        return settings

    def integer(self, table: dict[str, Any], key: str, default: int, *, minimum: int) -> int:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(key, f"must be a number ≥ {minimum}")
        return int(value)

    def boolean(self, table: dict[str, Any], key: str, default: bool) -> bool:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def step_policies(self) -> dict[str, StepPolicy]:
        steps = self.table("steps")
        unknown = set(steps) - set(STEP_NAMES)
        if unknown:
            raise self.fail(
                f"steps.{sorted(unknown)[0]}", f"is not a step; steps are {', '.join(STEP_NAMES)}"
            )
        policies = {}
        for step in STEP_NAMES:
            table = steps.get(step, {})
            if not isinstance(table, dict):
                raise self.fail(f"steps.{step}", "must be a table with timeout_s and retries")
            self.refuse_unknown(table, STEP_KEYS, f"steps.{step}.")
            timeout = table.get("timeout_s", 60)
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise self.fail(f"steps.{step}.timeout_s", "must be a positive number of seconds")
            retries = self.integer(table, f"steps.{step}.retries", 0, minimum=0)
            policies[step] = StepPolicy(float(timeout), retries)
        return policies

    def command_templates(self) -> dict[str, tuple[str, ...]]:
        self.refuse_unknown(self.table("commands"), (*COMMAND_NAMES, "env"), "commands.")
        table = {key: value for key, value in self.table("commands").items() if key != "env"}
        commands = {}
        for name in COMMAND_NAMES:
            argv = table.get(name)
            if not isinstance(argv, list) or not argv or not all(isinstance(word, str) for word in argv):
                raise self.fail(
                    f"commands.{name}", "must be a non-empty list of strings (one per shell word)"
                )
            commands[name] = tuple(argv)
        return commands

    def command_envs(self) -> dict[str, dict[str, str]]:
        env = self.table("commands").get("env", {})
        if not isinstance(env, dict):
            raise self.fail("commands.env", "must be a table")
        result = {}
        for name, variables in env.items():
            if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
                raise self.fail(f"commands.env.{name}", "must map variable names to strings")
            result[name] = dict(variables)
        return result

    def check_templates(self, profile: DeviceProfile) -> None:
        """Render every command once so a typo in a placeholder fails at load, not on a board."""
        example = "0" * 15
        values = dict(
            profile.settings, serial=example, subject=profile.settings["subject"], server="127.0.0.1:1"
        )
        for name, argv in profile.commands.items():
            for word in (*argv, *profile.command_env.get(name, {}).values()):
                try:
                    word.format_map(values)
                except (KeyError, IndexError, ValueError) as exc:
                    raise self.fail(f"commands.{name}", f"placeholder problem in {word!r}: {exc}") from exc
