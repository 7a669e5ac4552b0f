"""Building blocks of the station's CA: file names, fingerprints, key generation, CA and TLS certificates, signing with a key in memory or in a token."""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from station.errors import StationError
from station.pki.der import bit_string, encrypt_pkcs8_scrypt, pkcs8_kdf, sequence, tlv, with_signature
from station.pki.token import TOKEN_FILE, TokenKey

CA_KEY_FILE: Final = "ca.key"
CA_CERT_FILE: Final = "ca.cert"
SYSTEM_KEY_FILE: Final = "system.key"
SYSTEM_CERT_FILE: Final = "system.cert"
# The last CRL number used; CRL numbers must only ever grow (RFC 5280 §5.2.3).
CRL_NUMBER_FILE: Final = "crlnumber"
CA_FILES: Final = (CA_KEY_FILE, CA_CERT_FILE, SYSTEM_KEY_FILE, SYSTEM_CERT_FILE)
# A station CA whose key is in a token: token.toml says where, its CSR waits for the offline root, and
# ca.cert then holds the issuing CA's certificate followed by the root's (what devices install), root.cert the root.
STATION_CSR_FILE: Final = "station-ca.csr"
ROOT_CERT_FILE: Final = "root.cert"
TOKEN_CA_FILES: Final = (TOKEN_FILE, STATION_CSR_FILE, CA_CERT_FILE, ROOT_CERT_FILE)
# The issuance limit the offline root wrote into a station CA's certificate (a private, non-critical extension
# holding one DER INTEGER): the station cannot raise it without a new certificate from the root.
MAX_CERTIFICATES_OID: Final = x509.ObjectIdentifier("2.25.117464839311722437950592338519330417913.1")
# The share of the quota after which every signature comes with a warning.
QUOTA_WARNING_SHARE: Final = 0.9

KEY_TYPES: Final = ("ec-p256", "rsa-2048", "rsa-3072")
# The passphrase guards the CA key at rest, behind scrypt (station.pki.der): memory-hard, so a guess costs
# 128 MiB and a third of a second; a short passphrase would still fall to a dictionary.
MIN_PASSPHRASE_LENGTH: Final = 8
# Boards often boot with a clock that is a little behind the station's (no RTC battery, NTP not yet
# synchronised).  Back-dating notBefore / thisUpdate keeps a fresh certificate or CRL valid for them.
CLOCK_SKEW_ALLOWANCE: Final = timedelta(minutes=5)

_SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_HASH: Final = hashes.SHA256()
# PKCS#9 extensionRequest: the one CSR attribute through which a CSR asks for extensions.
_EXTENSION_REQUEST: Final = x509.ObjectIdentifier("1.2.840.113549.1.9.14")
_CURVE_NICKNAMES: Final = {"secp256r1": "p256", "secp384r1": "p384"}


# ---------------------------------------------------------------------------------------------
# Small public helpers
# ---------------------------------------------------------------------------------------------


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lowercase hex (what ``openssl x509 -fingerprint -sha256`` shows)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def spki_sha256(public_key: PublicKeyTypes) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex.

    This identifies a *key* independently of any certificate, which is what "this key was already
    certified for another unit" has to compare.
    """
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def describe_key_type(public_key: PublicKeyTypes) -> str:
    """A short name for a key in the station's own words: ``ec-p256``, ``rsa-2048``, ``ed25519``…"""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ec-{_CURVE_NICKNAMES.get(public_key.curve.name, public_key.curve.name)}"
    return type(public_key).__name__.removesuffix("PublicKey").lower()


def read_certificate(path: Path) -> x509.Certificate:
    """Read one PEM certificate, with errors a technician can act on."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StationError(
            f"{path} does not exist — run `station ca init` (or `station ca import`) first."
        ) from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise StationError(
            f"{path} is not a readable PEM certificate — restore it from a backup of the CA directory."
        ) from None


# ---------------------------------------------------------------------------------------------
# Key generation and certificate building
# ---------------------------------------------------------------------------------------------


def _generate_key(key_type: str) -> _SigningKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":  # the offline root's default
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise StationError(f"Unknown CA key type {key_type!r} — choose one of: {', '.join(KEY_TYPES)}.")


def _key_usage(*, digital_signature: bool, key_encipherment: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _end_entity_key_usage(public_key: PublicKeyTypes) -> x509.KeyUsage:
    # RSA key exchange (TLS 1.2 RSA cipher suites) encrypts to the certificate's key, so RSA
    # certificates also need keyEncipherment; EC keys only ever sign.
    return _key_usage(
        digital_signature=True,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        cert_sign=False,
    )


def _check_validity_days(validity_days: int) -> None:
    if validity_days < 1:
        raise StationError(f"Validity of {validity_days} days is not possible — give at least 1 day.")


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _self_signed_ca(
    key: _SigningKey, *, common_name: str, validity_days: int, now: datetime
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + timedelta(days=validity_days))
        # pathlen 0: this CA signs end entities only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(digital_signature=False, key_encipherment=False, cert_sign=True), critical=True
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return builder.sign(key, _HASH)


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # An imported CA may have computed its SKI another way than SHA-1 of the key; the AKI of what
    # we sign must repeat the CA's SKI exactly, or path building by key identifier fails.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _system_certificate(
    ca_key: _SigningKey | TokenKey,
    ca_cert: x509.Certificate,
    system_key: _SigningKey,
    *,
    common_name: str,
    validity_days: int,
    now: datetime,
) -> x509.Certificate:
    """The TLS server certificate of the system the devices connect to (tutorial's system.cert)."""
    not_after = min(now + timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(system_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_end_entity_key_usage(system_key.public_key()), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(system_key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
    )
    return _sign_certificate(builder, ca_key)


def _system_key_type_for(ca_public_key: PublicKeyTypes) -> str:
    if isinstance(ca_public_key, rsa.RSAPublicKey):
        return "rsa-3072" if ca_public_key.key_size >= 3072 else "rsa-2048"
    return "ec-p256"


def _encrypted_pem(key: _SigningKey, passphrase: bytes) -> bytes:
    """PKCS#8 under PBES2 with scrypt (never cryptography's default PBKDF2 at 2048 iterations)."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return encrypt_pkcs8_scrypt(der, passphrase)


def key_file_kdf(path: Path) -> str:
    """How a CA key file is protected: ``scrypt`` (current), ``pbkdf2`` (written before scrypt), ``none``."""
    try:
        return pkcs8_kdf(path.read_bytes())
    except OSError:
        return "missing"


# ---------------------------------------------------------------------------------------------
# Signing with a key in memory or in a token
# ---------------------------------------------------------------------------------------------

_Signer = _SigningKey | TokenKey
_STAND_INS: dict[str, _SigningKey] = {}
_STAND_IN_LOCK = threading.Lock()


def _stand_in(public_key: PublicKeyTypes) -> _SigningKey:
    """A throw-away key of the same algorithm family: what cryptography signs the draft with.

    The to-be-signed part does not depend on the signing key (issuer and key identifiers are set explicitly),
    only the signature algorithm does, so the draft's TBS is exactly what the token then signs.
    """
    family = "rsa" if isinstance(public_key, rsa.RSAPublicKey) else "ec"
    with _STAND_IN_LOCK:
        if family not in _STAND_INS:
            _STAND_INS[family] = _generate_key("rsa-2048" if family == "rsa" else "ec-p256")
        return _STAND_INS[family]


def _check_signature(public_key: PublicKeyTypes, signature: bytes, data: bytes) -> None:
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(_HASH))
        elif isinstance(public_key, rsa.RSAPublicKey):
            from cryptography.hazmat.primitives.asymmetric import padding

            public_key.verify(signature, data, padding.PKCS1v15(), _HASH)
        else:
            raise TypeError(type(public_key).__name__)
    except Exception:
        raise StationError(
            "The token returned a signature that does not verify with the CA's public key — the token or its "
            "driver is faulty; nothing was issued. Check the HSM, then try again."
        ) from None


def _sign_certificate(builder: x509.CertificateBuilder, signer: _Signer) -> x509.Certificate:
    if not isinstance(signer, TokenKey):
        return builder.sign(signer, _HASH)
    draft = builder.sign(_stand_in(signer.public_key()), _HASH)
    signature = signer.sign(draft.tbs_certificate_bytes)
    _check_signature(signer.public_key(), signature, draft.tbs_certificate_bytes)
    der = with_signature(draft.public_bytes(serialization.Encoding.DER), signature)
    return x509.load_der_x509_certificate(der)


def _sign_crl(
    builder: x509.CertificateRevocationListBuilder, signer: _Signer
) -> x509.CertificateRevocationList:
    if not isinstance(signer, TokenKey):
        return builder.sign(signer, _HASH)
    draft = builder.sign(_stand_in(signer.public_key()), _HASH)
    signature = signer.sign(draft.tbs_certlist_bytes)
    _check_signature(signer.public_key(), signature, draft.tbs_certlist_bytes)
    return x509.load_der_x509_crl(with_signature(draft.public_bytes(serialization.Encoding.DER), signature))


def sign_bytes(signer: _Signer, data: bytes) -> bytes:
    """A plain signature over ``data`` (SHA-256; ECDSA or RSA PKCS#1 v1.5), e.g. for an audit checkpoint."""
    if isinstance(signer, TokenKey):
        return signer.sign(data)
    if isinstance(signer, ec.EllipticCurvePrivateKey):
        return signer.sign(data, ec.ECDSA(_HASH))
    from cryptography.hazmat.primitives.asymmetric import padding

    return signer.sign(data, padding.PKCS1v15(), _HASH)


def verify_bytes(public_key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` is :func:`sign_bytes`'s signature over ``data`` by the key of ``public_key``."""
    try:
        _check_signature(public_key, signature, data)
    except StationError:
        return False
    return True


def certification_request(signer: _Signer, subject: x509.Name) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for the signer's key, signed by that key (in the token, if it is there)."""
    if not isinstance(signer, TokenKey):
        return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(signer, _HASH)
    spki = signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # CertificationRequestInfo: version 0, subject, key, no attributes ([0] IMPLICIT SET OF, empty).
    info = sequence(bytes([0x02, 0x01, 0x00]), subject.public_bytes(), spki, tlv(0xA0, b""))
    der = sequence(info, signer.algorithm_der, bit_string(signer.sign(info)))
    request = x509.load_der_x509_csr(der)
    if not request.is_signature_valid:
        raise StationError("The token's signature on the CA's request does not verify — the token is faulty.")
    return request


def _with_serial_number(subject: x509.Name, serial_number: str | None) -> x509.Name:
    """``subject`` with a serialNumber attribute (the board's SoC unique id) appended, when one is given."""
    if serial_number is None:
        return subject
    return x509.Name(
        [
            *subject.rdns,
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number)]),
        ]
    )
