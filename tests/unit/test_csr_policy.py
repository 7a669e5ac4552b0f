"""The CSR policy: what a board may ask the station to certify, and the subject template parser.

The board is not trusted until its CSR passes, so each hostile request below must be refused
with its own plain reason, and a genuine one — including one made by the real ``openssl req``
the way the Welma tutorial makes it — must pass.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from station.errors import ConfigError
from station.pki import CsrPolicy, CsrRejected, check_csr, parse_openssl_subject, spki_sha256
from tests.helpers.csr import (
    EXPECTED,
    SERIAL,
    Key,
    csr_pem,
    csr_with_non_utf8_subject,
    token_key,
)

POLICY = CsrPolicy()
OPENSSL_TIMEOUT_S = 30


def csr_with_tampered_signature() -> bytes:
    der = bytearray(x509.load_pem_x509_csr(csr_pem()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s value: still DER, no longer valid
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


def oversized_csr() -> bytes:
    """A correctly signed CSR for the right subject and key, stuffed with 800 alternative names."""
    names = [x509.DNSName(f"unit-{i}.factory.example") for i in range(800)]
    return csr_pem(extensions=(x509.SubjectAlternativeName(names),))


def no_usage(**granted: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    return x509.KeyUsage(**{**flags, **granted})


def cn(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


# Each hostile kind: how to make it, the extra check_csr arguments, the code and a phrase of the reason.
Case = tuple[Callable[[], bytes], dict[str, object], str, str]
HOSTILE: dict[str, Case] = {
    "subject not the serial": (
        lambda: csr_pem(subject=cn("serial:202600000000002")),
        {},
        "subject-mismatch",
        "'CN=serial:202600000000002' but this unit must be 'CN=serial:202600000000001'",
    ),
    "extra subjectAltName": (
        lambda: csr_pem(extensions=(x509.SubjectAlternativeName([x509.DNSName("bank.example")]),)),
        {},
        "ext-san-requested",
        "subjectAltName (bank.example)",
    ),
    "CA:TRUE requested": (
        lambda: csr_pem(extensions=(x509.BasicConstraints(ca=True, path_length=None),)),
        {},
        "ext-ca-requested",
        "asks to be a CA (basicConstraints CA:TRUE)",
    ),
    "keyCertSign requested": (
        lambda: csr_pem(extensions=(no_usage(digital_signature=True, key_cert_sign=True),)),
        {},
        "ext-cert-sign-requested",
        "keyCertSign/cRLSign",
    ),
    "other extension requested": (
        lambda: csr_pem(extensions=(x509.BasicConstraints(ca=False, path_length=None),)),
        {},
        "ext-not-allowed",
        "basicConstraints (2.5.29.19)",
    ),
    "RSA-1024": (
        lambda: csr_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        {},
        "key-size-not-allowed",
        "RSA-1024",
    ),
    "forbidden curve secp521r1": (
        lambda: csr_pem(ec.generate_private_key(ec.SECP521R1())),
        {},
        "key-curve-not-allowed",
        "curve secp521r1",
    ),
    "Ed25519 key": (
        lambda: csr_pem(ed25519.Ed25519PrivateKey.generate()),
        {},
        "key-algorithm-not-allowed",
        "key is ed25519",
    ),
    "bad signature": (csr_with_tampered_signature, {}, "csr-bad-signature", "signature does not verify"),
    "key not the token's": (
        lambda: csr_pem(ec.generate_private_key(ec.SECP256R1())),
        {"token_public_key": token_key().public_key()},
        "key-not-token",
        "is not the key in the unit's token",
    ),
    "empty subject": (lambda: csr_pem(subject=x509.Name([])), {}, "subject-empty", "subject is empty"),
    "oversized PEM": (oversized_csr, {}, "csr-too-large", "more than the 16384"),
    "non-UTF-8 subject": (csr_with_non_utf8_subject, {}, "subject-not-utf8", "not valid UTF-8"),
    "public key already used": (
        csr_pem,
        {"public_key_seen": lambda spki: True},
        "key-reused",
        "already certified for another unit",
    ),
    "not a CSR at all": (
        lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n",
        {},
        "csr-not-pem",
        "not a readable PEM certificate request",
    ),
    "two PEM blocks": (lambda: csr_pem() + csr_pem(), {}, "csr-not-pem", "exactly one"),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_csr_is_refused_with_its_own_reason(kind: str) -> None:
    make, extra, code, phrase = HOSTILE[kind]

    with pytest.raises(CsrRejected) as refused:
        check_csr(make(), expected_subject=EXPECTED, policy=POLICY, **extra)  # type: ignore[arg-type]

    assert refused.value.code == code
    assert phrase in str(refused.value)
    # ...and it tells the technician what to do next.
    assert "provision" in str(refused.value)


def test_every_hostile_kind_gets_a_different_reason() -> None:
    reasons: dict[str, str] = {}
    for kind, (make, extra, _, _) in HOSTILE.items():
        with pytest.raises(CsrRejected) as refused:
            check_csr(make(), expected_subject=EXPECTED, policy=POLICY, **extra)  # type: ignore[arg-type]
        reasons[kind] = str(refused.value)

    assert len(set(reasons.values())) == len(reasons), reasons


def test_the_worst_requested_extension_is_the_one_named() -> None:
    pem = csr_pem(
        extensions=(
            x509.SubjectAlternativeName([x509.DNSName("x.example")]),
            no_usage(key_cert_sign=True),
            x509.BasicConstraints(ca=True, path_length=None),
        )
    )
    with pytest.raises(CsrRejected) as refused:
        check_csr(pem, expected_subject=EXPECTED, policy=POLICY)
    assert refused.value.code == "ext-ca-requested"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: token_key(), id="ec-p256"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="ec-p384"),
        pytest.param(lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), id="rsa-2048"),
        pytest.param(lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072), id="rsa-3072"),
    ],
)
def test_a_genuine_csr_is_accepted(key: Callable[[], Key]) -> None:
    private = key()
    asked: list[str] = []

    def seen(spki: str) -> bool:
        asked.append(spki)
        return False

    accepted = check_csr(
        csr_pem(private),
        expected_subject=EXPECTED,
        policy=POLICY,
        token_public_key=private.public_key(),
        public_key_seen=seen,
    )

    assert accepted.subject == EXPECTED
    assert asked == [spki_sha256(private.public_key())]


def test_a_csr_made_the_tutorials_way_by_openssl_req_is_accepted(tmp_path: Path) -> None:
    key_file, csr_file = tmp_path / "key0.pem", tmp_path / "key0.csr"
    for argv in (
        ["genrsa", "-out", key_file, "2048"],
        ["req", "-new", "-batch", "-key", key_file, "-subj", f"/CN=serial:{SERIAL}/", "-out", csr_file],
    ):
        done = subprocess.run(
            ["openssl", *map(str, argv)],
            capture_output=True,
            text=True,
            timeout=OPENSSL_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    token_public = serialization.load_pem_private_key(key_file.read_bytes(), password=None).public_key()

    accepted = check_csr(
        csr_file.read_bytes(), expected_subject=EXPECTED, policy=POLICY, token_public_key=token_public
    )

    assert accepted.subject.rfc4514_string() == f"CN=serial:{SERIAL}"


def test_a_stricter_policy_can_refuse_rsa_2048() -> None:
    policy = CsrPolicy(rsa_key_sizes=frozenset({3072, 4096}))
    with pytest.raises(CsrRejected, match="RSA 3072/4096 or EC secp256r1/secp384r1"):
        check_csr(
            csr_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            expected_subject=EXPECTED,
            policy=policy,
        )


# --- parse_openssl_subject ----------------------------------------------------------------------


def openssl_subject(tmp_path: Path, template: str, *extra: str) -> x509.Name:
    """The subject that the real `openssl req -subj TEMPLATE` writes into a CSR."""
    key_file, csr_file = tmp_path / "k.pem", tmp_path / "k.csr"
    key_file.write_bytes(
        token_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    done = subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-batch",
            "-key",
            str(key_file),
            "-subj",
            template,
            *extra,
            "-out",
            str(csr_file),
        ],
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return x509.load_pem_x509_csr(csr_file.read_bytes()).subject


@pytest.mark.parametrize(
    "template",
    [
        "/CN=serial:202600000000001/",
        "/CN=serial:202600000000001",
        r"/O=Acme\/Widgets/OU=Line 3/CN=serial:202600000000001",
        "/C=FR/O=Acme/CN=unit+serialNumber=202600000000001/",
        "/DC=example/DC=factory/CN=serial:1",
        r"/CN=a\+b\\c",
    ],
)
def test_template_gives_exactly_the_subject_openssl_req_writes(tmp_path: Path, template: str) -> None:
    ours = parse_openssl_subject(template)
    theirs = openssl_subject(tmp_path, template)

    assert ours == theirs
    # Same RDN order and the same ASN.1 string types, byte for byte.
    assert ours.public_bytes() == theirs.public_bytes()


def test_first_rdn_of_the_template_is_the_first_rdn_of_the_name() -> None:
    name = parse_openssl_subject(r"/O=Acme\/Widgets/CN=serial:1/")

    assert [rdn.rfc4514_string() for rdn in name.rdns] == ["O=Acme/Widgets", "CN=serial:1"]
    assert name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Acme/Widgets"


def test_plus_joins_a_multi_valued_rdn() -> None:
    name = parse_openssl_subject("/O=Acme/CN=unit+serialNumber=42")

    assert len(name.rdns) == 2
    assert {attribute.value for attribute in name.rdns[1]} == {"unit", "42"}


def test_non_ascii_needs_utf8_like_openssl(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="non-ASCII.*-utf8"):
        parse_openssl_subject("/O=Müller GmbH/CN=serial:1")

    name = parse_openssl_subject("/O=Müller GmbH/CN=serial:1", utf8=True)

    assert name == openssl_subject(tmp_path, "/O=Müller GmbH/CN=serial:1", "-utf8")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("CN=serial:1", "must look like /type0=value0"),
        ("/CN", "missing '='"),
        ("/CN=serial:1/XX=1", "unknown attribute type 'XX'"),
        ("/CN=", "CN has no value"),
        ("/CN=serial:1\\", "ends with an escape character"),
        ("/", "names no attribute"),
        ("/C=France/CN=x", "C='France' is not allowed"),
    ],
)
def test_bad_templates_are_configuration_errors(template: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_openssl_subject(template)
    assert problem in str(refused.value)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40))
def test_any_escaped_printable_value_round_trips(value: str) -> None:
    escaped = "".join("\\" + char if char in "/+\\" else char for char in value)

    name = parse_openssl_subject(f"/CN={escaped}/")

    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == value


@pytest.mark.parametrize(
    ("key_type", "allowed"),
    [
        ("rsa:2048", "RSA 2048"),
        ("rsa:4096", "RSA 4096"),
        ("EC:prime256v1", "EC secp256r1"),
        ("EC:secp384r1", "EC secp384r1"),
    ],
)
def test_the_policy_follows_the_profiles_key_type(key_type, allowed):
    assert CsrPolicy.for_key_type(key_type).allowed_keys() == allowed


def test_every_key_type_a_profile_may_name_has_a_policy():
    from station.profiles import KEY_TYPES

    for key_type in KEY_TYPES:
        policy = CsrPolicy.for_key_type(key_type)
        assert len(policy.rsa_key_sizes) + len(policy.ec_curves) == 1
