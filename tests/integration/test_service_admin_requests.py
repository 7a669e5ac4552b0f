"""The administrator's requests served by the station service, with real OS accounts (``useradd``, removed at
teardown) and a real `station serve` running as its own account on a home only it can read.

* `station ca init | import | show` run IN the service (not checked, then run by the command): an administrator's
  command sends the inputs' content (the service cannot read the caller's files) and the passphrase over the
  socket; the CA's files are the service's; the request is recorded, without any secret.  A technician and a
  quality lead are refused before any prompt, with the role named, and the refusal is recorded.
* `station profiles list | show | install`: an administrator installs a profile (checked as the station reads it
  first — a misspelt key is refused with its line, nothing written); others are refused, recorded.
* The socket as the packaged service makes it: its directory as systemd's RuntimeDirectory= (mode from the unit
  file), the socket reachable by a welma-tech account.
"""

from __future__ import annotations

import shutil
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from station.home import StationHome
from station.roles import Role
from tests.helpers.service import as_account, os_accounts, running_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "welma-station.service"
NEW_PASSPHRASE = "admin typed this passphrase"
OLD_KEY_PASSWORD = "old-ca-key-password"


@dataclass
class LinePc:
    base: Path
    names: dict[str, str]

    def home(self, name: str) -> StationHome:
        return StationHome(self.base / name)

    def socket(self, name: str) -> Path:
        return self.base / f"run-{name}" / "station.sock"


def _runtime_mode() -> int:
    """RuntimeDirectoryMode= of the packaged unit (what systemd gives /run/welma-station)."""
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line.startswith("RuntimeDirectoryMode="):
            return int(line.partition("=")[2], 8)
    raise AssertionError("the unit sets no RuntimeDirectoryMode=")


@pytest.fixture
def line_pc() -> Iterator[LinePc]:
    roles = {"service": None, "tech": Role.TECHNICIAN, "quality": Role.QUALITY, "admin": Role.ADMIN}
    base = Path(tempfile.mkdtemp(prefix="welma-adm-"))
    base.chmod(0o711)  # the accounts reach the sockets' directories; nothing else in here is theirs
    try:
        with os_accounts("wad", roles) as names:
            yield LinePc(base, names)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def serve(pc: LinePc, name: str) -> object:
    """A home of the service account's (0700, no CA yet) and its socket's directory as systemd makes it."""
    home = pc.home(name).create()
    home.config_file.write_text('[station]\nname = "line-1"\n')
    run = pc.socket(name).parent
    run.mkdir()
    run.chmod(_runtime_mode())
    subprocess.run(["chown", "-R", f"{pc.names['service']}:nogroup", str(home.root), str(run)], check=True)
    return running_service(home, pc.socket(name), user=pc.names["service"], log=pc.base / f"{name}.log")


def station_as(pc: LinePc, who: str, home: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return as_account(pc.names[who], pc.socket(home), *args, env=env)


def requests(home: StationHome) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{home.audit_db}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM service_requests ORDER BY id"))


def assert_refused(run: subprocess.CompletedProcess[str], account: str, role: Role) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"refused: {account} may not" in run.stderr, run.stderr
    assert role.value in run.stderr and role.words in run.stderr, run.stderr
    assert "passphrase" not in (run.stdout + run.stderr).lower(), "refused before any prompt"


def assert_no_secret(pc: LinePc, home: StationHome, *secrets: str) -> None:
    """No secret in the audit log (the whole file, every table), the people store or the service's log."""
    places = [home.audit_db, pc.base / f"{home.root.name}.log"]
    for place in places:
        data = place.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret in {place}"


def test_ca_init_import_and_show_run_in_the_service_for_an_administrator_only(line_pc: LinePc) -> None:
    pc = line_pc
    tech, quality, admin = pc.names["tech"], pc.names["quality"], pc.names["admin"]
    service_uid = _uid(pc.names["service"])

    # -- ca init on a fresh line PC ---------------------------------------------------------------------------
    home = pc.home("a")
    with serve(pc, "a"):
        # The passphrase is in the command's environment: the refusal still comes first, and nothing is made.
        for who, role_needed in ((tech, Role.ADMIN), (quality, Role.ADMIN)):
            key = "tech" if who == tech else "quality"
            assert_refused(
                station_as(pc, key, "a", "ca", "init", STATION_CA_PASSPHRASE=NEW_PASSPHRASE), who, role_needed
            )
            assert_refused(station_as(pc, key, "a", "ca", "show"), who, role_needed)
        assert not (home.ca_dir / "ca.cert").exists()

        made = station_as(
            pc, "admin", "a", "ca", "init", "--common-name", "Line 1 CA", STATION_CA_PASSPHRASE=NEW_PASSPHRASE
        )
        assert made.returncode == 0, made.stdout + made.stderr
        assert f"Created the station CA in {home.ca_dir}" in made.stdout and "unlocked" in made.stdout
        # Made by the service, as its own account, in its own home (the administrator cannot even read it).
        for name in ("ca.key", "ca.cert", "system.key", "system.cert"):
            assert (home.ca_dir / name).stat().st_uid == service_uid, name
        assert stat.S_IMODE((home.ca_dir / "ca.key").stat().st_mode) == 0o600
        reading = subprocess.run(
            ["runuser", "-u", admin, "--", "cat", str(home.ca_dir / "ca.cert")],
            capture_output=True,
            check=False,
        )
        assert reading.returncode != 0, "the home is the service's alone"

        shown = station_as(pc, "admin", "a", "ca", "show")
        assert shown.returncode == 0 and "subject:        CN=Line 1 CA" in shown.stdout, (
            shown.stdout + shown.stderr
        )
        again = station_as(pc, "admin", "a", "ca", "init", STATION_CA_PASSPHRASE=NEW_PASSPHRASE)
        assert again.returncode == 1 and "A CA already exists" in again.stderr, again.stderr

    rows = requests(home)
    refusals = {(row["account"], row["op"], row["role_needed"]) for row in rows if not row["allowed"]}
    assert refusals == {(tech, "ca", Role.ADMIN.value), (quality, "ca", Role.ADMIN.value)}
    (init,) = [
        row for row in rows if row["allowed"] and '"init"' in row["detail"] and '"check"' not in row["detail"]
    ]
    assert init["account"] == admin and "Line 1 CA" in init["detail"]
    assert_no_secret(pc, home, NEW_PASSPHRASE)

    # -- ca import: the key and certificate are files only the administrator can read ---------------------------
    mine = pc.base / "admin-files"
    mine.mkdir(mode=0o700)
    key, cert = mine / "ca.key", mine / "ca.cert"
    _openssl("genrsa", "-aes256", "-passout", f"pass:{OLD_KEY_PASSWORD}", "-out", str(key), "2048")
    _openssl(
        "req",
        "-new",
        "-x509",
        "-subj",
        "/CN=plant ca",
        "-key",
        str(key),
        "-passin",
        f"pass:{OLD_KEY_PASSWORD}",
        "-out",
        str(cert),
    )
    subprocess.run(["chown", "-R", f"{admin}:nogroup", str(mine)], check=True)
    imported_home = pc.home("b")
    argv = ("ca", "import", "--key", str(key), "--cert", str(cert), "--key-password-env", "OLD_PW")
    with serve(pc, "b"):
        assert_refused(station_as(pc, "tech", "b", *argv, OLD_PW=OLD_KEY_PASSWORD), tech, Role.ADMIN)
        done = station_as(
            pc, "admin", "b", *argv, OLD_PW=OLD_KEY_PASSWORD, STATION_CA_PASSPHRASE=NEW_PASSPHRASE
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"Imported the CA into {imported_home.ca_dir}" in done.stdout
        shown = station_as(pc, "admin", "b", "ca", "show")
        assert "CN=plant ca" in shown.stdout, shown.stdout + shown.stderr
    adopted = x509.load_pem_x509_certificate((imported_home.ca_dir / "ca.cert").read_bytes())
    assert adopted == x509.load_pem_x509_certificate(cert.read_bytes())
    assert (imported_home.ca_dir / "ca.key").stat().st_uid == service_uid
    (row,) = [
        row
        for row in requests(imported_home)
        if row["allowed"] and '"import"' in row["detail"] and '"check"' not in row["detail"]
    ]
    assert row["account"] == admin and "cert_pem" in row["detail"] and "sha256" in row["detail"]
    assert "BEGIN" not in row["detail"], "a file's content is recorded as its digest, a key not at all"
    assert [r["account"] for r in requests(imported_home) if not r["allowed"]] == [tech]
    key_body = "".join(key.read_text().splitlines()[2:5])
    assert_no_secret(pc, imported_home, NEW_PASSPHRASE, OLD_KEY_PASSWORD, key_body)


def test_profiles_are_installed_through_the_service_by_an_administrator_only(line_pc: LinePc) -> None:
    pc = line_pc
    tech, quality = pc.names["tech"], pc.names["quality"]
    home = pc.home("p")
    shared = pc.base / "shared"
    shared.mkdir()
    shared.chmod(0o755)  # (this process's umask may be 077)
    good = shared / "line3.toml"
    good.write_text((ROOT / "station" / "profiles" / "welma-optee.toml").read_text())
    bad = shared / "typo.toml"
    bad.write_text('[profile]\nname = "typo"\ntimout_s = 90\n')
    for path in (good, bad):
        path.chmod(0o644)
    with serve(pc, "p"):
        # The socket and its directory as the packaged service has them: reachable by a welma-tech account.
        assert stat.S_IMODE(pc.socket("p").parent.stat().st_mode) == _runtime_mode() == 0o755
        assert stat.S_IMODE(pc.socket("p").stat().st_mode) == 0o666
        units = station_as(pc, "tech", "p", "units")
        assert units.returncode == 0, units.stdout + units.stderr

        for key, account in (("tech", tech), ("quality", quality)):
            assert_refused(station_as(pc, key, "p", "profiles", "install", str(good)), account, Role.ADMIN)
            assert_refused(station_as(pc, key, "p", "profiles", "list"), account, Role.ADMIN)
        assert not (home.profiles_dir / "line3.toml").exists()

        typo = station_as(pc, "admin", "p", "profiles", "install", str(bad))
        assert typo.returncode == 1 and f"{bad}, line 3" in typo.stderr and "timout_s" in typo.stderr, (
            typo.stderr
        )
        assert not (home.profiles_dir / "typo.toml").exists()

        installed = station_as(pc, "admin", "p", "profiles", "install", str(good))
        assert installed.returncode == 0 and "Profile 'line3' installed" in installed.stdout, installed.stderr
        assert (home.profiles_dir / "line3.toml").read_text() == good.read_text()
        assert (home.profiles_dir / "line3.toml").stat().st_uid == _uid(pc.names["service"])
        twice = station_as(pc, "admin", "p", "profiles", "install", str(good))
        assert twice.returncode == 1 and "--replace" in twice.stderr
        listed = station_as(pc, "admin", "p", "profiles", "list")
        assert "line3" in listed.stdout and "station" in listed.stdout and "welma-optee" in listed.stdout
        shown = station_as(pc, "admin", "p", "profiles", "show", "line3")
        assert shown.returncode == 0 and "serial_pattern" in shown.stdout
    refused = [
        (row["account"], row["op"], row["role_needed"]) for row in requests(home) if not row["allowed"]
    ]
    assert sorted(refused) == sorted(
        [(tech, "profiles", "welma-admin")] * 2 + [(quality, "profiles", "welma-admin")] * 2
    )
    installs = [row for row in requests(home) if row["allowed"] and '"install"' in row["detail"]]
    assert [row["account"] for row in installs] == [pc.names["admin"]] * 3
    assert all("sha256" in row["detail"] and "serial_pattern" not in row["detail"] for row in installs)


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid
