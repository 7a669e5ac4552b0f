"""The station service's requests for the window (station/service/window_ops.py) and their client side
(station/service/window_client.py): what the window is told, the administrator's settings checked before they
are saved, the shared admin PIN's one lock, and the plain records turned back into the station's types."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from station.admin import StationSettings, load_settings, set_pin
from station.errors import StationError
from station.home import StationHome
from station.orders import Order, OrderStatus, SerialRange
from station.pki import CertificateAuthority
from station.service import window_ops
from station.service.server import StationService
from station.service.window_client import WindowView, profile_from_text
from station.service.window_ops import (
    order_status_from_record,
    order_status_record,
    settings_from_record,
    settings_record,
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[StationService]:
    """A station service on a home with a CA and one fixture (not listening: its handlers are called directly)."""
    home = StationHome(tmp_path / "home").create()
    CertificateAuthority.init(home.ca_dir, passphrase=b"unit test passphrase")
    home.config_file.write_text(
        '[station]\nname = "line-3"\n\n[output]\nfolder = "/srv/labels"\n\n'
        '[[fixture]]\nname = "bench-1"\ndevice = "ssh://root@127.0.0.1:9"\n'
    )
    running = StationService(home, tmp_path / "station.sock")
    yield running
    running.close()


def test_the_window_is_told_what_it_shows_and_reads_it_back(service: StationService) -> None:
    ops = window_ops.handlers(service)
    record = ops["window"](None, {})  # type: ignore[arg-type]
    view = WindowView.from_record(record)
    assert view.config.name == "line-3" and view.config.output.folder == "/srv/labels"
    assert [f.name for f in view.fixtures.fixtures] == ["bench-1"] and view.fixtures.origin == "station.toml"
    assert view.ca == {"exists": True, "kind": "file"} and not view.ca_unlocked
    assert view.home.root == service.home.root and not view.admin_pin_set
    assert view.settings == StationSettings()
    profile = view.profile(view.config.default_profile)
    assert profile.name == view.config.default_profile and profile.step_names()
    assert view.config.fleet is None  # no [fleet] credentials go to a window
    with pytest.raises(StationError, match="no device profile named 'nope'"):
        view.profile("nope")


def test_settings_are_checked_by_the_service_before_they_are_saved(service: StationService) -> None:
    settings = window_ops.handlers(service)["settings"]
    assert settings(None, {}) == {"settings": settings_record(StationSettings())}  # type: ignore[arg-type]
    wanted = StationSettings(auto_start=True, label_layout="50x25")
    answer = settings(None, {"action": "set", "settings": settings_record(wanted)})  # type: ignore[arg-type]
    assert answer["settings"]["auto_start"] is True and load_settings(service.home) == wanted
    for bad, words in (
        ({"fixtures_file": "/nowhere/fixtures.toml"}, "does not exist"),
        ({"profile": "no-such-profile"}, "no device profile"),
        ({"colour": "red"}, "unknown station setting"),
        ({"auto_start": "yes"}, "true or false"),
    ):
        with pytest.raises(StationError, match=words):
            settings(None, {"action": "set", "settings": bad})  # type: ignore[arg-type]
    assert load_settings(service.home) == wanted  # nothing refused was saved
    with pytest.raises(StationError, match="show or set"):
        settings(None, {"action": "delete"})  # type: ignore[arg-type]


def test_the_shared_admin_pin_is_checked_by_one_lock_and_refused_in_production(
    service: StationService,
) -> None:
    set_pin(service.home, "2468")
    unlock = service._handlers["admin_unlock"]  # as registered: one for every window of the service
    assert unlock(None, {"pin": "2468"}) == {"unlocked": True}  # type: ignore[arg-type]
    for left in (4, 3, 2, 1):
        with pytest.raises(StationError, match=f"{left} tries left"):
            unlock(None, {"pin": "0000"})  # type: ignore[arg-type]
    with pytest.raises(StationError, match="locked for 60 s"):
        unlock(None, {"pin": "0000"})  # type: ignore[arg-type]
    # Still locked, even with the right PIN (another window asks the same service).
    with pytest.raises(StationError, match="too many wrong PINs"):
        unlock(None, {"pin": "2468"})  # type: ignore[arg-type]
    service.home.config_file.write_text('[station]\nname = "line-3"\nproduction = true\n')
    with pytest.raises(StationError, match="production mode"):
        unlock(None, {"pin": "2468"})  # type: ignore[arg-type]


def test_plain_records_turn_back_into_the_same_values() -> None:
    status = OrderStatus(
        order=Order(
            "WO-7",
            "welma-optee",
            3,
            ranges=(SerialRange("2026", 1, 5, 11),),
            serials=("202600000000099",),
            due=date(2026, 12, 24),
        ),
        state="open",
        imported_at=datetime(2026, 12, 1, 6, 0, tzinfo=UTC),
        imported_by="quinn",
        source_file="wo-7.toml",
        file_sha256="ab" * 32,
        passed=1,
        running=1,
    )
    again = order_status_from_record(order_status_record(status))
    assert again == status and "202600000000099" in again.order and "202600000000003" in again.order
    assert settings_from_record(settings_record(StationSettings(profile="x"))) == StationSettings(profile="x")
    with pytest.raises(StationError, match="must be an object"):
        settings_from_record(["not", "an", "object"])
    with pytest.raises(StationError, match="<station service>/broken.toml"):
        profile_from_text("broken", "[profile\n")
