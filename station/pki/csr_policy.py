"""What a device's CSR may ask for (:func:`check_csr`); the station decides everything but the public key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtensionOID

from station.errors import StationError
from station.pki.ca_load import _same_key
from station.pki.certs import _EXTENSION_REQUEST, describe_key_type, spki_sha256

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


def _possessed_device_key(
    csr: x509.CertificateSigningRequest,
) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The CSR's public key, once its signature proves the device holds the key and it is RSA or EC."""
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
    return public_key


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
