"""Checks made before the farm starts anything, each returning a message for a person (or None).

The simulator needs root, Linux namespaces with overlayfs, a few Debian packages and free SSH
addresses.  Checking first means a failure says exactly what is missing and how to fix it,
instead of surfacing later as a board that never boots.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from station.sim.layout import SFTP_SERVER

# Deadline of the namespace probe (one short-lived unshare).
PROBE_TIMEOUT_S = 10.0

# Where distributions put SoftHSM2: Debian's arch-independent symlink first, then multiarch dirs.
SOFTHSM_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/*/softhsm/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class Requirement:
    """A file the simulated board needs, and the Debian package that provides it."""

    package: str
    what: str
    present: bool


def find_softhsm_library() -> Path | None:
    """The real path of libsofthsm2.so (resolved: it becomes the target of an absolute symlink)."""
    for pattern in SOFTHSM_CANDIDATES:
        for match in sorted(glob.glob(pattern)):
            if os.path.isfile(match):
                return Path(os.path.realpath(match))
    return None


def _openssl_engines_dir() -> Path | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    try:
        out = subprocess.run(
            [openssl, "version", "-e"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        ).stdout
    except subprocess.TimeoutExpired:
        return None
    found = re.search(r'ENGINESDIR: "([^"]+)"', out)
    return Path(found.group(1)) if found else None


def requirements(*, serial_console: bool) -> list[Requirement]:
    """Everything a simulated board runs, with whether this machine has it."""
    engines = _openssl_engines_dir()
    reqs = [
        Requirement("util-linux", "unshare", shutil.which("unshare") is not None),
        Requirement("util-linux", "setsid", shutil.which("setsid") is not None),
        Requirement("openssh-server", "/usr/sbin/sshd", os.path.isfile("/usr/sbin/sshd")),
        Requirement("openssh-sftp-server", SFTP_SERVER, os.path.isfile(SFTP_SERVER)),
        Requirement("softhsm2", "libsofthsm2.so", find_softhsm_library() is not None),
        Requirement("softhsm2", "/etc/softhsm/softhsm2.conf", os.path.isfile("/etc/softhsm/softhsm2.conf")),
        # init.sh bind-mounts the board's wrapper over exactly this path.
        Requirement("opensc", "/usr/bin/pkcs11-tool", os.path.isfile("/usr/bin/pkcs11-tool")),
        Requirement("openssl", "openssl", shutil.which("openssl") is not None),
        Requirement(
            "libengine-pkcs11-openssl",
            "the openssl pkcs11 engine",
            engines is not None and (engines / "pkcs11.so").is_file(),
        ),
    ]
    if serial_console:
        reqs.append(Requirement("socat", "socat", shutil.which("socat") is not None))
    return reqs


def check_packages(*, serial_console: bool) -> str | None:
    missing = [req for req in requirements(serial_console=serial_console) if not req.present]
    if not missing:
        return None
    packages = sorted({req.package for req in missing})
    details = ", ".join(f"{req.what} ({req.package})" for req in missing)
    return (
        f"missing system packages: {', '.join(packages)} (not found: {details}). "
        f"Install them with: apt-get install {' '.join(packages)}"
    )


def check_root(euid: int | None = None) -> str | None:
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return None
    return (
        "the device simulator needs root: every simulated board gets its own namespaces, mounts "
        "and sshd. Run it as root, e.g. `sudo station sim up …` (keep --home or STATION_HOME)."
    )


# Mounts an overlay inside a throw-away namespace, with its upper layer on the station home's
# filesystem: that is what a board's init does for /var/lib (and overlayfs cannot use every
# filesystem as an upper layer, e.g. not another overlayfs as in many containers).
_NAMESPACE_PROBE = 'mount -t overlay overlay -o "lowerdir=$1/l,upperdir=$1/u,workdir=$1/w" "$1/m" || exit 42'


def check_namespaces(sim_dir: Path) -> str | None:
    """Try what a board's boot needs: mount, PID and UTS namespaces and an overlay below ``sim_dir``."""
    sim_dir.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix=".probe-", dir=sim_dir))
    try:
        for layer in ("l", "u", "w", "m"):
            (probe / layer).mkdir()
        argv = [
            "unshare",
            "--mount",
            "--pid",
            "--uts",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            _NAMESPACE_PROBE,
            "probe",
            str(probe),
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return f"creating a test namespace did not finish within {PROBE_TIMEOUT_S:g} s; is the machine overloaded?"
        except FileNotFoundError:
            return "unshare is missing. Install it with: apt-get install util-linux"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    if done.returncode == 0:
        return None
    detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
    if done.returncode == 42:
        return (
            f"overlayfs cannot be mounted with its upper layer in {sim_dir} ({detail}); simulated boards keep "
            "their /var/lib there. Choose a --home on ext4, xfs or tmpfs (not inside another overlay), "
            "or load overlayfs with `modprobe overlay`."
        )
    return (
        f"Linux namespaces are not permitted here ({detail}). The simulator needs root with "
        "CAP_SYS_ADMIN: run it as root on a host or VM, or in a container started with --privileged."
    )


def check_home_path(sim_dir: Path) -> str | None:
    """Overlay mount options cannot carry these characters, and a board hides its own /run."""
    text = str(sim_dir)
    bad = sorted({ch for ch in text if ch in ",:\\" or ch.isspace()})
    if bad:
        return (
            f"the station home {text!r} contains {' '.join(repr(ch) for ch in bad)}, which cannot be used in "
            "overlay mounts; choose another --home (or STATION_HOME)."
        )
    if sim_dir.is_relative_to("/run") or sim_dir.is_relative_to("/proc") or sim_dir.is_relative_to("/dev"):
        return f"the station home {text!r} is below /run, /proc or /dev, which every board mounts over; choose another --home."
    return None


def address_in_use(address: str, port: int) -> bool:
    """True if something already listens on (or holds) address:port, as sshd would see it.

    Raises OSError when the address cannot be used at all (not a local address).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like sshd: SO_REUSEADDR ignores TIME_WAIT leftovers but not a listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def check_addresses(endpoints: list[tuple[str, str]], port: int) -> str | None:
    """``endpoints`` is [(device name, address)]; say which address:port is taken, and how to find by whom."""
    busy: list[str] = []
    for name, address in endpoints:
        try:
            if address_in_use(address, port):
                busy.append(f"{address}:{port} ({name})")
        except OSError as exc:
            return (
                f"cannot listen on {address}:{port} for {name} ({exc.strerror}); simulated devices need the "
                "whole 127.0.0.0/8 loopback network, as Linux provides it by default."
            )
    if not busy:
        return None
    return (
        f"SSH address already in use: {', '.join(busy)}. Another program listens there "
        f"(see `ss -ltnp 'sport = :{port}'`); stop it, or choose another port with --port."
    )
