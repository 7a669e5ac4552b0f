"""Production mode means it: guessable PINs refused, the kill hook ignored, PINs masked however they are
quoted, and a home open to other users made private at start (or refused, in words)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from station import steps
from station.audit import AuditLog
from station.config import OrdersConfig, StationConfig
from station.errors import StationError
from station.flow import Provisioner
from station.home import StationHome
from station.masking import MASK, Masker
from station.permissions import secure_home
from station.profiles import load_profile, pin_weakness
from station.shell import command


@pytest.mark.parametrize(
    "pin", ["1111", "0000", "111111", "00000000", "123456", "654321", "abcdef", "1234", "58219", "12345678"]
)
def test_guessable_pins_are_weak(pin: str) -> None:
    assert pin_weakness(pin) is not None


@pytest.mark.parametrize("pin", ["582194", "48213377", "q7!Zp2x9"])
def test_the_plants_own_pins_pass(pin: str) -> None:
    assert pin_weakness(pin) is None


def test_a_production_station_refuses_a_profile_with_1111_class_pins_before_touching_anything(
    tmp_path: Path,
) -> None:
    home = StationHome(tmp_path / "home").create()
    base = load_profile("welma-optee-ec")
    weak = type(base)(
        **{**base.__dict__, "settings": {**base.settings, "so_pin": "11111111", "user_pin": "1111"}}
    )
    with AuditLog(home.audit_db) as audit:
        # Work orders not required here: the PINs are what is refused.
        config = StationConfig(name="p", production=True, orders=OrdersConfig(required=False))
        provisioner = Provisioner(home=home, config=config, ca=None, audit=audit)  # type: ignore[arg-type]
        with pytest.raises(StationError) as refused:
            provisioner.provision(
                serial="202600000000001", device="ssh://root@127.0.0.9:1", profile=weak, operator="ines"
            )
        assert audit.units() == []
    text = str(refused.value)
    assert "so_pin repeats one character" in text and "user_pin is shorter than 6" in text
    assert "production mode" in text


def test_production_mode_disables_the_kill_hook_for_the_process(tmp_path: Path, monkeypatch) -> None:
    home = StationHome(tmp_path / "home").create()
    monkeypatch.setattr(steps, "_test_hooks", {"enabled": True})
    monkeypatch.setenv(steps.KILL_AT_ENV, "a-point")
    with AuditLog(home.audit_db) as audit:
        Provisioner(home=home, config=StationConfig(name="p", production=True), ca=None, audit=audit)  # type: ignore[arg-type]
    steps.crash_point("a-point")  # would SIGKILL this very test process if the hook were still armed
    assert steps._test_hooks["enabled"] is False


@pytest.mark.parametrize("pin", ["it's-a-pin", "pin with spaces", "pi$n;x", "582194"])
def test_pins_are_masked_after_shell_quoting(pin: str) -> None:
    line = command("pkcs11-tool", "--pin", pin, "-key", f"pkcs11:object=key0;pin-value={pin}").render()
    masked = Masker([pin])(line)
    assert masked.count(MASK) == 2
    for fragment in (pin, pin.replace("'", "'\"'\"'")):
        assert fragment not in masked


def test_a_home_open_to_others_is_made_private_and_said_so(tmp_path: Path) -> None:
    home = StationHome(tmp_path / "home").create()
    AuditLog(home.audit_db).close()
    (home.root / "exports").mkdir()
    export = home.root / "exports" / "march.csv"
    export.write_text("serial\n")
    for path, mode in (
        (home.root, 0o755),
        (home.audit_db, 0o644),
        (home.root / "exports", 0o755),
        (export, 0o644),
    ):
        os.chmod(path, mode)
    changes = secure_home(home)
    assert len(changes) == 4 and all("made private" in change for change in changes)
    assert any("audit.db was open to other users (mode 0644)" in change for change in changes)
    for path in (home.root, home.audit_db, home.root / "exports", export):
        assert path.stat().st_mode & 0o077 == 0
    assert secure_home(home) == []  # nothing left to fix


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    home = StationHome(tmp_path / "home").create()
    AuditLog(home.audit_db).close()
    os.chmod(home.audit_db, 0o644)
    os.chown(home.audit_db, 4242, 4242)  # the tests run as root (the simulator needs it)
    with pytest.raises(StationError, match=r"owned by another user \(uid 4242\).*chmod go-rwx"):
        secure_home(home)
