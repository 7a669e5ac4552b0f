"""The window is only a client of the station service (issue 14): on a line PC a technician's account runs
`station-gui` against the service of another account whose home is 0700 — the window provisions a simulated
board to PASS and never opens a file in the home (it could not: the home's permissions forbid it, and the
window's own descriptors and memory maps while the unit ran hold nothing there).  Its Audit tab reads the
station's recent units through the service too, and the label history beside its "Reprint label"."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.audit import AuditLog
from station.audit.service import ServiceRecords
from station.home import StationHome
from station.pki import CertificateAuthority
from tests.helpers.kit import certificate_on_board
from tests.helpers.line_servers import FakeZplPrinter
from tests.helpers.service import account_python, running_service
from tests.integration.test_station_service import (  # noqa: F401 - accounts: a fixture, used by name
    Accounts,
    LinePc,
    _run,
    _uid,
    accounts,
    as_user_shell,
)

pytestmark = [pytest.mark.gui, pytest.mark.integration]

PASSPHRASE = "window line pc passphrase"
WINDOW_S = 300


@pytest.fixture
def window_line_pc(
    accounts: Accounts,  # noqa: F811 - the fixture imported above
    start_farm,
    sim_home: StationHome,
) -> Iterator[tuple[LinePc, list, FakeZplPrinter]]:
    """A line PC: the home owned by the service account (0700) with the fixture in station.toml, its CA unlocked
    from a credential file only the service reads, the socket in a run directory anyone reaches."""
    devices = start_farm(1)
    base = Path(tempfile.mkdtemp(prefix="welma-gui-"))
    base.chmod(0o711)
    printer = FakeZplPrinter()  # the line's label printer, reached by the service
    try:
        home = StationHome(base / "home").create()
        shutil.copy2(sim_home.ssh_key, home.ssh_key)  # the farm trusts the station key of sim_home
        shutil.copy2(sim_home.ssh_public_key, home.ssh_public_key)
        CertificateAuthority.init(home.ca_dir, passphrase=PASSPHRASE.encode())
        (device,) = devices
        home.config_file.write_text(
            f'[station]\nname = "line-7"\n\n[label]\nprinter = "{printer.url}"\ntimeout_s = 2\n\n'
            f'[[fixture]]\nname = "bench-a"\ndevice = "{device.ssh_url}"\n'
        )
        credential = base / "ca-passphrase"
        credential.write_text(PASSPHRASE + "\n")
        credential.chmod(0o600)
        run = base / "run"
        run.mkdir()
        run.chmod(0o755)
        _run("chown", "-R", f"{accounts.service}:nogroup", str(home.root), str(credential), str(run))
        socket_path = run / "station.sock"
        with running_service(
            home, socket_path, credential=credential, user=accounts.service, log=base / "service.log"
        ) as service:
            yield LinePc(base, home, socket_path, service), devices, printer
    finally:
        printer.close()
        shutil.rmtree(base, ignore_errors=True)


def window_as(user: str, pc: LinePc, *args: str) -> subprocess.CompletedProcess[str]:
    """tests.gui.technician_window run by ``user`` (runuser, a clean environment: no passphrase, no home)."""
    prefix, extra = account_python()
    checkout = Path(__file__).resolve().parents[2]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "STATION_SOCKET": str(pc.socket),
        "LANG": "C.UTF-8",
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": str(checkout),
        **extra,
    }
    return subprocess.run(
        [
            "runuser",
            "-u",
            user,
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in env.items()),
            prefix[0],
            "-m",
            "tests.gui.technician_window",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=WINDOW_S,
        cwd="/",
        check=False,
    )


def test_a_technician_s_window_provisions_through_the_service_and_opens_nothing_in_the_home(
    accounts: Accounts,  # noqa: F811 - the fixture imported above
    window_line_pc,
    tmp_path: Path,
) -> None:
    pc, (device,), printer = window_line_pc
    serial = "202600000001901"
    tech = accounts.technician
    # The home is the service account's alone: the technician cannot even list it.
    info = pc.home.root.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == _uid(accounts.service)
    assert as_user_shell(tech, f"ls {pc.home.root}").returncode != 0

    # The technician's window saves two pictures (to look at) where it may write: out of pytest's private tmp.
    pictures = Path(tempfile.mkdtemp(prefix="welma-window-pictures-"))
    pictures.chmod(0o777)
    try:
        done = window_as(tech, pc, "tina", "bench-a", serial, str(pictures))
        saved = {path.name for path in pictures.iterdir()}
        shutil.copytree(pictures, tmp_path / "pictures")
    finally:
        shutil.rmtree(pictures, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ca_unlocked"] is True and report["home"] == str(pc.home.root)
    assert report["kind"] == "passed", report["message"]
    assert (
        report["verdict"] == "PASS" and report["label"] == serial
    )  # the label drawn from the service's data
    # Nothing the window held open or mapped while the unit ran was in the home.
    inside = [path for path in report["files"] if Path(path).is_relative_to(pc.home.root)]
    assert report["files"] and inside == []
    assert report["audit_rows"] == 1  # the Audit tab reads the station's recent units through the service
    assert str(pc.socket) in report["service"], report["service"]
    assert saved == {"line-pc-pass.png", "line-pc-audit.png"}

    # The unit ran in the service, for the technician's account, with the typed operator; the board holds its cert.
    assert certificate_on_board(device) is not None
    with AuditLog(pc.home.audit_db) as log:
        unit = log.find_unit(serial)
        assert unit is not None and unit.state == "passed" and unit.id == report["unit_id"]
        assert (unit.operator, unit.fixture) == ("tina", "bench-a")
        assert ServiceRecords(log).unit_accounts(unit.id) == [tech]
        prints = log.label_prints(unit.id)
        assert log.verify().ok

    # "Reprint label" in the Audit tab: its tooltip is the unit's label history, read through the service by an
    # account that cannot read the home — none yet (no print on PASS here), then the print the window asked for,
    # as recorded.
    assert [(p.by, p.printed, p.reprint) for p in prints] == [("tina", True, False)], prints
    assert report["history"] == f"No label printed yet for {serial} — print it on {printer.url} (recorded)"
    assert report["reprinted"] == f"🖨 label {serial} sent to {printer.url}", report["reprinted"]
    heading, *lines = report["history_after"].splitlines()
    assert heading == f"Labels of {serial}:" and len(lines) == 1, report["history_after"]
    assert lines[0].endswith("  print by tina: printed") and lines[0].startswith(f"{prints[0].at:%Y-}")
    assert len(printer.jobs(expect=1)) == 1
