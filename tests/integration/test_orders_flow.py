"""Work orders on real simulated boards: only the boards of an open order are enrolled, up to its quantity.

The quality lead imports an order from the ERP (a range of five serials, quantity five). A serial in it is
enrolled; a foreign or mistyped label is refused before anything touches the board; the five boards of the
order pass through a batch whose manifest names the order; a sixth unit is refused as "order complete"; and a
closed order refuses the boards it still had. Exports and the PDF report filter and group by order.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from station.audit import AuditLog
from tests.helpers.boards import CANARY, board, write_order_file

pytestmark = pytest.mark.integration

PASSPHRASE = "orders integration passphrase"


def station(home, *args, timeout=300):
    env = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE)
    return subprocess.run(
        [sys.executable, "-m", "station", "--home", str(home.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def refused_untouched(home, device, *, serial, words, order=None):
    """Provision ``serial`` on ``device``: refused with ``words``, and nothing reached the board."""
    board(home, device, "touch", CANARY)
    boot_id = board(home, device, "cat", "/proc/sys/kernel/random/boot_id")
    with AuditLog(home.audit_db) as log:
        before = log.count_units()
    run = station(
        home,
        "provision",
        "--serial",
        serial,
        "--device",
        device.ssh_url,
        "--operator",
        "ana",
        *(("--order", order) if order else ()),
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stdout + run.stderr
    for word in words:
        assert word in run.stderr, run.stderr
    # No step ran (the first is Identify board), no unit was recorded, the board kept its files and boot.
    assert "Identify board" not in run.stdout and "unit " not in run.stdout
    with AuditLog(home.audit_db) as log:
        assert log.count_units() == before and log.find_unit(serial) is None
    assert board(home, device, "ls", CANARY).strip() == CANARY
    assert board(home, device, "cat", "/proc/sys/kernel/random/boot_id") == boot_id


def test_only_the_boards_of_an_open_order_are_enrolled_up_to_its_quantity(
    start_farm, sim_farm, sim_home, tmp_path
):
    devices = start_farm(count=5)
    assert station(sim_home, "ca", "init").returncode == 0
    sim_home.config_file.write_text('[station]\nname = "line-1"\n\n[orders]\nrequired = true\n')
    orders = tmp_path / "WO-2026-0142.csv"
    write_order_file(orders, order="WO-2026-0142", quantity=5, serials="202600000000001-202600000000005")
    imported = station(sim_home, "order", "import", str(orders), "--by", "Q. Lead")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "imported order WO-2026-0142" in imported.stdout

    # A label from outside the order is refused, naming the nearest open order, before the board is touched.
    refused_untouched(
        sim_home,
        devices[0],
        serial="202600000000006",
        words=("202600000000006 belongs to no open work order", "nearest open orders: WO-2026-0142"),
    )

    # A serial of the order passes on a real board and takes a place in it.
    first = station(
        sim_home,
        "provision",
        "--serial",
        "202600000000001",
        "--device",
        devices[0].ssh_url,
        "--operator",
        "ana",
    )
    assert first.returncode == 0, first.stdout + first.stderr
    with AuditLog(sim_home.audit_db) as log:
        unit = log.find_unit("202600000000001")
        assert unit is not None and unit.state == "passed"
        assert log.orders.order_of_unit(unit.id) == "WO-2026-0142"
        guard = next(step for step in log.steps(unit.id) if step.step == "guard")
        assert "work order WO-2026-0142: 0 of 5 passed, 1 in progress" in guard.excerpt

    # The other four boards of the order, through a batch whose manifest names the order (header in any order).
    manifest = tmp_path / "boards.csv"
    manifest.write_text(
        "order,serial,device\n"
        + "".join(
            f"WO-2026-0142,20260000000000{n},{device.ssh_url}\n"
            for n, device in zip(range(2, 6), devices[1:], strict=True)
        )
    )
    batch = station(sim_home, "batch", "--manifest", str(manifest), "--operator", "ana")
    assert batch.returncode == 0, batch.stdout + batch.stderr
    assert "4 passed, 0 failed of 4" in batch.stdout
    listing = station(sim_home, "order", "list")
    assert "WO-2026-0142" in listing.stdout and "complete" in listing.stdout and "5/5" in listing.stdout

    # The sixth unit for this order is refused as complete, before anything touches its board.
    refused_untouched(
        sim_home,
        devices[0],
        serial="202600000000006",
        order="WO-2026-0142",
        words=("work order WO-2026-0142 is complete (5 of 5 passed)",),
    )

    # Exports and the PDF report filter and group by order.
    csv_out = tmp_path / "order.csv"
    assert (
        station(
            sim_home, "audit", "export", "--format", "csv", "--out", str(csv_out), "--order", "WO-2026-0142"
        ).returncode
        == 0
    )
    rows = csv_out.read_text(encoding="utf-8-sig").splitlines()
    assert (
        rows[0].endswith(",order_id")
        and len(rows) == 6
        and all(r.endswith(",WO-2026-0142") for r in rows[1:])
    )
    pdf = tmp_path / "order.pdf"
    assert (
        station(
            sim_home, "audit", "export", "--format", "pdf", "--out", str(pdf), "--order", "WO-2026-0142"
        ).returncode
        == 0
    )
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert "Provisioning report — work order WO-2026-0142" in text and "By work order" in text
    assert "Work order: WO-2026-0142" in text and "100.0 %" in text

    # A closed order refuses the boards it still had; the audit log records who closed it and why.
    second = tmp_path / "WO-2026-0150.json"
    second.write_text(
        '{"orders": [{"order": "WO-2026-0150", "profile": "welma-optee", "quantity": 3,\n'
        '  "serials": ["202600000000101-202600000000103"]}]}\n'
    )
    assert station(sim_home, "order", "import", str(second), "--by", "Q. Lead").returncode == 0
    sim_farm.swap(
        devices[1].name
    )  # another, factory-fresh board for the new order (a new serial needs new silicon)
    passed = station(
        sim_home,
        "provision",
        "--serial",
        "202600000000101",
        "--device",
        devices[1].ssh_url,
        "--operator",
        "ana",
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr
    closed = station(
        sim_home, "order", "close", "WO-2026-0150", "--reason", "cancelled by planning", "--by", "Q. Lead"
    )
    assert closed.returncode == 0 and "1 of 3 passed" in closed.stdout
    refused_untouched(
        sim_home,
        devices[2],
        serial="202600000000102",
        words=("work order WO-2026-0150 was closed", "cancelled by planning"),
    )
    shown = station(sim_home, "order", "show", "WO-2026-0150")
    assert "closed" in shown.stdout and "by Q. Lead: cancelled by planning" in shown.stdout
    assert "from WO-2026-0150.json (sha256 " in shown.stdout
    assert station(sim_home, "audit", "verify").returncode == 0
