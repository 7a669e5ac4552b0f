"""The line hand-off on real simulated boards: `station batch` with a label printer and an MES configured prints
exactly one label per PASS (none for a FAIL) and hands every finished unit to the MES, from the one place a
unit's end is recorded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from station.audit import AuditLog
from station.pki import CertificateAuthority
from tests.helpers.line_servers import FakeZplPrinter, MesServer

pytestmark = pytest.mark.integration

PASSPHRASE = "line hand-off passphrase"


def test_a_batch_prints_one_label_per_pass_and_hands_every_unit_to_the_mes(start_farm, sim_home, tmp_path):
    CertificateAuthority.init(sim_home.ca_dir, passphrase=PASSPHRASE.encode())
    printer, mes = FakeZplPrinter(), MesServer()
    try:
        sim_home.config_file.write_text(
            f'[label]\nprinter = "{printer.url}"\nprint_on_pass = true\n\n'
            f'[mes]\nurl = "{mes.url}"\nretry_s = 0.2\n',
            encoding="utf-8",
        )
        boards = start_farm(count=2)
        manifest = tmp_path / "boards.csv"
        # The third line names a board that is not there: its unit fails at identify.
        manifest.write_text(
            f"202600000000501,{boards[0].ssh_url}\n202600000000502,{boards[1].ssh_url}\n"
            "202600000000503,ssh://root@127.0.0.1:9\n",
            encoding="utf-8",
        )
        env = dict(os.environ, STATION_CA_PASSPHRASE=PASSPHRASE)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "station",
                "--home",
                str(sim_home.root),
                "batch",
                "--manifest",
                str(manifest),
                "--operator",
                "王芳",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        assert run.returncode == 1, run.stdout + run.stderr  # one unit failed
        assert "label 202600000000501 sent to" in run.stderr and "label 202600000000502 sent to" in run.stderr

        jobs = printer.jobs(expect=2)
        assert len(jobs) == 2
        assert sorted(
            serial
            for job in jobs
            for serial in ("202600000000501", "202600000000502")
            if f"^FD{serial}^FS".encode() in job
        ) == ["202600000000501", "202600000000502"]
        # The command waits for the MES to take its records before it exits (they would stay queued otherwise).
        assert len(mes.accepted) == 3, run.stderr
        assert not list((sim_home.root / "mes" / "outbox-http").glob("*.json"))
        with AuditLog(sim_home.audit_db) as audit:
            by_serial = {record["serial"]: record for record in mes.accepted}
            for serial in ("202600000000501", "202600000000502"):
                unit = audit.find_unit(serial)
                assert unit is not None and unit.state == "passed"
                assert by_serial[serial]["certificate_fingerprint"] == unit.certificate_fingerprint
                assert by_serial[serial]["operator"] == "王芳"
                assert [p.printed for p in audit.label_prints(unit.id)] == [True]
            assert by_serial["202600000000503"]["result"] == "failed"
            assert by_serial["202600000000503"]["failed_step"] == "identify"
        assert len(mes.accepted) == 3
    finally:
        printer.close()
        mes.close()
