"""The window unlocks a station CA in a token from [ca] pin_file — never from an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

from station.home import StationHome
from tests.helpers.pki_tokens import PIN, offline_root, token_station
from ui.app import unlock_ca


def test_the_window_unlocks_a_token_ca_from_the_pin_file_and_ignores_the_passphrase_variable(
    tmp_path: Path, monkeypatch
) -> None:
    root = offline_root(tmp_path / "offline")
    home = tmp_path / "home"
    token_station(home, "GUI-1", root=root, name="GUI-1")
    # A PIN in the passphrase variable is not used for a token (it would be an inherited secret).
    monkeypatch.setenv("STATION_CA_PASSPHRASE", "not the PIN")
    ca = unlock_ca(StationHome(home))
    assert ca is not None
    try:
        assert ca.in_token and ca.certificate.subject.rfc4514_string() == "CN=GUI-1 Issuing CA,O=Acme"
    finally:
        ca.close()
    assert PIN not in os.environ.values()
