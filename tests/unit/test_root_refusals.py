"""The offline root refuses a station CSR that is not PEM, one whose signature does not verify, and a
--permit-ip that is not a network — before anything is signed."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.errors import StationError
from station.pki.root import ISSUED_DIR, init_root, sign_station

PASSPHRASE = b"root passphrase for the refusals test"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "root"
    init_root(directory, common_name="Test Root", organization="Acme", passphrase=PASSPHRASE)
    return directory


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Station CA")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _nothing_issued(root: Path) -> bool:
    return not (root / ISSUED_DIR).exists() or not any((root / ISSUED_DIR).iterdir())


def test_a_csr_that_is_not_pem_is_refused(root: Path) -> None:
    with pytest.raises(StationError, match="is not a PEM certificate request — give the station-ca.csr"):
        sign_station(root, b"not a request", name="LINE-3", passphrase=PASSPHRASE)
    assert _nothing_issued(root)


def test_a_csr_altered_on_the_way_is_refused(root: Path) -> None:
    pem = _csr()
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature
    altered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(StationError, match="signature does not verify — it was altered on the way"):
        sign_station(root, altered, name="LINE-3", passphrase=PASSPHRASE)
    assert _nothing_issued(root)


def test_a_permitted_ip_that_is_not_a_network_is_refused(root: Path) -> None:
    with pytest.raises(StationError, match="--permit-ip: .* give networks like 10.3.0.0/16"):
        sign_station(root, _csr(), name="LINE-3", passphrase=PASSPHRASE, permitted_ip=("10.3.0.0/33",))
    assert _nothing_issued(root)


def test_a_good_csr_is_certified_within_the_permitted_names(root: Path) -> None:
    certificate, chain = sign_station(
        root, _csr(), name="LINE-3", passphrase=PASSPHRASE, permitted_dns=("line3.example",), permitted_ip=()
    )
    constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName("line3.example")]
    assert chain.count(b"BEGIN CERTIFICATE") == 2
