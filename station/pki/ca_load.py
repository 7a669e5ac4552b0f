"""Loading and importing a CA: its keys, its chain, the extensions it writes into device certificates."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID

from station.errors import StationError
from station.pki.certs import CLOCK_SKEW_ALLOWANCE, _SigningKey


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
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
        )
    if ca_issuers_url:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(ca_issuers_url)
            )
        )
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
