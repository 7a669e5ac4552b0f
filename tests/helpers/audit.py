"""Audit-log helpers shared by tests in several directories: a clock moved by hand, a device-like
certificate, and a unit started with the usual fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.audit import AuditLog

T0 = datetime(2026, 3, 2, 8, 0, 0, 123456, tzinfo=UTC)


class Clock:
    """A station clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def make_certificate(
    common_name: str = "serial:202600000000001",
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    serial_number: int | None = None,
) -> bytes:
    """A self-signed device-like certificate (PEM)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial_number or x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def start(log: AuditLog, serial: str, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "profile": "welma-optee",
        "device": "ssh://root@127.0.0.2:2222",
        "operator": "ann",
        "station": "line-1",
    }
    fields.update(overrides)
    return log.start_unit(serial=serial, **fields)
