"""Real servers on loopback for the line's parts, started by a test and always stopped by it.

- :class:`FakeZplPrinter`: a TCP server on a free port that records every byte a client sends and answers
  ``~HS`` like a Zebra printer (ready, out of paper, paused, head open — or not at all).
- :class:`MesServer`: an HTTP server (http.server) that accepts JSON records, or fails (HTTP 503), or hangs.
- :func:`render_zpl`: a ZPL label rendered to PNG offline by zpl-renderer-js (``make test`` installs it);
  :func:`zbar`: the codes zbarimg decodes from an image.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from station.line.zpl import host_status_answer

RENDERER = Path(__file__).parents[1] / "line" / "zpl_render"  # installed there by `make test`
TOOL_TIMEOUT_S = 60


def render_zpl(
    zpl: bytes | str, out: Path, *, width_mm: float, height_mm: float, dots_per_mm: int = 8
) -> Path:
    source = out.with_suffix(".zpl")
    source.write_bytes(zpl if isinstance(zpl, bytes) else zpl.encode())
    assert (RENDERER / "node_modules" / "zpl-renderer-js").is_dir(), (
        "run `make test` (installs the ZPL renderer)"
    )
    done = subprocess.run(
        [
            "node",
            str(RENDERER / "render.cjs"),
            str(source),
            str(out),
            str(width_mm),
            str(height_mm),
            str(dots_per_mm),
        ],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


def zbar(image: Path) -> list[str]:
    """Every code zbarimg finds, as ``TYPE:data``."""
    typed = subprocess.run(
        ["zbarimg", "-q", str(image)], capture_output=True, timeout=TOOL_TIMEOUT_S, check=False
    )
    assert typed.returncode in (0, 4), typed.stderr  # 4: no code found
    return [line for line in typed.stdout.decode().splitlines() if line]


JOB = re.compile(rb"\^XA.*?\^XZ", re.S)


@dataclass
class FakeZplPrinter:
    """``mode``: ready | paper_out | paused | head_open | silent (accepts connections, never answers)."""

    mode: str = "ready"
    received: list[bytes] = field(default_factory=list)
    status_requests: int = 0

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"zpl://127.0.0.1:{self.port}"

    def jobs(self, *, expect: int = 0, wait_s: float = 10.0) -> list[bytes]:
        """Every ^XA…^XZ label received; with ``expect``, first wait (bounded) until that many have arrived —
        the client may finish before this server has read the connection to its end."""
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                found = [job for data in self.received for job in JOB.findall(data)]
            if len(found) >= expect or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._client, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _client(self, conn: socket.socket) -> None:
        data = b""
        conn.settimeout(0.2)
        with conn:
            deadline = time.monotonic() + 10
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
                if b"~HQES" in chunk and self.mode != "silent":  # what LPrint asks a ZPL printer
                    errors = "1 00000000 00000001" if self.mode == "paper_out" else "0 00000000 00000000"
                    conn.sendall(
                        f"\x02\r\n  PRINTER STATUS\r\n   ERRORS:         {errors}\r\n"
                        "   WARNINGS:       0 00000000 00000000\r\n\x03\r\n".encode()
                    )
                if b"~HS" in chunk and self.mode != "silent":
                    with self._lock:
                        self.status_requests += 1
                    conn.sendall(
                        host_status_answer(
                            paper_out=self.mode == "paper_out",
                            paused=self.mode == "paused",
                            head_open=self.mode == "head_open",
                        )
                    )
        with self._lock:
            self.received.append(data)

    def close(self) -> None:
        self._stop.set()
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)
        self._server.close()


@dataclass
class MesServer:
    """An MES endpoint on loopback. ``mode``: up (201) | down (503) | hang (reads, never answers)."""

    mode: str = "up"
    accepted: list[dict[str, object]] = field(default_factory=list)
    attempts: int = 0

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with owner._lock:
                    owner.attempts += 1
                    mode = owner.mode
                if mode == "hang":
                    owner._release.wait(30)
                    return
                if mode == "down":
                    self.send_response(503, "Service Unavailable")
                    self.end_headers()
                    return
                record = json.loads(body)
                assert self.headers["Idempotency-Key"] == record["record_id"]
                with owner._lock:
                    owner.accepted.append(record)
                self.send_response(201, "Created")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api/units"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self.mode = mode
        if mode != "hang":
            self._release.set()
        else:
            self._release.clear()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class LPrintServer:
    """LPrint (Debian's lprint: an IPP Everywhere printer application for label printers) on a free loopback
    port, with one queue "zebra" whose device is ``device_uri`` (a raw ZPL socket).  It runs in a private mount
    namespace so its control socket (/run/lprint.sock) never meets another LPrint on the machine."""

    def __init__(self, state: Path, device_uri: str) -> None:
        state.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.env = {"HOME": str(state), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        self.log = state / "lprint.log"
        server = (
            f"mount -t tmpfs tmpfs /run && exec lprint server -o server-port={self.port} "
            f"-o listen-hostname=127.0.0.1 -o log-level=info -o log-file={state}/lprint.log "
            f"-o spool-directory={state}/spool"
        )
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", server],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    assert self.process.poll() is None, (
                        f"lprint server ended: {self.log.read_text() if self.log.exists() else ''}"
                    )
                    assert time.monotonic() < deadline, "lprint server did not listen within 15 s"
                    time.sleep(0.1)
            self.lprint("add", "-d", "zebra", "-v", device_uri, "-m", "zpl_2inch-203dpi-dt")
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"ipp://127.0.0.1:{self.port}/ipp/print/zebra"

    def lprint(self, command: str, *args: str) -> str:
        done = subprocess.run(
            ["lprint", command, "-u", f"ipp://127.0.0.1:{self.port}", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
