"""The CA itself: :class:`CertificateAuthority` (init, load, import, issue device certificates, CRL)."""

from __future__ import annotations

import os
import ssl
import threading
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from station.errors import StationError
from station.files import write_file_atomically  # re-exported: many modules import it from here
from station.pki.ca_load import (
    _check_importable_ca,
    _distribution_extensions,
    _import_private_key,
    _load_own_private_key,
    _same_key,
)
from station.pki.ca_token import TokenCaSetup
from station.pki.certs import (
    CA_CERT_FILE,
    CA_FILES,
    CA_KEY_FILE,
    CLOCK_SKEW_ALLOWANCE,
    CRL_NUMBER_FILE,
    KEY_TYPES,
    STATION_CSR_FILE,
    SYSTEM_CERT_FILE,
    SYSTEM_KEY_FILE,
    _authority_key_identifier,
    _check_validity_days,
    _encrypted_pem,
    _end_entity_key_usage,
    _generate_key,
    _now,
    _self_signed_ca,
    _sign_certificate,
    _sign_crl,
    _Signer,
    _SigningKey,
    _system_certificate,
    _system_key_type_for,
    _with_serial_number,
    describe_key_type,
    key_file_kdf,
    read_certificate,
    sign_bytes,
)
from station.pki.crl import RevokedEntry, _reason_flag
from station.pki.csr_policy import _possessed_device_key
from station.pki.directory import (
    _check_new_passphrase,
    _check_private,
    _make_private_directory,
    refuse_existing_ca,
)
from station.pki.quota import IssuanceQuota, max_certificates_of
from station.pki.token import TOKEN_FILE, TokenKey, TokenSettings

# ---------------------------------------------------------------------------------------------
# The CA
# ---------------------------------------------------------------------------------------------


def _close_descriptors(descriptors: list[int]) -> None:
    for fd in descriptors:
        os.close(fd)
    descriptors.clear()


class CertificateAuthority(TokenCaSetup):
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
            self._system_files = (
                self._memory_file("system.cert", cert_pem),
                self._memory_file("system.key", key_pem),
            )

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
        return cls(
            directory,
            ca_key=ca_key,
            ca_cert=ca_cert,
            system_cert=system_cert,
            passphrase=passphrase,
            system_key=system_key,
        )

    @classmethod
    def load(
        cls, directory: Path, *, passphrase: bytes | None = None, pin: str | None = None
    ) -> CertificateAuthority:
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
        return cls(
            directory,
            ca_key=ca_key,
            ca_cert=ca_cert,
            system_cert=system_cert,
            passphrase=passphrase,
            system_key=system_key,
        )

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
        public_key = _possessed_device_key(csr)
        now = _now(now)
        ca_not_after = self._ca_cert.not_valid_after_utc
        if now >= ca_not_after:
            raise StationError(
                f"The station CA certificate expired on {ca_not_after:%Y-%m-%d %H:%M} UTC — no device can "
                "be certified with it. Set up a new CA (`station ca init` in a new home, or `station ca import`)."
            )
        subject = _with_serial_number(subject if subject is not None else csr.subject, subject_serial_number)
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
            directory,
            ca_key=key,
            ca_cert=chain[0],
            system_cert=system_cert,
            passphrase=None,
            chain_pem=chain_pem,
            system_key=system_key,
        )
