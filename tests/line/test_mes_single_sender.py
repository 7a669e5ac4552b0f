"""One MES sender per outbox, whoever starts what: a second process of the same station (the window beside the
station service, a command run in-process) keeps its records in the outbox but does not send them; the one
sender sends every record once; when the sender's process dies, the standby takes over — and no record reaches
the MES twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from station.audit import AuditLog, Unit
from station.home import StationHome
from station.line.handoff import LineHandOff
from station.line.mes import SENDER_LOCK
from tests.helpers.line_servers import MesServer
from tests.line.conftest import line_config

WAIT_S = 20.0

# Another process of the station: its own MES hand-off on the same home's spool.
SENDER = """
import sys
from pathlib import Path
from station.config import MesSettings
from station.line.mes import MesHandOff

mes = MesHandOff(MesSettings(url=sys.argv[1], timeout_s=2.0, retry_s=0.2), Path(sys.argv[2]), notify=print)
mes.start()
print("sending" if all(outbox.sending for outbox in mes.outboxes) else "standing by", flush=True)
sys.stdin.read()
mes.stop()
"""


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_sender(url: str, spool: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SENDER, url, str(spool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "sending"
    return process


def test_a_second_process_does_not_send_the_spool_and_takes_over_only_when_the_sender_died(
    home: StationHome, audit: AuditLog, finish: Callable[..., Unit], mes_server: MesServer
) -> None:
    spool = home.root / "mes"
    other = start_sender(mes_server.url, spool)
    notices: list[str] = []
    handoff = LineHandOff(config=line_config(mes_url=mes_server.url), home=home, audit=audit)
    try:
        handoff.notify = notices.append
        (outbox,) = handoff.mes.outboxes
        # This process did not become a sender: the other one holds the spool, and it says which one.
        assert outbox.sending is False
        assert (spool / "outbox-http" / SENDER_LOCK).read_text().strip() == str(other.pid)
        first = [finish(f"2026000000031{n:02d}") for n in range(5)]
        for unit in first:
            handoff.unit_finished(unit)
        wait_until(lambda: len(mes_server.accepted) == 5, "the other process to send this one's records")
        wait_until(lambda: handoff.mes.pending() == 0, "the spool to empty")
        assert outbox.sending is False
        # The sender dies (no clean stop): this process takes the spool over and sends what comes next.
        other.send_signal(signal.SIGKILL)
        other.wait(10)
        later = [finish(f"2026000000032{n:02d}") for n in range(2)]
        for unit in later:
            handoff.unit_finished(unit)
        wait_until(lambda: len(mes_server.accepted) == 7, "this process to take over the sending")
        assert outbox.sending is True
        assert any("this process sends" in notice for notice in notices), notices
    finally:
        handoff.close()
        if other.poll() is None:
            other.kill()
            other.wait(10)
    # Every record reached the MES once: one attempt each, in the order the units finished.
    assert [record["serial"] for record in mes_server.accepted] == [unit.serial for unit in first + later]
    assert mes_server.attempts == 7
    assert len({record["record_id"] for record in mes_server.accepted}) == 7


def test_the_first_sender_says_so_to_a_second_and_keeps_the_spool_after_the_second_stops(
    home: StationHome, audit: AuditLog, finish: Callable[..., Unit], mes_server: MesServer
) -> None:
    notices: list[str] = []
    handoff = LineHandOff(
        config=line_config(mes_url=mes_server.url), home=home, audit=audit, notify=notices.append
    )
    spool = home.root / "mes"
    try:
        (outbox,) = handoff.mes.outboxes
        assert outbox.sending is True
        second = subprocess.run(
            [sys.executable, "-c", SENDER, mes_server.url, str(spool)],
            input="",
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
        # The second would-be sender did not start sending, and said who sends.
        assert second.returncode == 0, second.stderr
        assert "standing by" in second.stdout
        assert f"process {os.getpid()} already sends the records of {spool / 'outbox-http'}" in second.stdout
        unit = finish("202600000003300")
        handoff.unit_finished(unit)
        wait_until(lambda: len(mes_server.accepted) == 1, "the first sender to send")
        assert outbox.sending is True
    finally:
        handoff.close()
    assert mes_server.attempts == 1
