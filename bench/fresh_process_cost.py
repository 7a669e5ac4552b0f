"""What a fresh address space per unit costs (P7): the same SSH link work in a fork of a fork-server-like
process against the same work in a process that has done it before.

    .venv/bin/python -m bench.fresh_process_cost [--repeats 15] [--commands 40] [--port 2398]

Boots one simulated board, then prepares this process as the engine's fork server is prepared (the modules of
FORKSERVER_PRELOAD imported, gc.freeze) and measures, for each piece of a unit's link work — nothing (a fork
and an exit), a connect (TCP, key exchange, host key, key authentication), a connect and ``--commands``
commands with an SFTP write and read:

* in a fresh fork (as a unit's worker does it): the child's user and system CPU and its minor page faults,
  from ``wait4`` (the median of ``--repeats`` children);
* in this process, after it has done that work once (as a unit in a thread of a long-running station does):
  the same, averaged over ``--repeats`` repetitions.

The two are measured alternately, piece by piece, in one run (the machine is shared).  The difference is the
price of the engine's isolation — every unit's worker touches, and so copies, pages it shares with the fork
server, and faults in its own — which no change to the flow removes; it is what stands between the engine's
CPU per unit and that of the station before it (P7).  Results: bench/results/fresh-process-cost.json.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import resource
import shutil
import statistics
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from bench.provision_ssh import machine
from station.engine.spawning import FORKSERVER_PRELOAD
from station.home import StationHome
from station.shell import command
from station.sim.farm import Farm
from station.transport.base import Deadline, DeviceAddress
from station.transport.ssh import SshLink

HERE = Path(__file__).resolve().parent
DEADLINE_S = 60.0


def link_work(device: str, identity: str, commands: int, transfer: bool) -> Callable[[], None]:
    def work() -> None:
        link = SshLink(
            DeviceAddress.parse(device),
            identity_file=identity,
            pinned_host_key=None,
            cancel=threading.Event(),
        )
        deadline = Deadline(DEADLINE_S, what="the fresh-process bench")
        link.open(deadline)
        try:
            for _ in range(commands):
                link.run(command("echo", "board"), deadline)
            if transfer:
                link.put(b"-----BEGIN CERTIFICATE-----\n" * 40, "/tmp/bench-fresh-process.pem", deadline)
                link.get("/tmp/bench-fresh-process.pem", deadline)
        finally:
            link.close()

    return work


def in_fresh_forks(work: Callable[[], None], repeats: int) -> dict[str, float]:
    rows = []
    for _ in range(repeats):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                work()
            except BaseException:  # noqa: BLE001 - reported as the child's exit status
                code = 1
            os._exit(code)
        _pid, status, usage = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"a forked child failed its link work (status {status})")
        rows.append((usage.ru_utime, usage.ru_stime, usage.ru_minflt))
    return {
        "user_s": round(statistics.median(row[0] for row in rows), 4),
        "system_s": round(statistics.median(row[1] for row in rows), 4),
        "cpu_s": round(statistics.median(row[0] + row[1] for row in rows), 4),
        "minor_faults": statistics.median(row[2] for row in rows),
    }


def in_this_process(work: Callable[[], None], repeats: int) -> dict[str, float]:
    work()  # once before: this process has done it (a long-running station has done it many times)
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        work()
    after = resource.getrusage(resource.RUSAGE_SELF)
    user = (after.ru_utime - before.ru_utime) / repeats
    system = (after.ru_stime - before.ru_stime) / repeats
    return {
        "user_s": round(user, 4),
        "system_s": round(system, 4),
        "cpu_s": round(user + system, 4),
        "minor_faults": round((after.ru_minflt - before.ru_minflt) / repeats, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--commands", type=int, default=40)
    parser.add_argument("--port", type=int, default=2398)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fresh-process-cost.json")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-fresh-"))
    home = StationHome(root / "home").create()
    farm = Farm(home)
    try:
        (device,) = farm.up(1, port=args.port)
        for name in FORKSERVER_PRELOAD:  # as the fork server: what a unit needs, imported once, then frozen
            importlib.import_module(name)
        gc.collect()
        gc.freeze()
        identity = str(home.ssh_key)
        pieces = {
            "fork and exit": lambda: None,
            "connect": link_work(device.ssh_url, identity, 0, False),
            f"connect, {args.commands} commands, an SFTP write and read": link_work(
                device.ssh_url, identity, args.commands, True
            ),
        }
        results = {}
        for name, work in pieces.items():
            fresh = in_fresh_forks(work, args.repeats)
            warm = in_this_process(work, args.repeats)
            results[name] = {
                "fresh_fork": fresh,
                "warm_process": warm,
                "extra_cpu_s_in_a_fresh_fork": round(fresh["cpu_s"] - warm["cpu_s"], 4),
            }
            print(name, results[name], flush=True)
    finally:
        farm.down()
        shutil.rmtree(root, ignore_errors=True)
    report = {
        "benchmark": "fresh-process-cost",
        "command": f"python -m bench.fresh_process_cost --repeats {args.repeats} --commands {args.commands}",
        "machine": machine(),
        "why": "P7: the engine runs every unit in a fresh fork of its fork server; this is what the same link "
        "work costs there against a process that has done it before (a unit as a thread of the station)",
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
