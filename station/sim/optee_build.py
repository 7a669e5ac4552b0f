"""Build (once) the OP-TEE board that ``station sim up --kind optee`` boots under QEMU.

The firmware (TF-A + OP-TEE OS 4.10.0 with its PKCS#11 TA + Debian's u-boot), the kernel (Debian's
arm64 package) and the userland (a Debian bookworm arm64 initramfs with optee_client's
``libckteec.so.0`` and ``tee-supplicant``) are built by ``station/sim/optee/build.sh`` from pinned
sources, and cached::

    ~/.cache/welma-station/optee/          ($XDG_CACHE_HOME/welma-station/optee)
      work/                  sources, downloaded .debs, the userland tree (reused between builds)
      <key>/                 flash.bin, Image, rootfs.cpio, complete   (key: checksum of the inputs)
      build.log              the last build's output

The key covers the pinned tarballs' checksums and the build and board scripts, so only the first
set-up (or a change of those) pays the ~2.5 minutes.  ``OPTEE_SOURCES`` names a directory of the
pinned release tarballs (each checked against its pinned SHA-256); by default ``shared/optee-qemu/src``
beside (or above) the checkout.  A tarball it lacks is downloaded as upstream's tag archive (GitHub)
into ``downloads/`` of the cache and verified against the pinned digest of its contents before use
(:class:`PinnedSource`); nothing is cloned unverified.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from station.errors import StationError


@dataclass(frozen=True)
class PinnedSource:
    """One pinned source the firmware is built from: the kit's release tarball, or upstream's tag archive.

    ``sha256`` is the kit's ``.tar.xz`` (``OPTEE_SOURCES``).  Upstream's tag archive (``url``, a
    ``.tar.gz``) is not byte-identical to it, so a download is verified by ``tree_sha256``: the digest
    of what the archive holds (see :func:`tree_digest`), computed from the kit's tarball.  That a
    download of ``url`` gives this same tree could not be checked where it was pinned (no access to
    GitHub); a mismatch stops the build and says so.
    """

    tarball: str
    sha256: str
    url: str
    tree_sha256: str
    workdir: str  # build.sh's directory for it under work/

    @property
    def download(self) -> str:
        """The name a download is kept under in the cache (what build.sh looks for in OPTEE_DOWNLOADS)."""
        return self.tarball.removesuffix(".tar.xz") + ".tar.gz"


PINNED_SOURCES = (
    PinnedSource(
        "optee_os-4.10.0.tar.xz",
        "0fda61bc359b34793224ae384317fa8e7419f78e30f55e7b678a963a189d2249",
        "https://github.com/OP-TEE/optee_os/archive/refs/tags/4.10.0.tar.gz",
        "f030e7fea4197836e61b69107bbcf3983c9810504f2ea7e455aa8945f4215e70",
        "optee_os",
    ),
    PinnedSource(
        "optee_client-4.10.0.tar.xz",
        "bb493eb5fdc5627cd5912647a472103df382641f9e069ee821cb1503c6fd8504",
        "https://github.com/OP-TEE/optee_client/archive/refs/tags/4.10.0.tar.gz",
        "7e1902f0f74fe60d563eaa9db1db93ceeccc559051350e05a9f6666c17730f86",
        "optee_client",
    ),
    PinnedSource(
        "trusted-firmware-a-lts-v2.14.6.tar.xz",
        "18c2841ef27b3606203d238b8647d615bd1cba2bb6404295ceb01354b08f27fb",
        "https://github.com/ARM-software/arm-trusted-firmware/archive/refs/tags/lts-v2.14.6.tar.gz",
        "0649e3ba419770e6e8567cfa22c69562d80fca6dce651f9b18b88f26aa7f59d5",
        "tfa",
    ),
)
# The pinned release tarballs (the kit in shared/optee-qemu/src) and their SHA-256.
PINNED_TARBALLS = {source.tarball: source.sha256 for source in PINNED_SOURCES}
# A download is bounded: its size, its time, and what it unpacks to when verified.
DOWNLOAD_MAX_BYTES = 256 << 20
DOWNLOAD_TIMEOUT_S = 900.0
DOWNLOAD_CONNECT_TIMEOUT_S = 60.0
TREE_MAX_BYTES = 2 << 30
# The board's scripts: part of the cache key (a change rebuilds the initramfs).
BOARD_SCRIPTS = ("build.sh", "init.sh", "reboot.sh")
ARTIFACTS = ("flash.bin", "Image", "rootfs.cpio")
# A cold build takes ~2.5 min on 2 cores; a slow mirror or a busy machine gets a generous margin.
BUILD_TIMEOUT_S = 1800.0
LOCK_TIMEOUT_S = BUILD_TIMEOUT_S
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class HostTool:
    """Something the build or the boards need on the host, and the Debian package providing it."""

    package: str
    what: str
    present: Callable[[], bool]


def _which(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") is not None


def _python_module(name: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            done = subprocess.run(
                ["/usr/bin/python3", "-c", f"import {name}"],
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    return check


# Running the boards needs only the first three; building them needs all.
RUN_TOOLS = (
    HostTool("qemu-system-arm", "qemu-system-aarch64", _which("qemu-system-aarch64")),
    HostTool("e2fsprogs", "mkfs.ext4", _which("mkfs.ext4")),
    HostTool("socat", "socat", _which("socat")),
)
BUILD_TOOLS = RUN_TOOLS + (
    HostTool("gcc-aarch64-linux-gnu", "aarch64-linux-gnu-gcc", _which("aarch64-linux-gnu-gcc")),
    HostTool(
        "libc6-dev-arm64-cross",
        "the arm64 C library's startup files (/usr/aarch64-linux-gnu/lib/crti.o)",
        lambda: Path("/usr/aarch64-linux-gnu/lib/crti.o").is_file(),
    ),
    HostTool("device-tree-compiler", "dtc", _which("dtc")),
    HostTool("python3-pyelftools", "Python module elftools", _python_module("elftools")),
    HostTool("python3-cryptography", "Python module cryptography", _python_module("cryptography")),
    HostTool("cmake", "cmake", _which("cmake")),
    HostTool("make", "make", _which("make")),
    HostTool("cpio", "cpio", _which("cpio")),
    HostTool("lz4", "lz4", _which("lz4")),
    HostTool("mmdebstrap", "mmdebstrap", _which("mmdebstrap")),
    HostTool("arch-test", "arch-test", _which("arch-test")),
    HostTool("qemu-user-static", "qemu-aarch64-static", _which("qemu-aarch64-static")),
    HostTool("binfmt-support", "update-binfmts", _which("update-binfmts")),
)


def missing_tools(tools: tuple[HostTool, ...]) -> str | None:
    """A message naming what to install, or None when everything is there."""
    missing = [tool for tool in tools if not tool.present()]
    if not missing:
        return None
    packages = " ".join(sorted({tool.package for tool in missing}))
    found = ", ".join(f"{tool.what} ({tool.package})" for tool in missing)
    return f"the OP-TEE boards need host packages that are missing (not found: {found}). Install them with: apt-get install {packages}"


def _foreign_arm64() -> bool:
    try:
        done = subprocess.run(
            ["dpkg", "--print-foreign-architectures"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "arm64" in done.stdout.split()


def check_build_host() -> str | None:
    """Everything that stops a build, in one message for a person (or None)."""
    problems = []
    if os.geteuid() != 0:
        problems.append(
            "building the OP-TEE board's userland needs root (mmdebstrap and a chroot): run `station sim up --kind optee` "
            "as root once; later runs use the cache"
        )
    tools = missing_tools(BUILD_TOOLS)
    if tools:
        problems.append(tools)
    if not _foreign_arm64():
        problems.append(
            "dpkg does not know the arm64 architecture (the board's kernel and u-boot are Debian arm64 packages): "
            "run `dpkg --add-architecture arm64 && apt-get update`"
        )
    elif not Path("/usr/lib/binfmt.d").exists() and not Path("/proc/sys/fs/binfmt_misc").exists():
        problems.append(
            "this kernel has no binfmt_misc support (needed to run arm64 programs in the userland build)"
        )
    return "\n".join(problems) or None


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "welma-station" / "optee"


def default_sources() -> Path | None:
    """$OPTEE_SOURCES, else shared/optee-qemu/src next to the checkout or a directory above it."""
    explicit = os.environ.get("OPTEE_SOURCES")
    if explicit:
        return Path(explicit)
    checkout = Path(__file__).resolve().parents[2]
    for parent in checkout.parents:
        candidate = parent / "shared" / "optee-qemu" / "src"
        if candidate.is_dir():
            return candidate
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _script(name: str) -> bytes:
    return resources.files("station.sim").joinpath("optee", name).read_bytes()


def verify_tarball(path: Path, expected: str) -> None:
    """The kit's tarball is the pinned one (SHA-256), or a clear error naming it."""
    actual = _sha256(path)
    if actual != expected:
        raise StationError(
            f"{path} has SHA-256 {actual}, not the pinned {expected} — replace it with the release tarball "
            "(shared/optee-qemu/src), or set OPTEE_SOURCES to a directory without it to download it from upstream"
        )


def tree_digest(path: Path, *, max_bytes: int = TREE_MAX_BYTES) -> str:
    """SHA-256 of what a source archive holds, whatever its compression and top directory's name.

    One line per entry, sorted by path (the top directory stripped): ``F path x|- sha256`` for a file
    (``x``: executable), ``L path target`` for a symbolic link, ``H path target`` for a hard link;
    directories are left out (git archives have no empty ones).
    """
    rows: list[str] = []
    unpacked = 0
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                _, _, inner = member.name.partition("/")
                inner = inner.rstrip("/")
                if not inner or member.isdir():
                    continue
                if member.issym():
                    rows.append(f"L {inner} {member.linkname}")
                elif member.islnk():
                    rows.append(f"H {inner} {member.linkname}")
                elif member.isfile():
                    unpacked += member.size
                    if unpacked > max_bytes:
                        raise StationError(
                            f"{path} unpacks to more than {max_bytes} bytes: not a pinned source"
                        )
                    digest = hashlib.sha256()
                    handle = archive.extractfile(member)
                    assert handle is not None
                    while block := handle.read(1 << 20):
                        digest.update(block)
                    rows.append(f"F {inner} {'x' if member.mode & 0o111 else '-'} {digest.hexdigest()}")
                else:
                    rows.append(f"O {inner} {member.type.decode(errors='replace')}")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise StationError(f"{path} is not a readable source archive ({error})") from None
    digest = hashlib.sha256()
    for row in sorted(rows):
        digest.update(row.encode("utf-8", errors="surrogateescape") + b"\n")
    return digest.hexdigest()


def verify_download(source: PinnedSource, path: Path) -> None:
    """A downloaded tag archive holds the pinned tree, or a clear error naming the file and the URL."""
    actual = tree_digest(path)
    if actual != source.tree_sha256:
        raise StationError(
            f"{path} (downloaded from {source.url}) does not hold the pinned sources: its content digest is "
            f"{actual}, not {source.tree_sha256} (computed from {source.tarball}). Put the release tarball "
            f"{source.tarball} in a directory and set OPTEE_SOURCES to it"
        )


def download(
    source: PinnedSource,
    directory: Path,
    *,
    opener: Callable[..., Any] = urllib.request.urlopen,
    progress: Callable[[str], None] = print,
) -> Path:
    """Fetch upstream's tag archive into ``directory`` (bounded in size and time) and verify it."""
    target = directory / source.download
    if target.is_file():
        try:
            verify_download(source, target)
            return target
        except StationError:
            target.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    progress(f"Downloading {source.url} (no {source.tarball} in OPTEE_SOURCES) …")
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT_S
    received = 0
    try:
        with opener(source.url, timeout=DOWNLOAD_CONNECT_TIMEOUT_S) as response, open(partial, "wb") as out:
            while block := response.read(1 << 16):
                received += len(block)
                if received > DOWNLOAD_MAX_BYTES:
                    raise StationError(
                        f"{source.url} sent more than {DOWNLOAD_MAX_BYTES} bytes: not a pinned source"
                    )
                if time.monotonic() > deadline:
                    raise StationError(f"downloading {source.url} took over {DOWNLOAD_TIMEOUT_S:g} s")
                out.write(block)
    except (OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        raise StationError(
            f"could not download {source.url} ({error}); put the release tarball {source.tarball} in a directory "
            "and set OPTEE_SOURCES to it"
        ) from None
    except StationError:
        partial.unlink(missing_ok=True)
        raise
    try:
        verify_download(source, partial)
    except StationError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return target


def cache_key(sources: Path | None) -> str:
    """Checksum of every input: the pinned tarballs (verified when present) and the board scripts."""
    digest = hashlib.sha256()
    for name, expected in sorted(PINNED_TARBALLS.items()):
        if sources is not None and (sources / name).is_file():
            verify_tarball(sources / name, expected)
        digest.update(f"{name} {expected}\n".encode())
    for name in BOARD_SCRIPTS:
        digest.update(name.encode() + b"\0" + _script(name))
    return digest.hexdigest()[:16]


def fetch_missing(
    sources: Path | None, root: Path, progress: Callable[[str], None] = print, **kwargs: Any
) -> Path:
    """Download (and verify) every pinned source the build still needs that OPTEE_SOURCES lacks.

    Returns the downloads directory (build.sh's OPTEE_DOWNLOADS).  A source already unpacked in
    the cache's work directory by an earlier build is not fetched again.
    """
    downloads = root / "downloads"
    for source in PINNED_SOURCES:
        if sources is not None and (sources / source.tarball).is_file():
            continue
        if (root / "work" / source.workdir / ".extracted").is_file():
            continue
        download(source, downloads, progress=progress, **kwargs)
    return downloads


@dataclass(frozen=True)
class BoardImage:
    """The built artifacts one OP-TEE board boots from (read-only, shared by every board)."""

    directory: Path

    @property
    def flash(self) -> Path:
        return self.directory / "flash.bin"

    @property
    def kernel(self) -> Path:
        return self.directory / "Image"

    @property
    def initrd(self) -> Path:
        return self.directory / "rootfs.cpio"

    def complete(self) -> bool:
        return (self.directory / "complete").is_file() and all(
            (self.directory / a).is_file() for a in ARTIFACTS
        )


def ensure_built(progress: Callable[[str], None] = print) -> BoardImage:
    """The cached board image, built first if needed (~2.5 min, once)."""
    sources = default_sources()
    root = cache_root()
    image = BoardImage(root / cache_key(sources))
    if image.complete():
        return image
    problem = check_build_host()
    if problem:
        raise StationError(f"cannot build the OP-TEE board:\n{problem}")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        _lock(lock, root)
        if image.complete():  # another process built it while we waited
            return image
        _build(image, sources, root, progress)
    return image


def _lock(lock: object, root: Path) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[arg-type]
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StationError(
                    f"another build of the OP-TEE board holds {root / '.lock'} for over {LOCK_TIMEOUT_S:g} s"
                ) from None
            time.sleep(1.0)


# long: the OP-TEE image build, one stage after another with its progress lines
def _build(image: BoardImage, sources: Path | None, root: Path, progress: Callable[[str], None]) -> None:
    progress(f"Building the OP-TEE board once (about 2.5 min; cached in {image.directory}) …")
    shutil.rmtree(image.directory, ignore_errors=True)
    script_dir = root / "scripts"
    script_dir.mkdir(parents=True, exist_ok=True)
    for name in BOARD_SCRIPTS:
        (script_dir / name).write_bytes(_script(name))
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(Path.home()),
        "JOBS": str(os.cpu_count() or 2),
    }
    if sources is not None:
        env["OPTEE_SOURCES"] = str(sources)
    env["OPTEE_DOWNLOADS"] = str(fetch_missing(sources, root, progress))
    log_path = root / "build.log"
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [
                "nice",
                "-n",
                "10",
                "/bin/sh",
                str(script_dir / "build.sh"),
                str(root / "work"),
                str(image.directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(root),
            text=True,
        )
        assert process.stdout is not None
        # A build that stops printing must still end: a timer kills it at the deadline.
        watchdog = threading.Timer(BUILD_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if line.startswith(("[optee build", "optee build:")):
                    progress(line.rstrip())
            process.wait()
        finally:
            watchdog.cancel()
        if time.monotonic() - started >= BUILD_TIMEOUT_S:
            raise StationError(
                f"building the OP-TEE board took over {BUILD_TIMEOUT_S:g} s and was stopped; see {log_path}"
            )
    if process.returncode != 0 or not image.complete():
        raise StationError(
            f"building the OP-TEE board failed (exit {process.returncode}); see {log_path}:\n"
            + "\n".join(log_path.read_text(errors="replace").splitlines()[-5:])
        )
    progress(f"OP-TEE board built in {time.monotonic() - started:.0f} s")
    # Older images (other inputs) are not booted again: ~150 MB each.  A running board read its
    # firmware, kernel and initramfs into memory at start, so removing them does not disturb it.
    for stale in root.iterdir():
        if (
            stale != image.directory
            and stale.is_dir()
            and len(stale.name) == 16
            and all(ch in "0123456789abcdef" for ch in stale.name)
        ):
            shutil.rmtree(stale, ignore_errors=True)
