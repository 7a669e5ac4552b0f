"""A station CA in a token is unlocked by the station service from [ca] pin_file — never from an environment
variable, and never in the window's process (the window only asks the service whether its CA is unlocked)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.gui.conftest import stop_service
from tests.helpers.pki_tokens import PIN, offline_root, token_station
from ui.session import Session


def test_the_service_unlocks_a_token_ca_from_the_pin_file_and_ignores_the_passphrase_variable(
    tmp_path: Path, monkeypatch
) -> None:
    root = offline_root(tmp_path / "offline")
    home = tmp_path / "home"
    token_station(home, "GUI-1", root=root, name="GUI-1")
    # A PIN in the passphrase variable is not used for a token (it would be an inherited secret).
    monkeypatch.setenv("STATION_CA_PASSPHRASE", "not the PIN")
    session = Session.open(str(home))  # starts the station service for this account, which reads pin_file
    try:
        assert session.view.ca == {"exists": True, "kind": "token", "label": session.view.ca["label"]}
        assert session.view.ca_unlocked
        assert session.client.call("whoami")["ca_unlocked"] is True
    finally:
        session.close()
        stop_service(session.view.home)
    assert PIN not in os.environ.values()
