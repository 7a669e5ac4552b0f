"""The station's local certificate authority: init, load, CSR policy, device certificates, CRL.

The Welma enrolment tutorial signs each device CSR with ``openssl req -CA ca.cert -CAkey ca.key``.
With the stock openssl.cnf that applies the ``v3_ca`` section, so every *device* certificate comes
out ``CA:TRUE``: any board could then mint certificates for other serials.  This module is the
replacement: the CA certificate is ``CA:TRUE, pathlen:0`` (it can sign end entities only) and every
device certificate is an end entity (``CA:FALSE`` critical, ``digitalSignature`` and TLS
``clientAuth`` only).

Two kinds of CA directory:

* the **demo CA** (``station ca init`` without a token): four files, named as in the tutorial so an operator
  can follow it with the openssl command line: ``ca.key``/``ca.cert`` (a self-signed CA) and
  ``system.key``/``system.cert`` (the TLS server the devices connect to).  Private keys are PKCS#8 under the
  CA passphrase with scrypt (:mod:`station.pki_der`), created with mode 0600; a decrypted key never touches
  the disk;
* a **station CA in a PKCS#11 token** (production): ``token.toml`` says where the key is
  (:mod:`station.pki_token`), ``station-ca.csr`` went to the offline root (:mod:`station.pki_root`), and
  ``ca.cert`` holds the chain it issued (this CA, then the root) — what devices install.  Its TLS server key
  lives in memory only, certified by the token at start-up.

Either way :class:`CertificateAuthority` is the one interface the sign step uses.

Before a CSR is signed it must pass :func:`check_csr`: the device is not trusted to ask only for
what it should, so the station decides everything in the certificate except the public key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID, NameOID

from station.errors import ConfigError, StationError
from station.files import write_file_atomically  # re-exported: many modules import it from here
from station.pki_der import bit_string, encrypt_pkcs8_scrypt, pkcs8_kdf, sequence, tlv, with_signature
from station.pki_token import TOKEN_FILE, TokenKey, TokenSettings

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CLOCK_SKEW_ALLOWANCE",
    "KEY_TYPES",
    "MIN_PASSPHRASE_LENGTH",
    "SYSTEM_CERT_FILE",
    "SYSTEM_KEY_FILE",
    "CertificateAuthority",
    "CsrPolicy",
    "CsrRejected",
    "IssuanceQuota",
    "QuotaReached",
    "RevokedEntry",
    "check_csr",
    "describe_key_type",
    "device_subject",
    "fingerprint_sha256",
    "parse_openssl_subject",
    "read_certificate",
    "refuse_existing_ca",
    "spki_sha256",
    "write_file_atomically",
]

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
# The passphrase guards the CA key at rest, behind scrypt (station.pki_der): memory-hard, so a guess costs
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


def _check_new_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise StationError(
            f"The CA passphrase is shorter than {MIN_PASSPHRASE_LENGTH} characters — choose a longer one; "
            "it is the only protection of the CA key at rest."
        )
    if len(passphrase) > 1023:  # the PEM encryption of cryptography/OpenSSL accepts no more
        raise StationError("The CA passphrase is longer than 1023 bytes — choose a shorter one.")


def refuse_existing_ca(directory: Path) -> None:
    """Raise if ``directory`` already holds any CA file (ask before prompting for a new passphrase)."""
    existing = [name for name in (*CA_FILES, TOKEN_FILE, STATION_CSR_FILE) if (directory / name).exists()]
    if existing:
        raise StationError(
            f"A CA already exists in {directory} ({', '.join(existing)}) — refusing to overwrite it. "
            "See it with `station ca show`; to start over, move that directory away first."
        )


def _make_private_directory(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)  # mkdir's mode is filtered by the umask and ignored if it existed


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise StationError(
            f"{path} is readable or writable by group or others (mode {mode:04o}) — the CA's private keys "
            f"must be private to their owner. Run `chmod 600 {path}` and try again."
        )


# ---------------------------------------------------------------------------------------------
# The CA
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked device certificate, as the audit log records it.

    ``reason`` is an RFC 5280 reason name (``keyCompromise``, ``key_compromise``, ``superseded``,
    ``cessationOfOperation``, …, case-insensitive); anything else — including free text — is put in
    the CRL without a reason code, which RFC 5280 says means "unspecified".
    """

    serial_number: int
    revoked_at: datetime
    reason: str


def _reason_flag(reason: str) -> x509.ReasonFlags | None:
    wanted = reason.strip().replace("-", "").replace("_", "").replace(" ", "").lower()
    for flag in x509.ReasonFlags:
        # unspecified: RFC 5280 says omit the extension; removeFromCRL is only for delta CRLs.
        if flag in (x509.ReasonFlags.unspecified, x509.ReasonFlags.remove_from_crl):
            continue
        if wanted in (flag.value.lower(), flag.name.replace("_", "").lower()):
            return flag
    return None


def _close_descriptors(descriptors: list[int]) -> None:
    for fd in descriptors:
        os.close(fd)
    descriptors.clear()


class CertificateAuthority:
    """The station's CA with its keys decrypted in memory.

    Create one with :meth:`init`, :meth:`load` or :meth:`import_existing`, not directly.
    :meth:`issue_device_certificate` and :meth:`crl` may be called from several threads at once
    (batch mode signs for all fixture slots in parallel).
    """

    def __init__(
        self,
        directory: Path,
        *,
        ca_key: _Signer,
        ca_cert: x509.Certificate,
        system_cert: x509.Certificate,
        passphrase: bytes | None,
        chain_pem: bytes | None = None,
        system_key: _SigningKey | None = None,
    ) -> None:
        self._directory = directory
        self._ca_key = ca_key
        self._ca_cert = ca_cert
        self._system_cert = system_cert
        self._authority_key_id = _authority_key_identifier(ca_cert)
        # Kept only in memory, to hand the encrypted system.key to OpenSSL in ssl_server_context().
        self._passphrase = passphrase
        # What devices install as ca.cert: this CA alone (self-signed demo CA) or this CA followed by the root.
        self._chain_pem = chain_pem or ca_cert.public_bytes(serialization.Encoding.PEM)
        self._lock = threading.Lock()
        self.max_certificates_per_day: int | None = None
        # The TLS server key, decrypted once at load, is handed to OpenSSL through memory-only files (memfd) for
        # every TLS proof: decrypting system.key per unit would cost a scrypt derivation each time.  A token CA
        # has no system.key file at all: its key lives in memory only, certified by the token at load.
        self._memory_files: list[int] = []
        # Closes the memory files when the CA is closed or garbage-collected, whichever comes first.
        self._release = weakref.finalize(self, _close_descriptors, self._memory_files)
        self._system_files: tuple[str, str] | None = None
        if system_key is not None:
            key_pem = system_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            cert_pem = system_cert.public_bytes(serialization.Encoding.PEM) + self._chain_pem
            self._system_files = (self._memory_file("system.cert", cert_pem), self._memory_file("system.key", key_pem))

    def _memory_file(self, name: str, data: bytes) -> str:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.write(fd, data)
        self._memory_files.append(fd)
        return f"/proc/self/fd/{fd}"

    def close(self) -> None:
        """Log out of the token and forget the in-memory TLS key (a file CA has nothing to close)."""
        if isinstance(self._ca_key, TokenKey):
            self._ca_key.close()
        self._release()

    def __repr__(self) -> str:
        return f"CertificateAuthority({str(self._directory)!r}, subject={self._ca_cert.subject.rfc4514_string()!r})"

    # --- creation -----------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        passphrase: bytes,
        common_name: str = "Welma Station CA",
        key_type: str = "ec-p256",
        validity_days: int = 3650,
        system_common_name: str = "system",
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """Create a new CA (key + self-signed certificate) and the system's TLS server key + certificate.

        Refuses if any of the four files already exists: overwriting a CA key orphans every
        device certificate it ever signed.
        """
        _check_new_passphrase(passphrase)
        _check_validity_days(validity_days)
        if key_type not in KEY_TYPES:
            raise StationError(f"Unknown CA key type {key_type!r} — choose one of: {', '.join(KEY_TYPES)}.")
        refuse_existing_ca(directory)
        now = _now(now)
        ca_key = _generate_key(key_type)
        ca_cert = _self_signed_ca(ca_key, common_name=common_name, validity_days=validity_days, now=now)
        return cls._create(
            directory,
            ca_key=ca_key,
            ca_cert=ca_cert,
            passphrase=passphrase,
            system_common_name=system_common_name,
            system_validity_days=validity_days,
            now=now,
        )

    @classmethod
    def import_existing(
        cls,
        directory: Path,
        *,
        key_pem: bytes,
        cert_pem: bytes,
        key_password: bytes | None,
        passphrase: bytes,
        system_common_name: str = "system",
        system_validity_days: int = 3650,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """Adopt an existing CA (e.g. the tutorial's ``ca.key``/``ca.cert``) and create the system's TLS pair.

        The CA key is re-encrypted under ``passphrase``; the original files are not touched.  The
        certificate must be a self-signed CA certificate for that key, usable for signing
        certificates and CRLs, and not expired.
        """
        _check_new_passphrase(passphrase)
        _check_validity_days(system_validity_days)
        refuse_existing_ca(directory)
        now = _now(now)
        try:
            ca_cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise StationError(
                "The CA certificate to import is not a PEM certificate — give the CA's certificate "
                "(ca.cert in the tutorial), not its key or a CSR."
            ) from None
        ca_key = _import_private_key(key_pem, key_password)
        _check_importable_ca(ca_key, ca_cert, now=now)
        return cls._create(
            directory,
            ca_key=ca_key,
            ca_cert=ca_cert,
            passphrase=passphrase,
            system_common_name=system_common_name,
            system_validity_days=system_validity_days,
            now=now,
        )

    @classmethod
    def _create(
        cls,
        directory: Path,
        *,
        ca_key: _SigningKey,
        ca_cert: x509.Certificate,
        passphrase: bytes,
        system_common_name: str,
        system_validity_days: int,
        now: datetime,
    ) -> CertificateAuthority:
        system_key = _generate_key(_system_key_type_for(ca_key.public_key()))
        system_cert = _system_certificate(
            ca_key,
            ca_cert,
            system_key,
            common_name=system_common_name,
            validity_days=system_validity_days,
            now=now,
        )
        files = [
            (CA_KEY_FILE, _encrypted_pem(ca_key, passphrase), 0o600),
            (CA_CERT_FILE, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644),
            (SYSTEM_KEY_FILE, _encrypted_pem(system_key, passphrase), 0o600),
            (SYSTEM_CERT_FILE, system_cert.public_bytes(serialization.Encoding.PEM), 0o644),
        ]
        _make_private_directory(directory)
        written: list[Path] = []
        try:
            for name, data, mode in files:
                write_file_atomically(directory / name, data, mode=mode, replace=False)
                written.append(directory / name)
        except FileExistsError as exc:
            # Someone else created the CA between our check and our write: theirs stays.
            for path in written:
                path.unlink(missing_ok=True)
            raise StationError(
                f"A CA appeared in {directory} while this one was being created ({exc.filename}) — "
                "refusing to overwrite it. Check who else is initialising this station home."
            ) from None
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return cls(directory, ca_key=ca_key, ca_cert=ca_cert, system_cert=system_cert, passphrase=passphrase,
                   system_key=system_key)

    @classmethod
    def load(cls, directory: Path, *, passphrase: bytes | None = None, pin: str | None = None) -> CertificateAuthority:
        """Open the CA in ``directory``: log in to its token with ``pin``, or decrypt its key files with ``passphrase``.

        Refuses key files that group or others can read or write: a CA key that leaked once
        can sign devices forever, so the station will not use one that may have.
        """
        if (directory / TOKEN_FILE).exists():
            if pin is None:
                raise StationError(
                    f"The station CA in {directory} has its key in a PKCS#11 token — give the token's PIN "
                    "(prompt, or [ca] pin_file in station.toml)."
                )
            return cls._load_token(directory, pin=pin)
        if passphrase is None:
            raise StationError(f"The CA in {directory} is an encrypted key file — its passphrase is needed.")
        missing = [name for name in CA_FILES if not (directory / name).exists()]
        if missing:
            raise StationError(
                f"No complete CA in {directory} (missing {', '.join(missing)}) — run `station ca init` "
                "(or `station ca import`) first."
            )
        for name in (CA_KEY_FILE, SYSTEM_KEY_FILE):
            _check_private(directory / name)
        ca_cert = read_certificate(directory / CA_CERT_FILE)
        system_cert = read_certificate(directory / SYSTEM_CERT_FILE)
        ca_key = _load_own_private_key(directory / CA_KEY_FILE, passphrase)
        system_key = _load_own_private_key(directory / SYSTEM_KEY_FILE, passphrase)
        if not _same_key(ca_key.public_key(), ca_cert.public_key()):
            raise StationError(
                f"{directory / CA_KEY_FILE} is not the key of {directory / CA_CERT_FILE} — the CA "
                "directory has been mixed up; restore both files from the same backup."
            )
        if not _same_key(system_key.public_key(), system_cert.public_key()):
            raise StationError(
                f"{directory / SYSTEM_KEY_FILE} is not the key of {directory / SYSTEM_CERT_FILE} — "
                "restore both files from the same backup."
            )
        try:
            system_cert.verify_directly_issued_by(ca_cert)
        except Exception as exc:  # InvalidSignature, ValueError, TypeError: no common base class
            raise StationError(
                f"{directory / SYSTEM_CERT_FILE} was not issued by {directory / CA_CERT_FILE} ({exc}) — "
                "restore the CA directory from a backup."
            ) from None
        return cls(directory, ca_key=ca_key, ca_cert=ca_cert, system_cert=system_cert, passphrase=passphrase,
                   system_key=system_key)

    # --- what it is ---------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def in_token(self) -> bool:
        """True when the CA's key is in a PKCS#11 token (False: an encrypted key file, the demo CA)."""
        return isinstance(self._ca_key, TokenKey)

    @property
    def key_storage(self) -> str:
        if isinstance(self._ca_key, TokenKey):
            return self._ca_key.description
        return f"encrypted file {self.key_path} ({key_file_kdf(self.key_path)})"

    @property
    def chain_pem(self) -> bytes:
        """This CA's certificate followed by its issuers' up to the root (one certificate for the demo CA)."""
        return self._chain_pem

    @property
    def chain(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self._chain_pem)

    def sign_bytes(self, data: bytes) -> bytes:
        """Sign ``data`` with the CA key (audit checkpoints); the signature verifies with :attr:`certificate`.

        Deliberately not under the CA's lock: the audit log calls this inside its own transaction, and the
        sign step records a certificate (audit lock) while holding the CA's lock — taking the CA's lock here
        would deadlock the two.  A token key serialises its own operations; a key in memory needs no lock.
        """
        return sign_bytes(self._ca_key, data)

    @property
    def certificate(self) -> x509.Certificate:
        return self._ca_cert

    @property
    def certificate_pem(self) -> bytes:
        """What devices install as the tutorial's ``ca.cert``: this CA and, for a station CA, the root above it."""
        return self._chain_pem

    @property
    def certificate_path(self) -> Path:
        return self._directory / CA_CERT_FILE

    @property
    def key_path(self) -> Path:
        return self._directory / CA_KEY_FILE

    @property
    def key_type(self) -> str:
        return describe_key_type(self._ca_cert.public_key())

    @property
    def system_certificate(self) -> x509.Certificate:
        return self._system_cert

    @property
    def system_certificate_path(self) -> Path:
        return self._directory / SYSTEM_CERT_FILE

    @property
    def system_key_path(self) -> Path:
        return self._directory / SYSTEM_KEY_FILE

    # --- what it does -------------------------------------------------------------------------

    def ssl_server_context(self, *, require_client_cert: bool = True) -> ssl.SSLContext:
        """A TLS server context presenting system.cert that accepts only clients certified by this CA.

        The system key decrypted at load is read by OpenSSL from a memory-only file (never from disk in clear).
        With ``require_client_cert=False`` a client certificate is still asked for and verified if
        one is sent, but a client without one is let in.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self._system_files is not None:
            context.load_cert_chain(certfile=self._system_files[0], keyfile=self._system_files[1])
        else:
            context.load_cert_chain(
                certfile=self.system_certificate_path,
                keyfile=self.system_key_path,
                password=self._passphrase,
            )
        context.load_verify_locations(cadata=self._chain_pem.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        return context

    def issue_device_certificate(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        validity_days: int,
        subject: x509.Name | None = None,
        crl_url: str = "",
        ca_issuers_url: str = "",
        ocsp_url: str = "",
        issued_since: Callable[[datetime], int] | None = None,
        record: Callable[[x509.Certificate], object] | None = None,
        now: datetime | None = None,
        subject_serial_number: str | None = None,
    ) -> x509.Certificate:
        """Sign an end-entity TLS client certificate for a device from its (already checked) CSR.

        Only the public key comes from the CSR; the subject is ``subject`` — built by :func:`device_subject`
        from the profile's template and the scanned serial, never the CSR's own encoding (the CSR's is used
        only when no subject is given, for callers of the older interface).  Everything else is the station's
        decision.  Run :func:`check_csr` first: this method re-checks only proof of possession.  The
        certificate never outlives the CA certificate (``notAfter`` is clamped to the CA's).

        With ``issued_since`` (how many certificates the audit log holds since a moment) the issuance quota is
        checked, and with ``record`` (the audit log's write) the certificate is recorded, both under the same
        lock as the signature: parallel units can neither overshoot the quota nor sign without a record.
        ``subject_serial_number`` (the board's SoC unique id, when the profile asks) is added to the subject as a
        serialNumber attribute.
        """
        _check_validity_days(validity_days)
        if not csr.is_signature_valid:
            raise CsrRejected(
                "csr-bad-signature",
                "The CSR's signature does not verify, so it does not prove the device holds the key — "
                "provision the unit again.",
            )
        public_key = csr.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise CsrRejected(
                "key-algorithm-not-allowed",
                f"The CSR's key is {describe_key_type(public_key)}; device certificates are issued for "
                f"RSA and EC keys only — {_REPROVISION} with an allowed key type.",
            )
        now = _now(now)
        ca_not_after = self._ca_cert.not_valid_after_utc
        if now >= ca_not_after:
            raise StationError(
                f"The station CA certificate expired on {ca_not_after:%Y-%m-%d %H:%M} UTC — no device can "
                "be certified with it. Set up a new CA (`station ca init` in a new home, or `station ca import`)."
            )
        subject = subject if subject is not None else csr.subject
        if subject_serial_number is not None:
            subject = x509.Name(
                [*subject.rdns, x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.SERIAL_NUMBER, subject_serial_number)])]
            )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())  # 159 random bits: unguessable, unique
            .not_valid_before(max(now - CLOCK_SKEW_ALLOWANCE, self._ca_cert.not_valid_before_utc))
            .not_valid_after(min(now + timedelta(days=validity_days), ca_not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_end_entity_key_usage(public_key), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_id, critical=False)
        )
        for extension in _distribution_extensions(crl_url, ca_issuers_url, ocsp_url):
            builder = builder.add_extension(extension, critical=False)
        # One signature at a time: the CA key object is shared by all fixture slots.
        with self._lock:
            if issued_since is not None:
                self.quota(issued_since, now=now).check()
            certificate = _sign_certificate(builder, self._ca_key)
            if record is not None:
                record(certificate)
            return certificate

    # --- issuance quota -----------------------------------------------------------------------

    @property
    def max_certificates(self) -> int | None:
        """The total number of certificates the offline root allowed this CA to issue (None: no limit)."""
        return max_certificates_of(self._ca_cert)

    def quota(self, issued_since: Callable[[datetime], int], *, now: datetime | None = None) -> IssuanceQuota:
        """How many certificates this CA has issued and may still issue (counted in the audit log)."""
        now = _now(now)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        # Every certificate the station recorded since this CA came to be was signed by it.
        born = self._ca_cert.not_valid_before_utc
        return IssuanceQuota(
            issued=issued_since(born),
            maximum=self.max_certificates,
            issued_today=issued_since(max(day_start, born)) if self.max_certificates_per_day else 0,
            maximum_per_day=self.max_certificates_per_day,
        )

    def crl(
        self,
        revoked: Iterable[RevokedEntry],
        *,
        next_update_days: int = 7,
        now: datetime | None = None,
    ) -> bytes:
        """A signed PEM CRL listing ``revoked``, with a CRL number one above the last one issued.

        The last number is kept in ``crlnumber`` next to the CA so that numbers keep growing across
        runs, as relying parties use them to tell a newer CRL from an older one.
        """
        if next_update_days < 1:
            raise StationError(f"A CRL valid for {next_update_days} days is not possible — give at least 1.")
        now = _now(now)
        # Never promise a next CRL beyond the CA's own life (RFC 5280: nextUpdate within the issuer's validity).
        next_update = min(now + timedelta(days=next_update_days), self._ca_cert.not_valid_after_utc)
        entries: dict[int, RevokedEntry] = {}
        for entry in revoked:
            earlier = entries.get(entry.serial_number)
            if earlier is None or _now(entry.revoked_at) < _now(earlier.revoked_at):
                entries[entry.serial_number] = entry
        with self._lock:
            number = self._next_crl_number()
            builder = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(self._ca_cert.subject)
                .last_update(now - CLOCK_SKEW_ALLOWANCE)
                .next_update(next_update)
                .add_extension(x509.CRLNumber(number), critical=False)
                .add_extension(self._authority_key_id, critical=False)
            )
            for serial in sorted(entries):
                entry = entries[serial]
                revoked_builder = (
                    x509.RevokedCertificateBuilder()
                    .serial_number(serial)
                    .revocation_date(_now(entry.revoked_at))
                )
                flag = _reason_flag(entry.reason)
                if flag is not None:
                    revoked_builder = revoked_builder.add_extension(x509.CRLReason(flag), critical=False)
                builder = builder.add_revoked_certificate(revoked_builder.build())
            return _sign_crl(builder, self._ca_key).public_bytes(serialization.Encoding.PEM)

    def _next_crl_number(self) -> int:
        path = self._directory / CRL_NUMBER_FILE
        try:
            last = int(path.read_text(encoding="ascii").strip() or "0")
        except FileNotFoundError:
            last = 0
        except ValueError:
            raise StationError(
                f"{path} does not hold a number — put the last CRL number issued in it (or 0 if none was "
                "published), then try again."
            ) from None
        number = last + 1
        write_file_atomically(path, f"{number}\n".encode("ascii"), mode=0o600, replace=True)
        return number


    # --- a station CA whose key is in a token -------------------------------------------------

    @classmethod
    def init_in_token(
        cls,
        directory: Path,
        *,
        settings: TokenSettings,
        pin: str,
        common_name: str = "Welma Station CA",
        key_type: str = "ec-p256",
    ) -> Path:
        """Create the station CA's key inside the token and write its CSR for the offline root; return the CSR's path.

        Nothing is signed by this CA until `station ca import-chain` installs the certificate the root issued.
        """
        refuse_existing_ca(directory)
        key = TokenKey.generate(settings, pin=pin, key_type=key_type)
        try:
            request = certification_request(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        finally:
            key.close()
        _make_private_directory(directory)
        write_file_atomically(directory / TOKEN_FILE, settings.to_toml().encode("utf-8"), mode=0o600, replace=False)
        csr_path = directory / STATION_CSR_FILE
        write_file_atomically(csr_path, request.public_bytes(serialization.Encoding.PEM), mode=0o644, replace=False)
        return csr_path

    @classmethod
    def import_chain(cls, directory: Path, chain_pem: bytes, *, now: datetime | None = None) -> list[x509.Certificate]:
        """Install the certificate chain the offline root issued for this station's token CA.

        The first certificate must be for the key whose CSR `station ca init` wrote, a CA that may sign end
        entities only (pathLen 0), and the chain must end in a self-signed root, every link verifying.  Needs no
        PIN: the key is compared with the one in the CSR.
        """
        now = _now(now)
        if not (directory / TOKEN_FILE).exists():
            raise StationError(
                f"{directory} holds no token CA waiting for its chain — run `station ca init --pkcs11-module … "
                "--token-label …` first."
            )
        if (directory / CA_CERT_FILE).exists():
            raise StationError(
                f"{directory / CA_CERT_FILE} already exists — this station's CA chain is installed; refusing to "
                "replace it. To renew, start a new CA (new token key) with `station ca init` in a new home."
            )
        try:
            chain = x509.load_pem_x509_certificates(chain_pem)
        except ValueError:
            raise StationError(
                "The chain file holds no readable PEM certificate — give the CHAIN.pem that "
                "`station ca root sign-station` wrote."
            ) from None
        request = x509.load_pem_x509_csr((directory / STATION_CSR_FILE).read_bytes())
        if not _same_key(chain[0].public_key(), request.public_key()):
            raise StationError(
                "The first certificate of the chain is not for this station's token key (not the key of "
                f"{directory / STATION_CSR_FILE}) — the root signed another station's request; send this "
                "station's CSR to the root again."
            )
        _check_station_chain(chain, now=now)
        pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)
        write_file_atomically(directory / CA_CERT_FILE, pem, mode=0o644, replace=False)
        write_file_atomically(
            directory / ROOT_CERT_FILE, chain[-1].public_bytes(serialization.Encoding.PEM), mode=0o644, replace=True
        )
        return chain

    @classmethod
    def _load_token(cls, directory: Path, *, pin: str, now: datetime | None = None) -> CertificateAuthority:
        settings = TokenSettings.read(directory / TOKEN_FILE)
        if not (directory / CA_CERT_FILE).exists():
            raise StationError(
                f"The station CA in {directory} has its key in token {settings.token_label!r} but no certificate "
                f"yet — take {directory / STATION_CSR_FILE} to the offline root (`station ca root sign-station`), "
                "then `station ca import-chain CHAIN.pem`."
            )
        chain_pem = (directory / CA_CERT_FILE).read_bytes()
        chain = x509.load_pem_x509_certificates(chain_pem)
        now = _now(now)
        key = TokenKey.open(settings, pin=pin)
        try:
            if not _same_key(key.public_key(), chain[0].public_key()):
                raise StationError(
                    f"The key in token {settings.token_label!r} is not the key of {directory / CA_CERT_FILE} — "
                    "this is another station's token; plug in this station's own."
                )
            system_key = _generate_key("ec-p256")
            system_cert = _system_certificate(
                key, chain[0], system_key, common_name="system", validity_days=30, now=now
            )
        except BaseException:
            key.close()
            raise
        return cls(
            directory, ca_key=key, ca_cert=chain[0], system_cert=system_cert, passphrase=None,
            chain_pem=chain_pem, system_key=system_key,
        )  # fmt: skip


@dataclass(frozen=True)
class IssuanceQuota:
    """How many device certificates a CA issued and may still issue, in total and today."""

    issued: int
    maximum: int | None
    issued_today: int = 0
    maximum_per_day: int | None = None

    @property
    def remaining(self) -> int | None:
        left = [limit - used for limit, used in ((self.maximum, self.issued),
                                                  (self.maximum_per_day, self.issued_today)) if limit is not None]
        return max(0, min(left)) if left else None  # fmt: skip

    @property
    def near_limit(self) -> bool:
        """At or beyond 90 % of either limit: time to ask the root for the next station CA."""
        return any(limit is not None and used >= QUOTA_WARNING_SHARE * limit
                   for limit, used in ((self.maximum, self.issued), (self.maximum_per_day, self.issued_today)))

    def describe(self) -> str:
        parts = []
        if self.maximum is not None:
            parts.append(f"{self.issued} of {self.maximum} certificates issued")
        else:
            parts.append(f"{self.issued} certificates issued (no total limit)")
        if self.maximum_per_day is not None:
            parts.append(f"{self.issued_today} of {self.maximum_per_day} today")
        if self.remaining is not None:
            parts.append(f"{self.remaining} remaining")
        text = ", ".join(parts)
        return text + (" — WARNING: 90 % of the quota is used; ask for the next station CA now" if self.near_limit else "")

    def check(self) -> None:
        if self.maximum is not None and self.issued >= self.maximum:
            raise QuotaReached(
                f"The station CA has issued {self.issued} of the {self.maximum} certificates the offline root "
                "allowed — no more boards can be enrolled with it. Nothing was signed and the board was not "
                "touched; have the root issue a new station CA (`station ca init` on a new token, "
                "`station ca root sign-station`), then retry."
            )
        if self.maximum_per_day is not None and self.issued_today >= self.maximum_per_day:
            raise QuotaReached(
                f"The station CA has issued today's {self.maximum_per_day} certificates ([ca] "
                "max_certificates_per_day in station.toml) — nothing was signed and the board was not touched; "
                "continue tomorrow (UTC) or have an administrator raise the daily limit."
            )


class QuotaReached(StationError):
    """The issuing CA may not sign another certificate now; nothing was signed."""


def max_certificates_of(cert: x509.Certificate) -> int | None:
    """The issuance limit the root wrote into a station CA certificate, if any."""
    try:
        value = cert.extensions.get_extension_for_oid(MAX_CERTIFICATES_OID).value
    except x509.ExtensionNotFound:
        return None
    data = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(data) < 3 or data[0] != 0x02 or data[1] != len(data) - 2:
        raise StationError(f"The CA certificate's issuance limit extension is malformed ({data.hex()}).")
    return int.from_bytes(data[2:], "big")


def _distribution_extensions(crl_url: str, ca_issuers_url: str, ocsp_url: str) -> list[x509.ExtensionType]:
    extensions: list[x509.ExtensionType] = []
    if crl_url:
        extensions.append(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)]
            )
        )
    access = []
    if ocsp_url:
        access.append(x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                             x509.UniformResourceIdentifier(ocsp_url)))
    if ca_issuers_url:
        access.append(x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                             x509.UniformResourceIdentifier(ca_issuers_url)))
    if access:
        extensions.append(x509.AuthorityInformationAccess(access))
    return extensions


def _check_station_chain(chain: list[x509.Certificate], *, now: datetime) -> None:
    """A station CA chain: issuing CA (pathLen 0) … root (self-signed), every link signed by the next."""
    issuing, root = chain[0], chain[-1]
    constraints = _basic_constraints(issuing)
    if constraints is None or not constraints.ca or constraints.path_length != 0:
        raise StationError(
            "The station CA certificate must be a CA limited to end entities (basicConstraints CA:TRUE, "
            "pathlen:0) — have the root issue it with `station ca root sign-station`."
        )
    if root.issuer != root.subject:
        raise StationError(
            "The chain does not end in a self-signed root — give the whole CHAIN.pem (station CA first, root last)."
        )
    for child, parent in zip(chain, chain[1:] + [root], strict=True):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:
            raise StationError(
                f"{child.subject.rfc4514_string()} is not signed by {parent.subject.rfc4514_string()} — the chain "
                "is damaged or mixed up; export it again from the root."
            ) from None
    for cert in chain:
        if not cert.not_valid_before_utc - CLOCK_SKEW_ALLOWANCE <= now < cert.not_valid_after_utc:
            raise StationError(
                f"{cert.subject.rfc4514_string()} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d}, which does not include now — check the clock or renew it."
            )


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def device_subject(template: str, *, serial: str, utf8: bool = False, **fields: str) -> x509.Name:
    """The subject of a device certificate: the profile's ``-subj`` template filled in with the scanned serial.

    The one place a device's subject is built — for the CSR check and for the certificate — so the certificate
    carries the station's own encoding (UTF8String), never whatever the device's CSR used.  ``fields`` fills
    further ``{placeholders}`` a profile's template may have (e.g. an identifier read from the SoC).
    """
    return parse_openssl_subject(template.format(serial=serial, **fields), utf8=utf8)


def _same_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*fmt) == b.public_bytes(*fmt)


def _as_signing_key(key: object, what: str) -> _SigningKey:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    raise StationError(f"{what} is a {type(key).__name__}; the station's CA signs with RSA or EC keys only.")


def _load_own_private_key(path: Path, passphrase: bytes) -> _SigningKey:
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        # cryptography raises TypeError when a password is given for an unencrypted key.
        raise StationError(
            f"{path} is not encrypted — the CA's keys must be stored encrypted. Move the CA directory "
            "away and `station ca import` the key with a passphrase."
        ) from None
    except ValueError:
        raise StationError(
            f"CA passphrase is wrong for {path} (or the file is damaged) — check STATION_CA_PASSPHRASE "
            "or type the passphrase again."
        ) from None
    return _as_signing_key(key, str(path))


def _import_private_key(key_pem: bytes, key_password: bytes | None) -> _SigningKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=key_password)
    except TypeError:
        if key_password is None:
            raise StationError(
                "The CA key to import is encrypted — give its password "
                "(`station ca import --key-password-env VAR` with the password in $VAR)."
            ) from None
        raise StationError(
            "The CA key to import is not encrypted but a password was given — run again without one."
        ) from None
    except ValueError:
        raise StationError(
            "The CA key to import could not be read: its password is wrong, or the file is not a PEM "
            "private key — check the password and that you gave the key (ca.key), not the certificate."
        ) from None
    signing_key = _as_signing_key(key, "The CA key to import")
    public = signing_key.public_key()
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
        raise StationError(
            f"The CA key to import is RSA-{public.key_size}; at least 2048 bits are needed — create a new CA."
        )
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name not in ("secp256r1", "secp384r1"):
        raise StationError(
            f"The CA key to import uses curve {public.curve.name}; the station supports secp256r1 and "
            "secp384r1 — create a new CA."
        )
    return signing_key


def _check_importable_ca(key: _SigningKey, cert: x509.Certificate, *, now: datetime) -> None:
    if not _same_key(key.public_key(), cert.public_key()):
        raise StationError(
            "The CA key and certificate to import do not belong together — give the key that the "
            "certificate was made for."
        )
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise StationError(
            f"The certificate to import ({cert.subject.rfc4514_string()}) is not a CA certificate "
            "(no basicConstraints CA:TRUE) — give the CA's own certificate."
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None  # no keyUsage extension: every usage is allowed (the tutorial's CA)
    if usage is not None and not (usage.key_cert_sign and usage.crl_sign):
        raise StationError(
            "The CA certificate to import does not allow signing certificates and CRLs "
            "(keyUsage keyCertSign, cRLSign) — create a new CA with `station ca init`."
        )
    if cert.issuer != cert.subject:
        raise StationError(
            f"The CA certificate to import is issued by {cert.issuer.rfc4514_string()}, not self-signed — "
            "the station needs a root CA, because devices trust ca.cert alone."
        )
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # InvalidSignature, or a signature algorithm we cannot check
        raise StationError(
            "The CA certificate to import has a signature that does not verify — it is damaged; "
            "export it again from the original CA."
        ) from None
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise StationError(
            f"The CA certificate to import is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, which does not include today — use a valid CA."
        )


# ---------------------------------------------------------------------------------------------
# CSR policy
# ---------------------------------------------------------------------------------------------


class CsrRejected(StationError):
    """A device's CSR broke the station's policy; nothing was signed.

    ``code`` is a short stable tag for the audit log and tests (``subject-mismatch``, …); the
    message is for the technician.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CsrPolicy:
    """Which device keys the station will certify, and how large a CSR may be."""

    rsa_key_sizes: frozenset[int] = field(default_factory=lambda: frozenset({2048, 3072, 4096}))
    ec_curves: frozenset[str] = field(default_factory=lambda: frozenset({"secp256r1", "secp384r1"}))
    # A CSR for one key and one CN is < 2 KiB; anything much larger is not what the token made.
    max_pem_bytes: int = 16384

    @classmethod
    def for_key_type(cls, key_type: str) -> CsrPolicy:
        """The policy for a profile's ``key_type`` (``rsa:2048``, ``EC:prime256v1`` …): only the key the profile's
        keygen makes is certified, so a token that made another kind of key is caught before signing."""
        kind, _, size = key_type.partition(":")
        if kind.lower() == "rsa" and size.isdigit():
            return cls(rsa_key_sizes=frozenset({int(size)}), ec_curves=frozenset())
        if kind.upper() == "EC" and size:
            # pkcs11-tool names the NIST P-256 curve prime256v1; cryptography names it secp256r1.
            return cls(rsa_key_sizes=frozenset(), ec_curves=frozenset({_CURVE_NAMES.get(size, size)}))
        raise ValueError(f"key type {key_type!r} is not RSA:<bits> or EC:<curve>")

    def allowed_keys(self) -> str:
        sizes = "/".join(str(size) for size in sorted(self.rsa_key_sizes))
        curves = "/".join(sorted(self.ec_curves))
        kinds = ([f"RSA {sizes}"] if sizes else []) + ([f"EC {curves}"] if curves else [])
        return " or ".join(kinds)


_CURVE_NAMES = {"prime256v1": "secp256r1"}


_REPROVISION = "wipe the unit's token and provision it again"


def _extension_name(oid: x509.ObjectIdentifier) -> str:
    name = oid._name  # cryptography's registry of well-known names; "Unknown OID" otherwise
    return oid.dotted_string if name == "Unknown OID" else f"{name} ({oid.dotted_string})"


def check_csr(
    csr_pem: bytes,
    *,
    expected_subject: x509.Name,
    policy: CsrPolicy,
    token_public_key: PublicKeyTypes | None = None,
    public_key_seen: Callable[[str], bool] | None = None,
) -> x509.CertificateSigningRequest:
    """Return the parsed CSR if the station may sign it, else raise :class:`CsrRejected`.

    The CSR comes from a device the station does not trust yet, so every field is checked and
    the first problem found is reported with what to do about it.  The CSR may carry nothing
    but the expected subject and an allowed public key: no extensions and no attributes.
    ``token_public_key`` is the key read from the token by other means; ``public_key_seen`` is
    asked (with :func:`spki_sha256` of the key) whether another unit already has this key.
    """
    if len(csr_pem) > policy.max_pem_bytes:
        raise CsrRejected(
            "csr-too-large",
            f"The CSR is {len(csr_pem)} bytes, more than the {policy.max_pem_bytes} a device CSR can be — "
            f"it is not the request the token made; {_REPROVISION}.",
        )
    if csr_pem.count(b"-----BEGIN ") != 1:
        raise CsrRejected(
            "csr-not-pem",
            "The device's answer is not one PEM certificate request (expected exactly one "
            f"'-----BEGIN CERTIFICATE REQUEST-----' block) — check the CSR step's output, then {_REPROVISION}.",
        )
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except Exception:  # hostile input: whatever fails to parse is rejected, never a traceback
        raise CsrRejected(
            "csr-not-pem",
            "The device's answer is not a readable PEM certificate request — check the CSR step's output, "
            f"then {_REPROVISION}.",
        ) from None

    try:
        signature_ok = csr.is_signature_valid
    except Exception:  # e.g. a signature algorithm that cannot be checked
        signature_ok = False
    if not signature_ok:
        raise CsrRejected(
            "csr-bad-signature",
            "The CSR's signature does not verify: it was altered on the way or was not signed with its "
            f"own key — provision the unit again; if it happens again, {_REPROVISION}.",
        )

    _check_subject(csr, expected_subject)
    _check_key(csr.public_key(), policy)
    _check_requested_extensions(csr)

    public_key = csr.public_key()
    if token_public_key is not None and not _same_key(public_key, token_public_key):
        raise CsrRejected(
            "key-not-token",
            f"The CSR's public key (SPKI sha256 {spki_sha256(public_key)[:16]}…) is not the key in the unit's "
            f"token (SPKI sha256 {spki_sha256(token_public_key)[:16]}…) — the CSR was not made with the "
            f"token's key; {_REPROVISION}.",
        )
    fingerprint = spki_sha256(public_key)
    if public_key_seen is not None and public_key_seen(fingerprint):
        raise CsrRejected(
            "key-reused",
            f"This public key (SPKI sha256 {fingerprint[:16]}…) was already certified for another unit — "
            f"every board needs its own key; {_REPROVISION}.",
        )
    return csr


def _check_subject(csr: x509.CertificateSigningRequest, expected: x509.Name) -> None:
    try:
        subject = csr.subject
        values = [attribute.value for attribute in subject]
        for value in values:
            if not isinstance(value, str):
                raise ValueError("binary attribute value")
            value.encode("utf-8")  # rejects lone surrogates a BMPString could smuggle in
    except (ValueError, UnicodeError):
        raise CsrRejected(
            "subject-not-utf8",
            "The CSR's subject holds text that is not valid UTF-8 (or not text at all) — the request "
            f"is damaged or forged; {_REPROVISION}.",
        ) from None
    if len(subject) == 0:
        raise CsrRejected(
            "subject-empty",
            f"The CSR's subject is empty but must be {expected.rfc4514_string()} — check the profile's "
            f"subject template (-subj), then {_REPROVISION}.",
        )
    if subject != expected:
        raise CsrRejected(
            "subject-mismatch",
            f"The CSR's subject is {subject.rfc4514_string()!r} but this unit must be "
            f"{expected.rfc4514_string()!r} — check that the scanned serial matches the board in the "
            f"fixture, then {_REPROVISION}.",
        )


def _check_key(public_key: PublicKeyTypes, policy: CsrPolicy) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size not in policy.rsa_key_sizes:
            raise CsrRejected(
                "key-size-not-allowed",
                f"The CSR's key is RSA-{public_key.key_size}; the station certifies {policy.allowed_keys()} — "
                f"{_REPROVISION} with an allowed key size.",
            )
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in policy.ec_curves:
            raise CsrRejected(
                "key-curve-not-allowed",
                f"The CSR's key uses the curve {public_key.curve.name}; the station certifies "
                f"{policy.allowed_keys()} — {_REPROVISION} with an allowed curve.",
            )
        return
    raise CsrRejected(
        "key-algorithm-not-allowed",
        f"The CSR's key is {describe_key_type(public_key)}; the station certifies {policy.allowed_keys()} — "
        f"{_REPROVISION} with an allowed key type.",
    )


def _check_requested_extensions(csr: x509.CertificateSigningRequest) -> None:
    try:
        attributes = list(csr.attributes)
        extensions = list(csr.extensions)
    except Exception:  # duplicate or malformed extensions in hostile input
        raise CsrRejected(
            "extensions-unreadable",
            f"The CSR's requested extensions or attributes cannot be read — the request is malformed; {_REPROVISION}.",
        ) from None
    for attribute in attributes:
        if attribute.oid != _EXTENSION_REQUEST:
            raise CsrRejected(
                "attribute-not-allowed",
                f"The CSR carries the attribute {_extension_name(attribute.oid)}; a device CSR carries none — "
                f"check the device's openssl config, then {_REPROVISION}.",
            )
    # Most dangerous first, so the message names the worst thing asked for.
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise CsrRejected(
                "ext-ca-requested",
                "The CSR asks to be a CA (basicConstraints CA:TRUE) — a device must never be able to sign "
                f"certificates; check the device's openssl config (req_extensions), then {_REPROVISION}.",
            )
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
            raise CsrRejected(
                "ext-cert-sign-requested",
                "The CSR asks for the keyCertSign/cRLSign key usage — a device must never sign certificates "
                f"or CRLs; check the device's openssl config (req_extensions), then {_REPROVISION}.",
            )
    for extension in extensions:
        if extension.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            names = ", ".join(str(name.value) for name in extension.value)
            raise CsrRejected(
                "ext-san-requested",
                f"The CSR asks for a subjectAltName ({names}) — a device certificate names only the serial "
                f"in its subject; check the device's openssl config (req_extensions), then {_REPROVISION}.",
            )
    for extension in extensions:
        raise CsrRejected(
            "ext-not-allowed",
            f"The CSR requests the extension {_extension_name(extension.oid)} — the station sets every "
            f"extension itself and accepts none from devices; check the device's openssl config "
            f"(req_extensions), then {_REPROVISION}.",
        )


# ---------------------------------------------------------------------------------------------
# openssl -subj templates
# ---------------------------------------------------------------------------------------------

# OpenSSL's short and long names (OBJ_txt2nid is case-sensitive, and so is this table).
_NAME_OIDS: Final[dict[str, x509.ObjectIdentifier]] = {
    "CN": NameOID.COMMON_NAME,
    "commonName": NameOID.COMMON_NAME,
    "C": NameOID.COUNTRY_NAME,
    "countryName": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "localityName": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "stateOrProvinceName": NameOID.STATE_OR_PROVINCE_NAME,
    "street": NameOID.STREET_ADDRESS,
    "streetAddress": NameOID.STREET_ADDRESS,
    "O": NameOID.ORGANIZATION_NAME,
    "organizationName": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "organizationalUnitName": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "SN": NameOID.SURNAME,
    "surname": NameOID.SURNAME,
    "GN": NameOID.GIVEN_NAME,
    "givenName": NameOID.GIVEN_NAME,
    "title": NameOID.TITLE,
    "initials": NameOID.INITIALS,
    "pseudonym": NameOID.PSEUDONYM,
    "dnQualifier": NameOID.DN_QUALIFIER,
    "generationQualifier": NameOID.GENERATION_QUALIFIER,
    "postalCode": NameOID.POSTAL_CODE,
    "businessCategory": NameOID.BUSINESS_CATEGORY,
    "UID": NameOID.USER_ID,
    "userId": NameOID.USER_ID,
    "DC": NameOID.DOMAIN_COMPONENT,
    "domainComponent": NameOID.DOMAIN_COMPONENT,
    "emailAddress": NameOID.EMAIL_ADDRESS,
}
_DOTTED_OID = re.compile(r"[0-2](\.[0-9]+)+")


def parse_openssl_subject(template: str, *, utf8: bool = False) -> x509.Name:
    """The :class:`x509.Name` that ``openssl req -subj TEMPLATE`` puts in the CSR, for comparison.

    Follows OpenSSL 3's ``parse_name``: ``/type=value`` pairs in order (the first is the first RDN),
    ``\\`` escapes the next character, ``+`` joins the next pair to the same (multi-valued) RDN, a
    trailing ``/`` is allowed.  Where openssl would only warn and *skip* a pair (unknown type,
    empty value) this raises :class:`ConfigError` instead, because the device's CSR would then not
    carry what the template says.  Non-ASCII values are refused unless ``utf8`` is true: without
    ``-utf8`` openssl reads the bytes as Latin-1 and the subject would never match.
    """
    if not template.startswith("/"):
        raise ConfigError(
            f"Subject template {template!r} must look like /type0=value0/type1=value1 (for example "
            "/CN=serial:{serial}/), as openssl req -subj expects."
        )
    rdns: list[list[x509.NameAttribute[str]]] = []
    position, joins_previous = 1, False
    while position < len(template):
        equals = template.find("=", position)
        if equals < 0:
            raise ConfigError(f"Subject template {template!r}: missing '=' after {template[position:]!r}.")
        type_name = template[position:equals]
        position = equals + 1
        value: list[str] = []
        next_joins = False
        while position < len(template) and template[position] != "/":
            char = template[position]
            if char == "+":
                next_joins = True
                break
            if char == "\\":
                position += 1
                if position == len(template):
                    raise ConfigError(f"Subject template {template!r} ends with an escape character '\\'.")
                char = template[position]
            value.append(char)
            position += 1
        position += 1  # past the '/' or '+' (or the end)
        text = "".join(value)
        oid = _NAME_OIDS.get(type_name)
        if oid is None and _DOTTED_OID.fullmatch(type_name):
            oid = x509.ObjectIdentifier(type_name)
        if oid is None:
            raise ConfigError(
                f"Subject template {template!r}: unknown attribute type {type_name!r} — use an openssl "
                "name such as CN, O, OU, C, serialNumber, or a dotted OID."
            )
        if not text:
            raise ConfigError(f"Subject template {template!r}: {type_name} has no value.")
        if not utf8 and not text.isascii():
            raise ConfigError(
                f"Subject template {template!r}: {type_name} has non-ASCII text; openssl req needs -utf8 "
                "for that — add it to the profile's CSR command and mark the template as UTF-8."
            )
        try:
            attribute = x509.NameAttribute(oid, text)
        except ValueError as exc:
            raise ConfigError(
                f"Subject template {template!r}: {type_name}={text!r} is not allowed ({exc})."
            ) from None
        if joins_previous and rdns:
            rdns[-1].append(attribute)
        else:
            rdns.append([attribute])
        joins_previous = next_joins
    if not rdns:
        raise ConfigError(f"Subject template {template!r} names no attribute — give at least /CN=….")
    try:
        return x509.Name([x509.RelativeDistinguishedName(rdn) for rdn in rdns])
    except ValueError as exc:
        raise ConfigError(f"Subject template {template!r}: {exc}.") from None
