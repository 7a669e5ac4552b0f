"""Key attestation: a statement, signed by the secure element's vendor, that the token key was made inside it.

Without one, the station has only the board's word that its key is "sensitive, never extractable, local"
(OP-TEE's PKCS#11 TA has no attestation; a board running wrappers around pkcs11-tool and openssl with a key
in a plain file prints the same lines).  With one, the station checks it before signing.

Format ``x509-chain`` — the one with real, widely deployed instances: the profile's ``[attestation] command``
prints a PEM certificate chain, leaf first, whose **leaf certifies the token's public key** and which
chains to the vendor's root (``vendor_root``, a PEM file the line engineer installs).  YubiKey PIV
attestation (``yubico-piv-tool -a attest`` + the slot-f9 certificate, under Yubico's PIV root) and
Microchip ATECC608/TA100 Trust&Go (device certificate → signer → root) have this shape.  A TPM 2.0 quote
or an Android KeyMint statement need their own parsers and are not implemented.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from station.errors import StationError

MAX_CHAIN_CERTIFICATES = 5
MAX_STATEMENT_BYTES = 64 * 1024
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class AttestationFailed(StationError):
    """The board's attestation statement does not prove its key; nothing is signed."""


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_vendor_root(path: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise AttestationFailed(
            f"the vendor root {path} named in the profile's [attestation] cannot be read ({exc}) — install the "
            "secure element vendor's root certificate there (PEM), then press Retry"
        ) from exc


def verify_x509_chain(
    statement: bytes,
    *,
    vendor_root: x509.Certificate,
    token_public_key_der: bytes,
    now: datetime | None = None,
) -> str:
    """Check an ``x509-chain`` statement; return what it proved, in words, or raise :class:`AttestationFailed`."""
    if len(statement) > MAX_STATEMENT_BYTES:
        raise AttestationFailed(
            f"the attestation statement is {len(statement)} bytes long — not a certificate chain"
        )
    blocks = _PEM.findall(statement)
    if not blocks:
        raise AttestationFailed("the board printed no PEM certificate as its attestation statement")
    if len(blocks) > MAX_CHAIN_CERTIFICATES:
        raise AttestationFailed(
            f"the attestation chain has {len(blocks)} certificates (at most {MAX_CHAIN_CERTIFICATES})"
        )
    try:
        chain = [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError as exc:
        raise AttestationFailed(
            f"the attestation chain holds a certificate that cannot be read ({exc})"
        ) from exc
    moment = now or datetime.now(UTC)
    issuers = [*chain[1:], vendor_root]
    for index, (certificate, issuer) in enumerate(zip(chain, issuers, strict=True)):
        name = "leaf" if index == 0 else f"certificate {index + 1}"
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise AttestationFailed(
                f"the attestation chain's {name} ({certificate.subject.rfc4514_string()}) is not valid now"
            )
        if index > 0 and not _is_ca(certificate):
            raise AttestationFailed(
                f"the attestation chain's {name} signs others but is not a CA certificate"
            )
        try:
            certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise AttestationFailed(
                f"the attestation chain's {name} ({certificate.subject.rfc4514_string()}) is not signed by "
                f"{issuer.subject.rfc4514_string()} — the statement does not come from the vendor"
            ) from exc
    if _spki(chain[0].public_key()) != token_public_key_der:
        raise AttestationFailed(
            "the attestation certifies another key than the token's key — the key the board offered was not made "
            "in its secure element"
        )
    return (
        f"the token key is attested by {chain[0].issuer.rfc4514_string()}, chaining to the vendor root "
        f"{vendor_root.subject.rfc4514_string()}"
    )


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
