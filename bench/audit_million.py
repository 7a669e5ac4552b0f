"""The audit view, exports and yield summary on an audit log of a million units.

    .venv/bin/python bench/audit_million.py [--units 1000000] [--out bench/results/audit-million.json]

Generates the log straight into SQLite (bench only: the station itself writes through AuditLog), then measures
what a quality lead waits for: opening the audit view, each filter change up to the first page on screen (goal
100 ms), a page deep in the list, the count and yield summary the view computes off-thread, a CSV export of every
unit (goal 10 s) and a PDF report of one batch. Records medians and maxima as JSON, with machine information.

The generated log has units, certificates for a tenth of them and step rows for keygen (a tenth of the units)
and for every failed unit, but no event journal: ``station audit verify`` reports it as tampered, and that is
expected — generating a million hash-chained events would measure the generator, not the station.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication  # noqa: E402

from station.audit import AuditLog, UnitFilter  # noqa: E402
from station.profiles import DEFAULT_PROFILE, load_profile
from station.report import ReportScope, render_report  # noqa: E402
from station.service.audit_reader import LocalAuditReader  # noqa: E402
from ui.audit_view import AuditView  # noqa: E402

HERE = Path(__file__).resolve().parent
T0 = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)
UNIT_SPACING_S = 30  # a million units a year apart by 30 s: about one fixture line's output
BATCH_SIZE = 1000
OPERATORS = [f"operator-{n:02d}" for n in range(20)]
# The shipped profile's enrollment steps, in order (not a copy that could drift from it).
STEPS = load_profile(DEFAULT_PROFILE).step_names()
REPEATS = 5


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "platform": platform.platform(),
        # Timings are wall-clock: a busy machine (other test runs) slows them; this says how busy it was.
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def generate(path: Path, units: int, seed: int = 7) -> dict[str, Any]:
    """Write ``units`` units (and some steps and certificates) into a fresh audit log at ``path``."""
    AuditLog(path).close()  # the station's own schema, indexes and triggers
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    began = time.perf_counter()
    unit_rows = []
    step_rows = []
    cert_rows = []
    for n in range(1, units + 1):
        started = T0 + timedelta(seconds=n * UNIT_SPACING_S)
        roll = rng.random()
        state = (
            "passed" if roll < 0.95 else "failed" if roll < 0.98 else "aborted" if roll < 0.995 else "running"
        )
        failed_step = rng.choice(STEPS) if state in ("failed", "aborted") else None
        duration = rng.uniform(55, 120)
        ended = None if state == "running" else stamp(started + timedelta(seconds=duration))
        unit_rows.append(
            (
                n,
                f"2026{n:011d}",
                "welma-optee",
                f"ssh://root@127.0.0.{2 + n % 8}:2222",
                f"slot-{1 + n % 8}",
                f"B-{(n - 1) // BATCH_SIZE + 1:04d}",
                OPERATORS[n % len(OPERATORS)],
                f"line-{1 + n % 4}",
                state,
                2 if rng.random() < 0.02 else 1,
                stamp(started),
                ended,
                failed_step,
                f"step {failed_step} failed" if failed_step else None,
                "ssh-ed25519",
                f"SHA256:{n:043d}",
            )
        )
        if n % 10 == 0:
            keygen = rng.gauss(14.0, 2.5)
            step_rows.append(
                (
                    n,
                    "keygen",
                    1,
                    "passed",
                    stamp(started + timedelta(seconds=20)),
                    stamp(started + timedelta(seconds=20 + keygen)),
                    None,
                    "key0 generated",
                    "",
                )
            )
            digest = hashlib.sha256(str(n).encode()).hexdigest()
            cert_rows.append(
                (
                    n,
                    f"{n:x}",
                    digest,
                    hashlib.sha256(digest.encode()).hexdigest(),
                    f"CN=serial:{n}",
                    stamp(started),
                    stamp(started + timedelta(days=365)),
                    "(bench)",
                    stamp(started),
                )
            )
        if failed_step:
            step_rows.append(
                (
                    n,
                    failed_step,
                    1,
                    "failed",
                    stamp(started + timedelta(seconds=30)),
                    stamp(started + timedelta(seconds=31)),
                    None,
                    "error",
                    "failed",
                )
            )
    with db:
        db.executemany(
            "INSERT INTO units (id, serial, profile, device, fixture, batch, operator, station, state, attempt, "
            "started_at, ended_at, failed_step, message, host_key_type, host_key_fingerprint) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            unit_rows,
        )
        db.executemany(
            "INSERT INTO steps (unit_id, step, attempt, outcome, started_at, ended_at, output_sha256, excerpt, "
            "message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            step_rows,
        )
        db.executemany(
            "INSERT INTO certificates (unit_id, serial_hex, fingerprint_sha256, spki_sha256, subject, not_before, "
            "not_after, pem, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            cert_rows,
        )
    db.close()
    return {
        "units": units,
        "steps": len(step_rows),
        "certificates": len(cert_rows),
        "generation_s": round(time.perf_counter() - began, 1),
        "db_bytes": path.stat().st_size,
    }


def timed(action: Callable[[], object], repeats: int = REPEATS) -> dict[str, float]:
    """Median and maximum wall time in milliseconds of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        times.append((time.perf_counter() - began) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def wait_idle(app: QApplication, view: AuditView, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while view.busy() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.005)
    app.processEvents()


def wait_page(app: QApplication, view: AuditView, timeout_s: float = 120) -> None:
    """Until the model's page (read on its pool thread) is on screen."""
    deadline = time.monotonic() + timeout_s
    app.processEvents()
    while view.model.loading and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.001)
    app.processEvents()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument(
        "--db", type=Path, help="reuse (or keep) the generated log here instead of a temp dir"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "audit-million.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    path = args.db or work / "audit.db"
    if args.db is not None and path.exists():
        generated: dict[str, Any] = {"units": None, "reused": str(path)}
    else:
        print(f"generating {args.units:,} units in {path} …", flush=True)
        generated = generate(path, args.units)
        print(f"  {generated}", flush=True)

    results: dict[str, Any] = {
        "benchmark": "audit-million",
        "command": " ".join(["bench/audit_million.py", *sys.argv[1:]]),
        "machine": machine(),
        "generated": generated,
        "goals": {"filter_first_page_ms": 100, "csv_export_all_s": 10},
    }

    began = time.perf_counter()
    audit = AuditLog(path)  # builds any index the generator lacked
    results["open_audit_log_ms"] = round((time.perf_counter() - began) * 1000, 1)
    app = QApplication.instance() or QApplication([])
    assert isinstance(app, QApplication)

    began = time.perf_counter()
    view = AuditView(LocalAuditReader(audit, station="bench"), role="quality_lead", station="bench")
    view.resize(1280, 760)
    view.show()
    wait_page(app, view)
    first_page = (time.perf_counter() - began) * 1000
    wait_idle(app, view)
    results["open_view"] = {
        "first_page_on_screen_ms": round(first_page, 1),
        "count_and_yield_done_ms": round((time.perf_counter() - began) * 1000, 1),
        "rows_shown": view.model.rowCount(),
    }
    print(f"  open view: {results['open_view']}", flush=True)

    # A filter change until its first page is on screen: reset, one page query (on the model's pool thread). The filters
    # aim at the middle of the log, where neither end of an index helps.
    units = view.model.unit_at(0).id if view.model.unit_at(0) else args.units  # type: ignore[union-attr]
    middle = f"2026{units // 2:011d}"
    batch = f"B-{(units // 2 - 1) // BATCH_SIZE + 1:04d}"
    week = T0 + timedelta(seconds=units // 2 * UNIT_SPACING_S)
    scenarios = {
        "serial_prefix (100 000 boards)+result (failed)": UnitFilter(
            serial_prefix=middle[:-5], result="failed"
        ),
        "serial_prefix (exact board)": UnitFilter(serial_prefix=middle),
        "serial_prefix (10 000 boards)": UnitFilter(serial_prefix=middle[:-4]),
        "result (failed)": UnitFilter(result="failed"),
        "result (running)": UnitFilter(result="running"),
        "operator": UnitFilter(operator=OPERATORS[3]),
        "batch": UnitFilter(batch=batch),
        "fixture+result (aborted)": UnitFilter(fixture="slot-3", result="aborted"),
        "failed_step (keygen)": UnitFilter(failed_step="keygen"),
        "one week": UnitFilter(since=week, until=week + timedelta(days=7)),
        "one week+result (failed)": UnitFilter(since=week, until=week + timedelta(days=7), result="failed"),
        "operator+batch+result (passed)": UnitFilter(operator=OPERATORS[3], batch=batch, result="passed"),
        "no filter": UnitFilter(),
    }
    filters: dict[str, Any] = {}
    for name, wanted in scenarios.items():
        figures = timed(lambda wanted=wanted: (view.model.set_filters(wanted), wait_page(app, view)))
        figures["rows_first_page"] = view.model.rowCount()
        figures["count_units_ms"] = timed(lambda wanted=wanted: audit.count_units(wanted), repeats=3)[
            "median_ms"
        ]
        filters[name] = figures
        print(f"  filter {name}: {figures}", flush=True)
    results["filter_to_first_page"] = filters

    sorts = {}
    for key, descending in (
        ("serial", False),
        ("started_at", True),
        ("operator", False),
        ("batch", True),
        ("failed_step", True),
        ("state", False),
    ):
        view.model.set_filters(UnitFilter())
        wait_page(app, view)
        sorts[f"{key} {'desc' if descending else 'asc'}"] = timed(
            lambda key=key, descending=descending: (
                view.model.set_order(key, descending=descending),
                wait_page(app, view),
            )
        )
    view.model.set_filters(UnitFilter(result="failed"))
    wait_page(app, view)
    sorts["started_at desc, result failed"] = timed(
        lambda: (view.model.set_order("started_at", descending=True), wait_page(app, view))
    )
    results["sort_to_first_page"] = sorts
    print(f"  sorts: {sorts}", flush=True)

    view.model.set_order("id", descending=True)
    deep = {}
    for offset in (10_000, 100_000):
        deep[f"page at offset {offset}"] = timed(
            lambda offset=offset: audit.units_page(offset=offset, limit=200), repeats=3
        )
    results["deep_pages"] = deep
    print(f"  deep pages: {deep}", flush=True)

    results["yield_summary"] = {
        "all units": timed(lambda: audit.yield_summary(), repeats=3),
        "one batch": timed(lambda: audit.yield_summary(batch=batch), repeats=3),
        "one month": timed(
            lambda: audit.yield_summary(since=week, until=week + timedelta(days=30)), repeats=3
        ),
    }
    print(f"  yield: {results['yield_summary']}", flush=True)

    export_path = work / "units.csv"
    began = time.perf_counter()
    with export_path.open("w", encoding="utf-8", newline="") as out:
        exported = audit.export_csv(out)
    results["csv_export_all"] = {
        "units": exported,
        "seconds": round(time.perf_counter() - began, 2),
        "bytes": export_path.stat().st_size,
    }
    print(f"  csv: {results['csv_export_all']}", flush=True)
    export_path.unlink()

    began = time.perf_counter()
    report = render_report(audit, ReportScope(batch=batch), station="bench")
    results["pdf_report_one_batch"] = {
        "seconds": round(time.perf_counter() - began, 2),
        "pages": report.pages,
        "units_listed": report.units_in_table,
        "bytes": len(report.pdf),
    }
    print(f"  pdf: {results['pdf_report_one_batch']}", flush=True)

    view.shutdown()
    view.close()
    audit.close()
    if args.db is None:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
