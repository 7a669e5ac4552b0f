"""The TLS proof's listener: many units' proofs at once on one thread, with one TLS context (issue 13, P3)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.pki import CertificateAuthority
from station.tls_proof import TlsProofListener

PASSPHRASE = b"unit test passphrase"
TIMEOUT_S = 10.0


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca", passphrase=PASSPHRASE)


def board_context(
    ca: CertificateAuthority, tmp_path: Path, name: str, certified_by: CertificateAuthority | None
) -> tuple[ssl.SSLContext, bytes | None]:
    """A board's client context (its certificate from ``certified_by``, or none) and that certificate (DER)."""
    context = ssl.create_default_context(cafile=ca.certificate_path)
    context.check_hostname = False
    if certified_by is None:
        return context, None
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"serial:{name}")]))
        .sign(key, hashes.SHA256())
    )
    certificate = certified_by.issue_device_certificate(request, validity_days=30)
    (tmp_path / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / f"{name}.cert").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    context.load_cert_chain(tmp_path / f"{name}.cert", tmp_path / f"{name}.key")
    return context, certificate.public_bytes(serialization.Encoding.DER)


def connect(context: ssl.SSLContext, port: int, errors: list[BaseException]) -> None:
    """What s_client does on the board: handshake, then hang up."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.getpeercert()
    except (OSError, ssl.SSLError) as exc:
        errors.append(exc)


def test_many_proofs_at_once_are_served_by_one_thread_and_each_gets_its_own_board_certificate(ca, tmp_path):
    listener = TlsProofListener(ca)
    boards = [board_context(ca, tmp_path, f"board{index}", ca) for index in range(6)]
    before = {thread.ident for thread in threading.enumerate()}
    ports = [listener.listen("127.0.0.1", TIMEOUT_S) for _ in boards]
    started = [thread for thread in threading.enumerate() if thread.ident not in before]
    assert [thread.name for thread in started] == ["tls-proof"]  # one thread for every open proof
    errors: list[BaseException] = []
    clients = [
        threading.Thread(target=connect, args=(context, port, errors))
        for (context, _), port in zip(boards, ports, strict=True)
    ]
    for client in reversed(clients):  # in another order than they listened
        client.start()
    for client in clients:
        client.join(TIMEOUT_S)
    assert errors == []
    for (_, certificate), port in zip(boards, ports, strict=True):
        presented, failure = listener.result(port, TIMEOUT_S)
        assert failure == [] and presented == certificate
    assert listener.finished(ports[0])  # taken: unknown now
    assert listener.result(ports[0], 0.0) == (None, [f"no TLS listener on port {ports[0]}"])
    started[0].join(TIMEOUT_S)
    assert not started[0].is_alive()  # nothing open: the thread has ended; the next listen starts one again
    context, certificate = boards[0]
    port = listener.listen("127.0.0.1", TIMEOUT_S)
    connect(context, port, errors)
    assert errors == [] and listener.result(port, TIMEOUT_S) == (certificate, [])


def test_a_board_without_our_certificate_fails_its_proof_and_not_its_neighbours(ca, tmp_path):
    listener = TlsProofListener(ca)
    stranger = CertificateAuthority.init(tmp_path / "stranger", passphrase=PASSPHRASE)
    good, certificate = board_context(ca, tmp_path, "good", ca)
    foreign, _ = board_context(ca, tmp_path, "foreign", stranger)
    anonymous, _ = board_context(ca, tmp_path, "anonymous", None)
    ports = {
        name: listener.listen("127.0.0.1", TIMEOUT_S) for name in ("good", "foreign", "anonymous", "silent")
    }
    errors: list[BaseException] = []
    connect(foreign, ports["foreign"], errors)
    connect(anonymous, ports["anonymous"], errors)
    connect(good, ports["good"], errors)
    assert listener.result(ports["good"], TIMEOUT_S) == (certificate, [])
    for name in ("foreign", "anonymous"):
        presented, failure = listener.result(ports[name], TIMEOUT_S)
        assert presented is None and len(failure) == 1
        assert failure[0].startswith("TLS handshake failed on the station side (")
    # A board that never connects: given up at once by the engine (its client failed), its port closed.
    assert not listener.finished(ports["silent"])
    assert listener.result(ports["silent"], 0.0) == (None, [])
    assert bindable_soon(ports["silent"])  # closed by the listener's thread: free again for the next unit


def bindable_soon(port: int) -> bool:
    end = time.monotonic() + TIMEOUT_S
    while time.monotonic() < end:
        try:
            with socket.create_server(("127.0.0.1", port)):
                return True
        except OSError:
            time.sleep(0.01)
    return False


def test_a_proof_nobody_connects_to_ends_with_a_clear_failure_at_its_timeout(ca):
    listener = TlsProofListener(ca)
    port = listener.listen("127.0.0.1", 0.3)
    presented, failure = listener.result(port, TIMEOUT_S)
    assert presented is None and failure == ["no connection from the board (timed out)"]


def test_a_board_that_connects_and_says_nothing_times_out_in_the_handshake(ca):
    listener = TlsProofListener(ca)
    port = listener.listen("127.0.0.1", 0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S):
        presented, failure = listener.result(port, TIMEOUT_S)
    assert presented is None and failure == ["TLS handshake failed on the station side (timed out)"]


def test_the_tls_context_is_built_once_per_ca(ca, monkeypatch):
    listener = TlsProofListener(ca)
    built = []
    original = ca.ssl_server_context

    def counting(**options: bool) -> ssl.SSLContext:
        built.append(options)
        return original(**options)

    monkeypatch.setattr(ca, "ssl_server_context", counting)
    for _ in range(3):
        listener.result(listener.listen("127.0.0.1", TIMEOUT_S), 0.0)
    assert built == [{"require_client_cert": True}]
