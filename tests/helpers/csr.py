"""Certificate requests for the CSR-policy tests: the board token's key (one per run), a CSR signed by it, DER
assembled by hand, and a genuinely signed CSR whose subject is not UTF-8 (no library builds one)."""

from __future__ import annotations

from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from station.pki import parse_openssl_subject

SERIAL = "202600000000001"
TEMPLATE = "/CN=serial:{serial}/"
EXPECTED = parse_openssl_subject(TEMPLATE.format(serial=SERIAL))

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@cache
def token_key() -> ec.EllipticCurvePrivateKey:
    """The key the board's token generated (one per test run is enough)."""
    return ec.generate_private_key(ec.SECP256R1())


def csr_pem(
    key: Key | None = None,
    subject: x509.Name = EXPECTED,
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> bytes:
    key = key or token_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def der_tlv(tag: int, content: bytes) -> bytes:
    """One DER element (enough DER to assemble a CSR by hand)."""
    if len(content) < 0x80:
        length = bytes([len(content)])
    else:
        size = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(size)]) + size
    return bytes([tag]) + length + content


def csr_with_non_utf8_subject() -> bytes:
    """A CSR correctly signed by the token key whose CN is a UTF8String holding bytes that are not UTF-8.

    No library will build one, so the CertificationRequestInfo is patched and signed again.
    """
    key = token_key()
    placeholder = "serial:XXXXXXXXXXXXXXX"
    template = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, placeholder)])
    )
    info = template.sign(key, hashes.SHA256()).tbs_certrequest_bytes
    start = info.index(placeholder.encode())
    assert info[start - 2] == 0x0C  # UTF8String tag; the bytes replacing it keep its length
    bad = b"serial:\xff\xfe\xc0" + SERIAL.encode()[3:]
    info = info[:start] + bad + info[start + len(placeholder) :]
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    ecdsa_with_sha256 = der_tlv(0x30, der_tlv(0x06, bytes.fromhex("2a8648ce3d040302")))
    der = der_tlv(0x30, info + ecdsa_with_sha256 + der_tlv(0x03, b"\x00" + signature))
    request = x509.load_der_x509_csr(der)
    assert request.is_signature_valid  # genuinely signed: only the text is wrong
    return request.public_bytes(serialization.Encoding.PEM)
