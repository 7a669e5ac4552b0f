"""SoftHSM2 tokens for the CA tests: a token directory and softhsm2.conf private to each test's directory.

The system's SoftHSM configuration (used by the simulated boards) is never touched: every softhsm2-util and
pkcs11-tool run here gets SOFTHSM2_CONF in its own environment only.  PINs go on the argv of those test-side
tools, never into a station process's environment.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

MODULE_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/softhsm/libsofthsm2.so",
    *glob.glob("/usr/lib/*/softhsm/libsofthsm2.so"),
)
SOFTHSM_MODULE = Path(next(path for path in MODULE_CANDIDATES if Path(path).exists()))
SO_PIN = "13572468"
PIN = "24681357"
ROOT_PASSPHRASE = "offline root ceremony passphrase"


def private_softhsm(directory: Path) -> Path:
    """A SoftHSM2 configuration with its own token directory below ``directory``; returns the conf's path."""
    tokens = directory / "softhsm-tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    return conf


def softhsm_env(conf: Path) -> dict[str, str]:
    return dict(os.environ, SOFTHSM2_CONF=str(conf))


def init_token(conf: Path, label: str, *, pin: str = PIN) -> None:
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", pin],
        env=softhsm_env(conf),
        check=True,
        capture_output=True,
        timeout=30,
    )


def pkcs11_tool(conf: Path, label: str, *args: str, pin: str = PIN) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            str(SOFTHSM_MODULE),
            "--token-label",
            label,
            "--login",
            "--pin",
            pin,
            *args,
        ],
        env=softhsm_env(conf),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    return path


def station(
    home: Path,
    *args: str,
    timeout: float = 180,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real `station` command line; no PIN or passphrase in its environment unless ``env`` puts one there."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k not in ("STATION_CA_PASSPHRASE", "SOFTHSM2_CONF")}
    # A new session: no controlling terminal, so a prompt fails at once instead of waiting on /dev/tty.
    return subprocess.run(
        [sys.executable, "-m", "station", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def token_station(
    home: Path,
    label: str,
    *,
    root: Path,
    name: str,
    max_certificates: int | None = None,
    extra_toml: str = "",
) -> Path:
    """A station home whose CA key is in its own SoftHSM2 token, certified by ``root``; returns the chain path."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = private_softhsm(home)
    init_token(conf, label)
    pin_file = secret_file(home / "token.pin", PIN)
    (home / "station.toml").write_text(
        f'[station]\nname = "{name}"\n\n[ca]\npin_file = "{pin_file}"\n{extra_toml}'
    )
    made = station(home, "ca", "init", "--pkcs11-module", str(SOFTHSM_MODULE), "--token-label", label)
    assert made.returncode == 0, made.stdout + made.stderr
    assert str(home / "ca" / "station-ca.csr") in made.stdout
    chain = home / f"{name}-chain.pem"
    limit = ["--max-certificates", str(max_certificates)] if max_certificates else []
    signed = station(
        home,
        "ca",
        "root",
        "sign-station",
        "--root",
        str(root),
        "--csr",
        str(home / "ca" / "station-ca.csr"),
        "--name",
        name,
        "--out",
        str(chain),
        "--passphrase-file",
        str(root.parent / "root.pass"),
        *limit,
    )
    assert signed.returncode == 0, signed.stdout + signed.stderr
    imported = station(home, "ca", "import-chain", str(chain))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    return chain


def offline_root(directory: Path) -> Path:
    """An offline root in ``directory``/root (key file under scrypt); its passphrase in ``directory``/root.pass."""
    directory.mkdir(parents=True, exist_ok=True)
    passphrase = secret_file(directory / "root.pass", ROOT_PASSPHRASE)
    root = directory / "root"
    made = station(
        directory / "root-home",
        "ca",
        "root",
        "init",
        "--out",
        str(root),
        "--common-name",
        "Acme Device Root",
        "--organization",
        "Acme",
        "--passphrase-file",
        str(passphrase),
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return root
