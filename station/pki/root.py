"""The offline root CA: created once on a machine kept off the line, it certifies each station's issuing CA.

A root directory holds ``root.cert`` and either ``root.key`` (PKCS#8 under scrypt, see :mod:`station.pki.der`)
or ``token.toml`` (the root key in a PKCS#11 token), plus ``issued/`` — a copy of every station CA certificate
it signed, named by serial, as the ceremony's record.  The root signs station CAs only: ``pathLen 0`` below
it, name constraints (the station's TLS names) and a validity inside the root's, and optionally an issuance
limit the station enforces (:data:`station.pki.MAX_CERTIFICATES_OID`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from station.errors import StationError
from station.pki import (
    CLOCK_SKEW_ALLOWANCE,
    MAX_CERTIFICATES_OID,
    ROOT_CERT_FILE,
    _authority_key_identifier,
    _check_new_passphrase,
    _check_private,
    _encrypted_pem,
    _generate_key,
    _key_usage,
    _load_own_private_key,
    _make_private_directory,
    _now,
    _sign_certificate,
    _Signer,
    read_certificate,
    write_file_atomically,
)
from station.pki.der import integer
from station.pki.token import TOKEN_FILE, TokenKey, TokenSettings

ROOT_KEY_FILE: Final = "root.key"
ISSUED_DIR: Final = "issued"
ROOT_KEY_TYPES: Final = ("ec-p384", "ec-p256", "rsa-3072")
# The names a station's TLS server certificate carries by default (system.cert: localhost, 127.0.0.1).
DEFAULT_PERMITTED_DNS: Final = ("localhost",)
DEFAULT_PERMITTED_IP: Final = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class RootCA:
    directory: Path
    certificate: x509.Certificate

    @property
    def certificate_path(self) -> Path:
        return self.directory / ROOT_CERT_FILE


def _root_name(common_name: str, organization: str) -> x509.Name:
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _refuse_existing_root(directory: Path) -> None:
    existing = [name for name in (ROOT_KEY_FILE, ROOT_CERT_FILE, TOKEN_FILE) if (directory / name).exists()]
    if existing:
        raise StationError(
            f"A root CA already exists in {directory} ({', '.join(existing)}) — refusing to overwrite it; "
            "every station CA it signed depends on it. Choose another --out directory."
        )


# long: the offline root's creation in order: key in a token or a file, its certificate, the files
def init_root(
    directory: Path,
    *,
    common_name: str,
    organization: str = "",
    validity_days: int = 7300,
    key_type: str = "ec-p384",
    passphrase: bytes | None = None,
    token: TokenSettings | None = None,
    pin: str | None = None,
    now: datetime | None = None,
) -> RootCA:
    """Create the offline root: a key (in a token, or a file under scrypt) and its self-signed certificate."""
    if validity_days < 1:
        raise StationError(f"A root valid for {validity_days} days is not possible — give at least 1.")
    _refuse_existing_root(directory)
    now = _now(now)
    signer: _Signer
    if token is not None:
        if pin is None:
            raise StationError("The root's token PIN is needed.")
        signer = TokenKey.generate(token, pin=pin, key_type=key_type)
    else:
        if passphrase is None:
            raise StationError("The root key's passphrase is needed.")
        _check_new_passphrase(passphrase)
        signer = _generate_key(key_type)
    public_key = signer.public_key()
    name = _root_name(common_name, organization)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + timedelta(days=validity_days))
        # pathLen 1: a root certifies station CAs, and those certify devices only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            _key_usage(digital_signature=False, key_encipherment=False, cert_sign=True), critical=True
        )
        .add_extension(ski, critical=False)
    )
    try:
        certificate = _sign_certificate(builder, signer)
    finally:
        if isinstance(signer, TokenKey):
            signer.close()
    _make_private_directory(directory)
    if token is not None:
        write_file_atomically(
            directory / TOKEN_FILE, token.to_toml().encode("utf-8"), mode=0o600, replace=False
        )
    else:
        assert passphrase is not None and not isinstance(signer, TokenKey)
        write_file_atomically(
            directory / ROOT_KEY_FILE, _encrypted_pem(signer, passphrase), mode=0o600, replace=False
        )
    write_file_atomically(
        directory / ROOT_CERT_FILE,
        certificate.public_bytes(serialization.Encoding.PEM),
        mode=0o644,
        replace=False,
    )
    (directory / ISSUED_DIR).mkdir(mode=0o700, exist_ok=True)
    return RootCA(directory, certificate)


def root_uses_token(directory: Path) -> bool:
    return (directory / TOKEN_FILE).exists()


def _open_root_signer(directory: Path, *, passphrase: bytes | None, pin: str | None) -> _Signer:
    if root_uses_token(directory):
        if pin is None:
            raise StationError("The root's key is in a token — its PIN is needed.")
        return TokenKey.open(TokenSettings.read(directory / TOKEN_FILE), pin=pin)
    key_path = directory / ROOT_KEY_FILE
    if not key_path.exists():
        raise StationError(
            f"{directory} holds no root CA (no {ROOT_KEY_FILE} or {TOKEN_FILE}) — give the root's --root directory."
        )
    _check_private(key_path)
    if passphrase is None:
        raise StationError("The root key's passphrase is needed.")
    return _load_own_private_key(key_path, passphrase)


def _station_request(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """The station's CSR, refused unless it is PEM and its signature verifies."""
    try:
        request = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise StationError(
            "The CSR file is not a PEM certificate request — give the station-ca.csr that `station ca init` wrote."
        ) from None
    if not request.is_signature_valid:
        raise StationError("The CSR's signature does not verify — it was altered on the way; make it again.")
    return request


def _name_constraints(permitted_dns: tuple[str, ...], permitted_ip: tuple[str, ...]) -> x509.NameConstraints:
    """Where the station CA's certificates may name servers: these DNS subtrees and IP networks."""
    try:
        networks = [x509.IPAddress(ipaddress.ip_network(net)) for net in permitted_ip]
    except ValueError as exc:
        raise StationError(f"--permit-ip: {exc} — give networks like 10.3.0.0/16.") from None
    return x509.NameConstraints(
        permitted_subtrees=[*(x509.DNSName(dns) for dns in permitted_dns), *networks], excluded_subtrees=None
    )


def sign_station(
    directory: Path,
    csr_pem: bytes,
    *,
    name: str,
    days: int = 1825,
    max_certificates: int | None = None,
    permitted_dns: tuple[str, ...] = DEFAULT_PERMITTED_DNS,
    permitted_ip: tuple[str, ...] = DEFAULT_PERMITTED_IP,
    passphrase: bytes | None = None,
    pin: str | None = None,
    now: datetime | None = None,
) -> tuple[x509.Certificate, bytes]:
    """Certify a station's issuing CA from its CSR; return its certificate and the chain PEM (station CA, root)."""
    if not name.strip():
        raise StationError("--name must name the station or line, e.g. LINE-3.")
    if days < 1:
        raise StationError(f"A station CA valid for {days} days is not possible — give at least 1.")
    if max_certificates is not None and max_certificates < 1:
        raise StationError(f"--max-certificates {max_certificates} is not possible — give at least 1.")
    request = _station_request(csr_pem)
    root_cert = read_certificate(directory / ROOT_CERT_FILE)
    now = _now(now)
    not_after = min(now + timedelta(days=days), root_cert.not_valid_after_utc)
    constraints = _name_constraints(permitted_dns, permitted_ip)
    public_key = request.public_key()
    organization = root_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    subject = _root_name(f"{name} Issuing CA", str(organization[0].value) if organization else "")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CLOCK_SKEW_ALLOWANCE, root_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # digitalSignature as well: the station CA also signs its audit log's checkpoints.
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=False, cert_sign=True), critical=True
        )
        .add_extension(constraints, critical=True)  # RFC 5280 4.2.1.10: MUST be critical
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(root_cert), critical=False)
    )
    if max_certificates is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(MAX_CERTIFICATES_OID, integer(max_certificates)), critical=False
        )
    signer = _open_root_signer(directory, passphrase=passphrase, pin=pin)
    try:
        certificate = _sign_certificate(builder, signer)
    finally:
        if isinstance(signer, TokenKey):
            signer.close()
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    issued = directory / ISSUED_DIR
    issued.mkdir(mode=0o700, exist_ok=True)
    write_file_atomically(issued / f"{certificate.serial_number:x}.pem", pem, mode=0o644, replace=False)
    return certificate, pem + root_cert.public_bytes(serialization.Encoding.PEM)
