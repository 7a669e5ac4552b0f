"""The few DER structures the CA writes by hand: signatures made outside ``cryptography``, and scrypt-encrypted keys.

``cryptography`` signs certificates, CRLs and CSRs only with private keys it holds in memory.  A CA key in a
PKCS#11 token never leaves the token, so the station builds the to-be-signed part with ``cryptography``, has the
token sign it, and puts the three parts together here (X.509's ``SEQUENCE { tbs, algorithm, BIT STRING }``, the
same shape for a certificate, a CRL and a PKCS#10 request).

Private keys kept in files are written as PKCS#8 ``EncryptedPrivateKeyInfo`` with PBES2, **scrypt** (RFC 7914
§7) and AES-256-CBC — the format ``openssl pkcs8 -topk8 -scrypt`` writes and both OpenSSL and ``cryptography``
read — instead of ``cryptography``'s default PBKDF2 with 2048 iterations, which a GPU walks through quickly.
"""

from __future__ import annotations

import base64
import os
from typing import Final

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# scrypt cost: N = 2**14, r = 8, p = 4 → 16 MiB of memory per lane and ≈ 0.1–0.2 s per guess on a line PC (a
# GPU gets no shortcut: each guess needs the memory).  One unlock per station start.  Larger N would not open
# with `openssl pkey` any more (OpenSSL 3.0 caps scrypt at 32 MiB), and the tutorial's tools must read the keys.
SCRYPT_N: Final = 1 << 14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 4

# AlgorithmIdentifier DER of the two signature algorithms the station signs with.
ECDSA_SHA256: Final = bytes.fromhex("300a06082a8648ce3d040302")
RSA_SHA256: Final = bytes.fromhex("300d06092a864886f70d01010b0500")

_PBES2: Final = "1.2.840.113549.1.5.13"
_SCRYPT: Final = "1.3.6.1.4.1.11591.4.11"
_AES256_CBC: Final = "2.16.840.1.101.3.4.1.42"
_PEM_LABEL: Final = "ENCRYPTED PRIVATE KEY"


class DerError(ValueError):
    """DER text that does not have the shape expected."""


# --- encoding ------------------------------------------------------------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def sequence(*elements: bytes) -> bytes:
    return tlv(0x30, b"".join(elements))


def integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are needed here")
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def octet_string(value: bytes) -> bytes:
    return tlv(0x04, value)


def bit_string(value: bytes) -> bytes:
    return tlv(0x03, b"\x00" + value)  # no unused bits: signatures are whole bytes


def oid(dotted: str) -> bytes:
    parts = [int(part) for part in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


# --- decoding (only what is needed to take a signed structure apart) --------------------------------


def split_elements(der: bytes) -> list[bytes]:
    """The complete DER elements (tag + length + content) that follow one another in ``der``."""
    elements, position = [], 0
    while position < len(der):
        if position + 2 > len(der):
            raise DerError("truncated DER element")
        length = der[position + 1]
        header = 2
        if length & 0x80:
            size = length & 0x7F
            if size == 0 or size > 4 or position + 2 + size > len(der):
                raise DerError("unsupported DER length")
            length = int.from_bytes(der[position + 2 : position + 2 + size], "big")
            header += size
        end = position + header + length
        if end > len(der):
            raise DerError("DER element longer than its container")
        elements.append(der[position:end])
        position = end
    return elements


def content_of(element: bytes) -> bytes:
    """The content octets of one complete DER element."""
    length = element[1]
    header = 2 + (length & 0x7F if length & 0x80 else 0)
    return element[header:]


def with_signature(signed_der: bytes, signature: bytes) -> bytes:
    """``signed_der`` (a certificate, CRL or CSR) with its signature value replaced by ``signature``.

    The to-be-signed part and the algorithm identifier are kept byte for byte; only the BIT STRING changes.
    """
    outer = split_elements(signed_der)
    if len(outer) != 1 or outer[0][0] != 0x30:
        raise DerError("not one DER SEQUENCE")
    parts = split_elements(content_of(outer[0]))
    if len(parts) != 3 or parts[2][0] != 0x03:
        raise DerError("not a signed structure (tbs, algorithm, signature)")
    return sequence(parts[0], parts[1], bit_string(signature))


def ecdsa_signature(raw: bytes) -> bytes:
    """PKCS#11's ECDSA signature (r || s, each half the length) as X.509's ``ECDSA-Sig-Value`` DER."""
    half = len(raw) // 2
    return sequence(integer(int.from_bytes(raw[:half], "big")), integer(int.from_bytes(raw[half:], "big")))


# --- scrypt-encrypted PKCS#8 -------------------------------------------------------------------------


def encrypt_pkcs8_scrypt(private_key_der: bytes, passphrase: bytes) -> bytes:
    """PEM ``ENCRYPTED PRIVATE KEY`` of an unencrypted PKCS#8 DER key, under PBES2 + scrypt + AES-256-CBC."""
    salt, iv = os.urandom(16), os.urandom(16)
    key = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(private_key_der) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    scrypt_params = sequence(
        octet_string(salt), integer(SCRYPT_N), integer(SCRYPT_R), integer(SCRYPT_P), integer(32)
    )
    pbes2_params = sequence(
        sequence(oid(_SCRYPT), scrypt_params),
        sequence(oid(_AES256_CBC), octet_string(iv)),
    )
    der = sequence(sequence(oid(_PBES2), pbes2_params), octet_string(encrypted))
    return pem(der, _PEM_LABEL)


def pkcs8_kdf(pem_text: bytes) -> str:
    """Which key-derivation function protects a PEM private key: ``scrypt``, ``pbkdf2``, ``none`` or ``unknown``."""
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" not in pem_text:
        return "none" if b"PRIVATE KEY-----" in pem_text else "unknown"
    body = pem_text.split(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")[1].split(b"-----END")[0]
    der = base64.b64decode(b"".join(body.split()))
    if oid(_SCRYPT)[2:] in der[:80]:
        return "scrypt"
    if oid("1.2.840.113549.1.5.12")[2:] in der[:80]:
        return "pbkdf2"
    return "unknown"


def pem(der: bytes, label: str) -> bytes:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n").encode("ascii")
