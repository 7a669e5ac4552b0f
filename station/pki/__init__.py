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
  CA passphrase with scrypt (:mod:`station.pki.der`), created with mode 0600; a decrypted key never touches
  the disk;
* a **station CA in a PKCS#11 token** (production): ``token.toml`` says where the key is
  (:mod:`station.pki.token`), ``station-ca.csr`` went to the offline root (:mod:`station.pki.root`), and
  ``ca.cert`` holds the chain it issued (this CA, then the root) — what devices install.  Its TLS server key
  lives in memory only, certified by the token at start-up.

Either way :class:`CertificateAuthority` is the one interface the sign step uses.

Before a CSR is signed it must pass :func:`check_csr`: the device is not trusted to ask only for
what it should, so the station decides everything in the certificate except the public key.

The package, one module per idea: :mod:`~station.pki.ca` (:class:`CertificateAuthority`), :mod:`~station.pki.certs`
(file names, fingerprints, key generation, certificate building, signing), :mod:`~station.pki.ca_load` (loading and
importing a CA), :mod:`~station.pki.directory`, :mod:`~station.pki.crl`, :mod:`~station.pki.quota`,
:mod:`~station.pki.csr_policy`, :mod:`~station.pki.subject`; the token, the offline root and hand-made DER in
:mod:`~station.pki.token`, :mod:`~station.pki.root` and :mod:`~station.pki.der`.  Every name is re-exported here.
"""

from __future__ import annotations

from station.files import write_file_atomically  # re-exported: many modules import it from here
from station.pki.ca import CertificateAuthority
from station.pki.ca_load import _load_own_private_key as _load_own_private_key
from station.pki.certs import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CLOCK_SKEW_ALLOWANCE,
    KEY_TYPES,
    MIN_PASSPHRASE_LENGTH,
    SYSTEM_CERT_FILE,
    SYSTEM_KEY_FILE,
    describe_key_type,
    fingerprint_sha256,
    read_certificate,
    spki_sha256,
)
from station.pki.certs import CA_FILES as CA_FILES
from station.pki.certs import MAX_CERTIFICATES_OID as MAX_CERTIFICATES_OID
from station.pki.certs import ROOT_CERT_FILE as ROOT_CERT_FILE
from station.pki.certs import STATION_CSR_FILE as STATION_CSR_FILE
from station.pki.certs import _authority_key_identifier as _authority_key_identifier
from station.pki.certs import _encrypted_pem as _encrypted_pem
from station.pki.certs import _generate_key as _generate_key
from station.pki.certs import _key_usage as _key_usage
from station.pki.certs import _now as _now
from station.pki.certs import _sign_certificate as _sign_certificate
from station.pki.certs import _Signer as _Signer
from station.pki.certs import _system_certificate as _system_certificate
from station.pki.certs import key_file_kdf as key_file_kdf
from station.pki.crl import RevokedEntry
from station.pki.csr_policy import CsrPolicy, CsrRejected, check_csr
from station.pki.directory import _check_new_passphrase as _check_new_passphrase
from station.pki.directory import _check_private as _check_private
from station.pki.directory import _make_private_directory as _make_private_directory
from station.pki.directory import refuse_existing_ca
from station.pki.quota import IssuanceQuota, QuotaReached
from station.pki.quota import max_certificates_of as max_certificates_of
from station.pki.subject import device_subject, parse_openssl_subject

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
