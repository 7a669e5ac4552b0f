"""Setting up a station CA whose key is in a PKCS#11 token: the key generated in the token and its CSR written
for the offline root, then the chain the root issued installed.  :class:`TokenCaSetup` is a base of
:class:`~station.pki.ca.CertificateAuthority` (these classmethods are called on it); moved out of
:mod:`station.pki.ca`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from station.errors import StationError
from station.files import write_file_atomically  # re-exported: many modules import it from here
from station.pki.ca_load import (
    _check_station_chain,
    _same_key,
)
from station.pki.certs import (
    CA_CERT_FILE,
    ROOT_CERT_FILE,
    STATION_CSR_FILE,
    _now,
    certification_request,
)
from station.pki.directory import (
    _make_private_directory,
    refuse_existing_ca,
)
from station.pki.token import TOKEN_FILE, TokenKey, TokenSettings


class TokenCaSetup:
    """The token CA's two set-up steps, as classmethods of :class:`~station.pki.ca.CertificateAuthority`."""

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
            request = certification_request(
                key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
            )
        finally:
            key.close()
        _make_private_directory(directory)
        write_file_atomically(
            directory / TOKEN_FILE, settings.to_toml().encode("utf-8"), mode=0o600, replace=False
        )
        csr_path = directory / STATION_CSR_FILE
        write_file_atomically(
            csr_path, request.public_bytes(serialization.Encoding.PEM), mode=0o644, replace=False
        )
        return csr_path

    @classmethod
    def import_chain(
        cls, directory: Path, chain_pem: bytes, *, now: datetime | None = None
    ) -> list[x509.Certificate]:
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
            directory / ROOT_CERT_FILE,
            chain[-1].public_bytes(serialization.Encoding.PEM),
            mode=0o644,
            replace=True,
        )
        return chain
