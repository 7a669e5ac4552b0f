"""The station's local certificate authority: init, load, CSR policy, device certificates, CRL.

The Welma enrolment tutorial signs each device CSR with ``openssl req -CA ca.cert -CAkey ca.key``.
With the stock openssl.cnf that applies the ``v3_ca`` section, so every *device* certificate comes
out ``CA:TRUE``: any board could then mint certificates for other serials.  This module is the
replacement: the CA certificate is ``CA:TRUE, pathlen:0`` (it can sign end entities only) and every
device certificate is an end entity (``CA:FALSE`` critical, ``digitalSignature`` and TLS
``clientAuth`` only).

A CA directory holds four files, named as in the tutorial so an operator can follow it with the
openssl command line: ``ca.key``/``ca.cert`` (the CA) and ``system.key``/``system.cert`` (the TLS
server the devices connect to).  Private keys are encrypted PKCS#8 PEM under the CA passphrase and
created with mode 0600; a decrypted key never touches the disk.

Before a CSR is signed it must pass :func:`check_csr`: the device is not trusted to ask only for
what it should, so the station decides everything in the certificate except the public key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from station.errors import ConfigError, StationError

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
    "RevokedEntry",
    "check_csr",
    "describe_key_type",
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

KEY_TYPES: Final = ("ec-p256", "rsa-2048", "rsa-3072")
# The passphrase guards the CA key at rest; cryptography's PKCS#8 encryption uses PBKDF2 with a
# modest iteration count, so the passphrase itself has to carry the strength.
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


def write_file_atomically(path: Path, data: bytes, *, mode: int, replace: bool) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing/the old file or the whole new one.

    The content goes to a temporary file in the same directory, created with ``mode`` from the
    start (never a moment with wider permissions), flushed with fsync, then moved into place.
    Without ``replace`` the move is ``os.link``, which fails if ``path`` exists: two stations
    initialising the same directory cannot overwrite each other's key.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; keys must be exactly 0600
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the new directory entry itself durable
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------------------------------------
# Key generation and certificate building
# ---------------------------------------------------------------------------------------------


def _generate_key(key_type: str) -> _SigningKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
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
    ca_key: _SigningKey,
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
    return builder.sign(ca_key, _HASH)


def _system_key_type_for(ca_public_key: PublicKeyTypes) -> str:
    if isinstance(ca_public_key, rsa.RSAPublicKey):
        return "rsa-3072" if ca_public_key.key_size >= 3072 else "rsa-2048"
    return "ec-p256"


def _encrypted_pem(key: _SigningKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


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
    existing = [name for name in CA_FILES if (directory / name).exists()]
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
        ca_key: _SigningKey,
        ca_cert: x509.Certificate,
        system_cert: x509.Certificate,
        passphrase: bytes,
    ) -> None:
        self._directory = directory
        self._ca_key = ca_key
        self._ca_cert = ca_cert
        self._system_cert = system_cert
        self._authority_key_id = _authority_key_identifier(ca_cert)
        # Kept only in memory, to hand the encrypted system.key to OpenSSL in ssl_server_context().
        self._passphrase = passphrase
        self._lock = threading.Lock()

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
        return cls(directory, ca_key=ca_key, ca_cert=ca_cert, system_cert=system_cert, passphrase=passphrase)

    @classmethod
    def load(cls, directory: Path, *, passphrase: bytes) -> CertificateAuthority:
        """Open the CA in ``directory``, decrypting its keys with ``passphrase``.

        Refuses key files that group or others can read or write: a CA key that leaked once
        can sign devices forever, so the station will not use one that may have.
        """
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
        return cls(directory, ca_key=ca_key, ca_cert=ca_cert, system_cert=system_cert, passphrase=passphrase)

    # --- what it is ---------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def certificate(self) -> x509.Certificate:
        return self._ca_cert

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate to install on devices (the tutorial's ``ca.cert``)."""
        return self._ca_cert.public_bytes(serialization.Encoding.PEM)

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

        The encrypted system.key is decrypted by OpenSSL in memory with the passphrase held here.
        With ``require_client_cert=False`` a client certificate is still asked for and verified if
        one is sent, but a client without one is let in.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(
            certfile=self.system_certificate_path,
            keyfile=self.system_key_path,
            password=self._passphrase,
        )
        context.load_verify_locations(cafile=self.certificate_path)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        return context

    def issue_device_certificate(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        validity_days: int,
        now: datetime | None = None,
        subject_serial_number: str | None = None,
    ) -> x509.Certificate:
        """Sign an end-entity TLS client certificate for a device from its (already checked) CSR.

        Only the subject and the public key come from the CSR; everything else is the station's
        decision.  ``subject_serial_number`` (the board's SoC unique id, when the profile asks) is added
        to the subject as a serialNumber attribute.  Run :func:`check_csr` first: this method re-checks only proof of possession.
        The certificate never outlives the CA certificate (``notAfter`` is clamped to the CA's).
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
        subject = csr.subject
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
            .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
            .not_valid_after(min(now + timedelta(days=validity_days), ca_not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_end_entity_key_usage(public_key), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_id, critical=False)
        )
        # One signature at a time: the CA key object is shared by all fixture slots.
        with self._lock:
            return builder.sign(self._ca_key, _HASH)

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
                .next_update(now + timedelta(days=next_update_days))
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
            return builder.sign(self._ca_key, _HASH).public_bytes(serialization.Encoding.PEM)

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

    def allowed_keys(self) -> str:
        sizes = "/".join(str(size) for size in sorted(self.rsa_key_sizes))
        curves = "/".join(sorted(self.ec_curves))
        return f"RSA {sizes} or EC {curves}"


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
