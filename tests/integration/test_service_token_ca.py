"""A station CA in a token, made through the station service: `station ca init --pkcs11-module …` runs in the
service (the key generated in the home's own SoftHSM2 token with the PIN from the service's [ca] pin_file), the
command gets its copy of the CSR; the offline root signs it — `station ca root …` next to a running service, which
it never asks; `station ca import-chain` installs the chain in the service, which then unlocks the CA itself.
No PIN in the record or the service's log.  And the offline root refuses a directory inside a station home."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from station.home import StationHome
from station.service.client import ServiceClient, home_socket
from tests.helpers.pki_tokens import (
    PIN,
    SOFTHSM_MODULE,
    init_token,
    offline_root,
    private_softhsm,
    secret_file,
    station,
)
from tests.helpers.service import running_service

pytestmark = pytest.mark.integration


def test_a_token_ca_is_made_and_completed_through_the_service(tmp_path: Path) -> None:
    root = offline_root(tmp_path / "offline")
    home = StationHome(tmp_path / "home").create()
    conf = private_softhsm(home.root)  # the home's own token directory, picked up by `ca init`
    init_token(conf, "LINE-9")
    pin_file = secret_file(home.root / "token.pin", PIN)
    home.config_file.write_text(f'[station]\nname = "line-9"\n\n[ca]\npin_file = "{pin_file}"\n')
    log = tmp_path / "service.log"
    csr = tmp_path / "line9.csr"
    with running_service(home, home_socket(home), log=log):
        made = station(
            home.root,
            "ca",
            "init",
            "--pkcs11-module",
            str(SOFTHSM_MODULE),
            "--token-label",
            "LINE-9",
            "--csr-out",
            str(csr),
        )
        assert made.returncode == 0, made.stdout + made.stderr
        assert (
            "in token 'LINE-9'" in made.stdout
            and f"A copy of the certificate request for you: {csr}" in made.stdout
        )
        assert csr.read_bytes() == (home.ca_dir / "station-ca.csr").read_bytes()

        # The offline root's commands never ask the service (it does not even learn of them).
        chain = tmp_path / "line9-chain.pem"
        signed = station(
            tmp_path / "offline" / "root-home",
            "--socket",
            str(home_socket(home)),
            "ca",
            "root",
            "sign-station",
            "--root",
            str(root),
            "--csr",
            str(csr),
            "--name",
            "LINE-9",
            "--out",
            str(chain),
            "--passphrase-file",
            str(tmp_path / "offline" / "root.pass"),
        )
        assert signed.returncode == 0, signed.stdout + signed.stderr

        installed = station(home.root, "ca", "import-chain", str(chain))
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert "CN=LINE-9" in installed.stdout and "unlocked" in installed.stdout
        with ServiceClient.connect(home_socket(home)) as client:
            assert client.call("whoami")["ca_unlocked"] is True
        shown = station(home.root, "ca", "show")
        assert shown.returncode == 0 and "Station CA:" in shown.stdout and "quota:" in shown.stdout

    detail = "\n".join(row for row in _requests(home))
    assert '"action": "init"' in detail and '"token_label": "LINE-9"' in detail
    assert '"action": "import_chain"' in detail and '"chain_pem": "' in detail and "sha256" in detail
    assert "sign-station" not in detail and '"root"' not in detail
    for place in (home.audit_db, log):
        assert PIN.encode() not in place.read_bytes(), place


def test_the_offline_root_is_refused_inside_a_station_home_and_asks_no_service(tmp_path: Path) -> None:
    home = StationHome(tmp_path / "home").create()
    passphrase = secret_file(tmp_path / "root.pass", "offline root ceremony passphrase")
    # A listening socket where a service would be: the root's commands must not connect to it.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "station.sock"
    listener.bind(str(path))
    listener.listen(4)
    listener.settimeout(0.5)
    try:
        inside = station(
            home.root,
            "--socket",
            str(path),
            "ca",
            "root",
            "init",
            "--out",
            str(home.root / "root-ca"),
            "--passphrase-file",
            str(passphrase),
        )
        assert inside.returncode == 1 and "inside the station home" in inside.stderr, inside.stderr
        assert not (home.root / "root-ca").exists()
        outside = station(
            home.root,
            "--socket",
            str(path),
            "ca",
            "root",
            "init",
            "--out",
            str(tmp_path / "root-ca"),
            "--passphrase-file",
            str(passphrase),
        )
        assert outside.returncode == 0, outside.stdout + outside.stderr
        assert (tmp_path / "root-ca" / "root.cert").exists()
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def _requests(home: StationHome) -> list[str]:
    import sqlite3

    with sqlite3.connect(f"file:{home.audit_db}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT op || ' ' || detail FROM service_requests ORDER BY id")]
