"""Settings and wording the OP-TEE board made necessary: the TLS proof's dial address and fixed port,
PKCS#11 return values in words, the board image's cache key."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.config import load_config
from station.errors import ConfigError, StationError
from station.sim import optee_build
from station.sim.optee_farm import OpteeFault, _parse_fault
from station.transport.base import CommandFailed, CommandResult, checked, pkcs11_words


def test_tls_proof_dial_address_and_port_are_read_from_station_toml(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text('[tls_proof]\nlisten_address = "127.0.0.1"\ndial_address = "10.0.2.100"\nport = 8443\n')
    config = load_config(path)
    assert (config.tls_listen_address, config.tls_dial_address, config.tls_port) == (
        "127.0.0.1",
        "10.0.2.100",
        8443,
    )


def test_tls_proof_defaults_are_the_listen_address_and_a_free_port(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text("[tls_proof]\n")
    config = load_config(path)
    assert (config.tls_dial_address, config.tls_port) == ("", 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[tls_proof]\nport = 70000\n", r"line 2: tls_proof\.port: must be a TCP port"),
        ('[tls_proof]\nport = "8443"\n', r"line 2: tls_proof\.port"),
        ("[tls_proof]\nport = true\n", r"line 2: tls_proof\.port"),
        ("[tls_proof]\ndial_address = 10\n", r"line 2: tls_proof\.dial_address"),
        ('[tls_proof]\ndial = "10.0.2.100"\n', r"tls_proof\.dial: .*dial_address"),
    ],
)
def test_bad_tls_proof_settings_name_the_line(tmp_path, text, expected):
    path = tmp_path / "station.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_a_wrong_pin_is_said_in_words_not_as_pkcs11_tools_last_line():
    output = "Using slot 0 with a present token (0x0)\nerror: PKCS11 function C_Login failed: rv = CKR_PIN_INCORRECT (0xa0)\nAborting.\n"
    assert pkcs11_words(output).startswith("CKR_PIN_INCORRECT: the token refused the PIN")
    result = CommandResult(command="pkcs11-tool …", stdout=output, stderr="", exit_status=1, duration_s=0.1)
    with pytest.raises(CommandFailed, match="CKR_PIN_INCORRECT: the token refused the PIN"):
        checked(result, "pkcs11-tool", check=True)
    assert pkcs11_words("rv = CKR_SOMETHING_NEW (0x1234)") == ""


def test_optee_faults_are_named_and_unknown_ones_refused():
    assert _parse_fault("no-ta") is OpteeFault.NO_TA
    assert _parse_fault("abrupt-reset") is OpteeFault.ABRUPT_RESET
    with pytest.raises(StationError, match="no-ta, abrupt-reset"):
        _parse_fault("no-boot")


def test_the_cache_key_covers_the_pinned_tarballs_and_refuses_a_changed_one(tmp_path):
    assert optee_build.cache_key(None) == optee_build.cache_key(
        tmp_path
    )  # absent tarballs: pinned names count
    (tmp_path / "optee_os-4.10.0.tar.xz").write_bytes(b"not the release")
    with pytest.raises(StationError, match="not the pinned"):
        optee_build.cache_key(tmp_path)


def test_a_missing_host_package_is_named_with_the_line_that_installs_it():
    tools = (
        optee_build.HostTool("qemu-system-arm", "qemu-system-aarch64", lambda: False),
        optee_build.HostTool("e2fsprogs", "mkfs.ext4", lambda: True),
        optee_build.HostTool("mmdebstrap", "mmdebstrap", lambda: False),
    )
    message = optee_build.missing_tools(tools)
    assert message is not None
    assert "qemu-system-aarch64 (qemu-system-arm)" in message and "mkfs.ext4" not in message
    assert message.endswith("apt-get install mmdebstrap qemu-system-arm")
    assert optee_build.missing_tools(tools[1:2]) is None


def test_faults_are_written_where_the_running_board_reads_them(tmp_path):
    from station.home import StationHome
    from station.sim.optee_farm import FAULTS_DISK_BYTES, FAULTS_MAGIC, OpteeFarm

    farm = OpteeFarm(StationHome(tmp_path / "home").create())
    board = farm.board(1)
    board.root.mkdir(parents=True)
    farm._write_faults(board, OpteeFault.ABRUPT_RESET)
    data = board.file("faults.img").read_bytes()
    # A raw disk of one block: the magic line the board's init looks for, then one fault per line.
    assert len(data) == FAULTS_DISK_BYTES and data.startswith(FAULTS_MAGIC + b"abrupt-reset\n")
    assert farm._armed(board) == "abrupt-reset"
    farm._write_faults(board, None)
    assert farm._armed(board) is None and len(board.file("faults.img").read_bytes()) == FAULTS_DISK_BYTES
    assert farm.board_named("optee-01") == board and farm.board_named("sim-01") is None


def test_a_fixed_tls_proof_port_held_by_another_unit_is_waited_for_then_used(tmp_path):
    import socket

    from station.pki import CertificateAuthority
    from station.steps import StepFailed, _listen
    from station.tls_proof import TLS_PORT_BUSY, TlsProofListener
    from station.transport.base import Deadline

    listener = TlsProofListener(
        CertificateAuthority.init(tmp_path / "ca", passphrase=b"unit test passphrase")
    )
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        with pytest.raises(StationError, match=f"^{TLS_PORT_BUSY} 127.0.0.1:{port} is in use"):
            listener.listen("127.0.0.1", 1.0, port=port)
        with pytest.raises(StepFailed, match="stayed in use .* choose another \\[tls_proof\\] port"):
            _listen(listener, "127.0.0.1", port, Deadline(0.5))

    class BusyTwice:
        calls = 0

        def listen(self, host, timeout_s, port=0):
            self.calls += 1
            if self.calls <= 2:
                raise StationError(f"{TLS_PORT_BUSY} {host}:{port} is in use")
            return port

        def result(self, port, timeout_s):  # pragma: no cover - not used here
            return None, []

    busy = BusyTwice()
    assert _listen(busy, "127.0.0.1", 8443, Deadline(5.0)) == 8443 and busy.calls == 3
    assert listener.listen("127.0.0.1", 1.0, port=port) == port  # free again: the fixed port itself
    listener.result(port, 0.0)


# ---- pinned sources: the kit's tarballs and upstream's tag archives ---------------------------------


def _repack(source: Path, target: Path, *, top: str, mode: str, change: bytes | None = None) -> None:
    """Write source's entries under another top directory and compression (as GitHub's tag archive differs
    from the kit's .tar.xz); ``change`` appended to the first regular file tampers with it."""
    import io
    import tarfile

    with tarfile.open(source) as old, tarfile.open(target, f"w:{mode}") as new:
        changed = False
        for member in old:
            data = old.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            _, _, inner = member.name.partition("/")
            member.name = f"{top}/{inner}" if inner else top
            if data is not None and change is not None and not changed:
                data, changed = data + change, True
            if data is not None:
                member.size = len(data)
            new.addfile(member, io.BytesIO(data) if data is not None else None)


def _kit() -> Path:
    sources = optee_build.default_sources()
    assert sources is not None, "the kit's sources (shared/optee-qemu/src) are needed, as in CI"
    return sources


def test_the_pins_are_the_kits_tarballs_checksums_and_content_digests():
    sources = _kit()
    for source in optee_build.PINNED_SOURCES:
        assert optee_build._sha256(sources / source.tarball) == source.sha256
        assert optee_build.tree_digest(sources / source.tarball) == source.tree_sha256
        optee_build.verify_tarball(sources / source.tarball, source.sha256)


def test_a_local_tarball_with_another_checksum_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "optee_os-4.10.0.tar.xz"
    bad.write_bytes(b"not the release")
    with pytest.raises(StationError) as caught:
        optee_build.verify_tarball(bad, optee_build.PINNED_TARBALLS[bad.name])
    assert str(bad) in str(caught.value) and "not the pinned" in str(caught.value)


def test_upstream_tag_archive_urls_and_download_names_are_the_pinned_tags():
    by_name = {source.workdir: source for source in optee_build.PINNED_SOURCES}
    assert by_name["optee_os"].url == "https://github.com/OP-TEE/optee_os/archive/refs/tags/4.10.0.tar.gz"
    assert (
        by_name["optee_client"].url
        == "https://github.com/OP-TEE/optee_client/archive/refs/tags/4.10.0.tar.gz"
    )
    assert by_name["tfa"].url == (
        "https://github.com/ARM-software/arm-trusted-firmware/archive/refs/tags/lts-v2.14.6.tar.gz"
    )
    # What build.sh looks for in OPTEE_DOWNLOADS (its src(): optee_os-$REF, optee_client-$REF, trusted-firmware-a-$REF).
    assert [s.download for s in optee_build.PINNED_SOURCES] == [
        "optee_os-4.10.0.tar.gz",
        "optee_client-4.10.0.tar.gz",
        "trusted-firmware-a-lts-v2.14.6.tar.gz",
    ]
    script = (Path(optee_build.__file__).parent / "optee" / "build.sh").read_text()
    assert '"${OPTEE_DOWNLOADS:-/nonexistent}/$t.tar.gz"' in script and "git clone" not in script


def test_the_content_digest_ignores_compression_and_top_directory_but_not_content(tmp_path):
    kit = _kit() / "optee_client-4.10.0.tar.xz"
    same = tmp_path / "github.tar.gz"
    _repack(kit, same, top="optee_client-4.10.0-github", mode="gz")
    assert optee_build._sha256(same) != optee_build._sha256(kit)
    assert optee_build.tree_digest(same) == optee_build.tree_digest(kit)
    tampered = tmp_path / "tampered.tar.gz"
    _repack(kit, tampered, top="optee_client-4.10.0", mode="gz", change=b"\n# backdoor\n")
    assert optee_build.tree_digest(tampered) != optee_build.tree_digest(kit)


class _Served:
    """A fake opener serving one body (unit tests only: GitHub is not reachable from this machine)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.urls: list[str] = []

    def __call__(self, url: str, timeout: float):  # noqa: ANN204
        import io

        self.urls.append(url)
        assert timeout > 0
        return io.BytesIO(self.body)


def test_a_download_is_verified_and_kept_under_the_name_build_sh_reads(tmp_path):
    source = next(s for s in optee_build.PINNED_SOURCES if s.workdir == "optee_client")
    archive = tmp_path / "served.tar.gz"
    _repack(_kit() / source.tarball, archive, top="optee_client-4.10.0", mode="gz")
    served = _Served(archive.read_bytes())
    path = optee_build.download(source, tmp_path / "downloads", opener=served, progress=lambda _: None)
    assert path == tmp_path / "downloads" / "optee_client-4.10.0.tar.gz" and path.is_file()
    assert served.urls == [source.url]
    # Already there and verified: not fetched again.
    optee_build.download(source, tmp_path / "downloads", opener=served, progress=lambda _: None)
    assert served.urls == [source.url]


def test_a_tampered_download_is_refused_and_nothing_is_kept(tmp_path):
    source = next(s for s in optee_build.PINNED_SOURCES if s.workdir == "optee_client")
    archive = tmp_path / "served.tar.gz"
    _repack(_kit() / source.tarball, archive, top="optee_client-4.10.0", mode="gz", change=b"x")
    with pytest.raises(StationError) as caught:
        optee_build.download(
            source, tmp_path / "downloads", opener=_Served(archive.read_bytes()), progress=lambda _: None
        )
    message = str(caught.value)
    assert source.url in message and "optee_client-4.10.0.tar.gz" in message and "OPTEE_SOURCES" in message
    assert list((tmp_path / "downloads").iterdir()) == []
    with pytest.raises(StationError, match="not a readable source archive"):
        optee_build.download(
            source, tmp_path / "downloads", opener=_Served(b"<html>404</html>"), progress=lambda _: None
        )
    assert list((tmp_path / "downloads").iterdir()) == []


def test_only_the_sources_missing_and_not_yet_unpacked_are_fetched(tmp_path):
    sources = tmp_path / "src"
    sources.mkdir()
    kit = _kit()
    (sources / "optee_os-4.10.0.tar.xz").symlink_to(kit / "optee_os-4.10.0.tar.xz")
    root = tmp_path / "cache"
    (root / "work" / "tfa").mkdir(parents=True)
    (root / "work" / "tfa" / ".extracted").touch()
    archive = tmp_path / "served.tar.gz"
    _repack(kit / "optee_client-4.10.0.tar.xz", archive, top="optee_client-4.10.0", mode="gz")
    served = _Served(archive.read_bytes())
    downloads = optee_build.fetch_missing(sources, root, lambda _: None, opener=served)
    assert served.urls == ["https://github.com/OP-TEE/optee_client/archive/refs/tags/4.10.0.tar.gz"]
    assert sorted(p.name for p in downloads.iterdir()) == ["optee_client-4.10.0.tar.gz"]
