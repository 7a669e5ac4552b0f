"""The station's side of the TLS proof (step 13): one listener, in the process that holds the CA, serving
every unit's one-connection TLS server and remembering the certificate each board presented.

The step itself (:func:`station.steps.tls_proof`) runs in a unit's worker and reaches this listener through
the engine's services protocol, so the station's TLS key never enters a worker.
"""

from __future__ import annotations

import errno
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from station.errors import StationError
from station.pki import CertificateAuthority

# How long the TLS proofs' listener thread outlives the last open proof (the next unit's proof reuses it).
TLS_LISTENER_IDLE_S = 2.0
TLS_PORT_BUSY = "the TLS-proof port"


@dataclass(eq=False)
class _Proof:
    """One unit's TLS proof on the listener's thread: its server socket, then the board's connection."""

    server: socket.socket
    context: ssl.SSLContext
    timeout_s: float
    deadline: float
    presented: list[bytes] = field(default_factory=list)
    failure: list[str] = field(default_factory=list)
    tls: ssl.SSLSocket | None = None
    handshaken: bool = False
    abandoned: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class TlsProofListener:
    """The station's side of the TLS proof: one-connection TLS servers that require a client certificate
    from this CA and remember the certificate the board presented.

    It runs where the CA lives — in the engine's parent process, which serves it to a unit's worker
    (:mod:`station.engine`) — so the station's TLS key never enters a worker.  Every open proof is served by
    one thread of the listener's (non-blocking sockets, one selector), with one TLS context built once: a
    unit's ``listen`` only opens its socket and hands it over — no context, no thread per unit, and never a
    wait on a board (the service desk answers it in between other units' calls).
    """

    def __init__(self, ca: CertificateAuthority) -> None:
        self._ca = ca
        self._open: dict[int, _Proof] = {}
        self._lock = threading.Lock()
        self._context: tuple[tuple[bytes, int], ssl.SSLContext] | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._added: list[_Proof] = []

    def _server_context(self) -> ssl.SSLContext:
        """The CA's TLS server context, built once (its key is decrypted or read once), again only when the CA's
        chain or its system certificate on disk changes."""
        try:
            changed = self._ca.system_certificate_path.stat().st_mtime_ns
        except OSError:
            changed = 0
        key = (self._ca.chain_pem, changed)
        cached = self._context
        if cached is not None and cached[0] == key:
            return cached[1]
        context = self._ca.ssl_server_context(require_client_cert=True)
        self._context = (key, context)
        return context

    def listen(self, host: str, timeout_s: float, port: int = 0) -> int:
        """Start listening on ``host`` (``port``, or a free one if 0); the port is returned at once.

        A fixed port held by another unit's proof raises StationError starting with TLS_PORT_BUSY
        at once (the caller tries again): this runs in the station's service thread, which never waits.
        """
        context = self._server_context()
        try:
            server = socket.create_server((host, port))
        except OSError as exc:
            if port and exc.errno == errno.EADDRINUSE:
                raise StationError(f"{TLS_PORT_BUSY} {host}:{port} is in use") from exc
            raise StationError(
                f"the station cannot listen on {host}:{port} for the TLS proof ({exc.strerror or exc}) — check "
                "[tls_proof] listen_address and port in station.toml, then press Retry"
            ) from exc
        server.setblocking(False)
        port = int(server.getsockname()[1])
        proof = _Proof(server, context, timeout_s, time.monotonic() + timeout_s)
        with self._lock:
            self._open[port] = proof
            self._added.append(proof)
            if self._thread is None or not self._thread.is_alive():  # none yet, idle-ended, or broken
                self._wake = socket.socketpair()
                for end in self._wake:
                    end.setblocking(False)
                self._selector = selectors.DefaultSelector()
                self._selector.register(self._wake[0], selectors.EVENT_READ, None)
                self._thread = threading.Thread(
                    target=self._serve, args=(self._selector, self._wake), name="tls-proof", daemon=True
                )
                self._thread.start()
            else:
                self._poke()
        return port

    def _poke(self) -> None:
        """Wake the listener's thread (under ``self._lock``)."""
        if self._wake is not None:
            try:
                self._wake[1].send(b"\0")
            except OSError:
                pass  # its buffer is full of wake-ups already

    def finished(self, port: int) -> bool:
        """Whether the listener on ``port`` is done (or unknown): its result will not block."""
        with self._lock:
            proof = self._open.get(port)
        return proof is None or proof.done.is_set()

    def result(self, port: int, timeout_s: float) -> tuple[bytes | None, list[str]]:
        """Wait (bounded) for the listener on ``port``; the certificate presented (DER) and any failure."""
        with self._lock:
            proof = self._open.pop(port, None)
        if proof is None:
            return None, [f"no TLS listener on port {port}"]
        proof.done.wait(timeout_s)
        with self._lock:
            presented, failure = list(proof.presented), list(proof.failure)
            if not proof.done.is_set():
                proof.abandoned = True  # closed by the listener's thread, which owns its sockets
                self._poke()
        return (presented[0] if presented else None), failure

    # -- the listener's thread -----------------------------------------------------------------------

    def _serve(self, selector: selectors.BaseSelector, wake: tuple[socket.socket, socket.socket]) -> None:
        proofs: list[_Proof] = []
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            with self._lock:
                for proof in self._added:
                    selector.register(proof.server, selectors.EVENT_READ, proof)
                proofs.extend(self._added)
                self._added.clear()
                for proof in [p for p in proofs if p.abandoned]:
                    self._end(selector, proof, proofs)
                idle_since = None if proofs else idle_since if idle_since is not None else now
                if idle_since is not None and now - idle_since >= TLS_LISTENER_IDLE_S:
                    # Nothing open for a while: the thread ends (the next listen starts another).
                    self._thread = self._wake = self._selector = None
                    selector.close()
                    for end in wake:
                        end.close()
                    return
            deadlines = [proof.deadline for proof in proofs]
            deadlines.append(
                now + TLS_LISTENER_IDLE_S if idle_since is None else idle_since + TLS_LISTENER_IDLE_S
            )
            timeout = max(0.0, min(deadlines) - now)
            for key, _ in selector.select(min(timeout, 1.0)):
                if key.data is None:
                    try:
                        while wake[0].recv(4096):
                            pass
                    except OSError:
                        pass
                    continue
                self._step(selector, key.data, proofs)
            now = time.monotonic()
            for proof in [p for p in proofs if now >= p.deadline]:
                if proof.tls is None:
                    self._fail(proof, "no connection from the board (timed out)")
                elif not proof.handshaken:
                    self._fail(proof, "TLS handshake failed on the station side (timed out)")
                with self._lock:
                    self._end(selector, proof, proofs)

    def _step(self, selector: selectors.BaseSelector, proof: _Proof, proofs: list[_Proof]) -> None:
        """Move one proof on as far as its sockets let it without waiting: accept, handshake, read to EOF."""
        try:
            if proof.tls is None:
                try:
                    connection, _ = proof.server.accept()
                except BlockingIOError:
                    return
                connection.setblocking(False)
                selector.unregister(proof.server)
                proof.tls = proof.context.wrap_socket(
                    connection, server_side=True, do_handshake_on_connect=False
                )
                proof.deadline = time.monotonic() + proof.timeout_s
                selector.register(proof.tls, selectors.EVENT_READ, proof)
            if not proof.handshaken:
                try:
                    proof.tls.do_handshake()
                except ssl.SSLWantReadError:
                    selector.modify(proof.tls, selectors.EVENT_READ, proof)
                    return
                except ssl.SSLWantWriteError:
                    selector.modify(proof.tls, selectors.EVENT_WRITE, proof)
                    return
                except (ssl.SSLError, OSError) as exc:
                    self._fail(proof, f"TLS handshake failed on the station side ({exc})")
                    with self._lock:
                        self._end(selector, proof, proofs)
                    return
                proof.handshaken = True
                peer = proof.tls.getpeercert(binary_form=True)
                with self._lock:
                    if peer:
                        proof.presented.append(peer)
                selector.modify(proof.tls, selectors.EVENT_READ, proof)
            # Let the board hang up first: closing under it makes s_client exit 1 on a reset.
            while True:
                proof.deadline = time.monotonic() + proof.timeout_s
                try:
                    if not proof.tls.recv(4096):
                        break
                except ssl.SSLWantReadError:
                    selector.modify(proof.tls, selectors.EVENT_READ, proof)
                    return
                except ssl.SSLWantWriteError:
                    selector.modify(proof.tls, selectors.EVENT_WRITE, proof)
                    return
        except OSError as exc:
            if proof.tls is None:
                self._fail(proof, f"no connection from the board ({exc})")
        with self._lock:
            self._end(selector, proof, proofs)

    def _fail(self, proof: _Proof, why: str) -> None:
        with self._lock:
            proof.failure.append(why)

    def _end(self, selector: selectors.BaseSelector, proof: _Proof, proofs: list[_Proof]) -> None:
        """Close a proof's sockets and say it is done (on the listener's thread, under ``self._lock``)."""
        for sock in (proof.tls, proof.server):
            if sock is None:
                continue
            try:
                selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        if proof in proofs:
            proofs.remove(proof)
        proof.done.set()
