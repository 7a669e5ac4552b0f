"""What `station ca init | import | import-chain | show` do to the station home, and what they say (lines).

Made where the home is: in the station service (:mod:`station.service.ca_ops`, for an administrator, recorded)
when one runs, else by the command itself (a home of one's own, no service).  Secrets come in as arguments —
read by the command from a prompt, a 0600 file or (outside production mode) $STATION_CA_PASSPHRASE — and are
never printed, logged or recorded.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509

from station.config import load_ca_settings
from station.errors import StationError
from station.home import StationHome
from station.pki import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    KEY_TYPES,
    MIN_PASSPHRASE_LENGTH,
    STATION_CSR_FILE,
    SYSTEM_CERT_FILE,
    CertificateAuthority,
    RevokedEntry,
    describe_key_type,
    fingerprint_sha256,
    key_file_kdf,
    read_certificate,
    refuse_existing_ca,
)
from station.pki.token import TOKEN_FILE, TOKEN_KEY_TYPES, TokenSettings


def colon_hex(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()


def validity_text(cert: x509.Certificate) -> str:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    state = "valid" if start <= datetime.now(end.tzinfo) < end else "NOT VALID NOW"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC ({state})"


def _key_file_state(path: Path) -> str:
    if not path.exists():
        return f"{path} (MISSING)"
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return f"{path} (mode {mode:04o} — too open: run `chmod 600 {path}`)"
    return f"{path} (mode {mode:04o})"


def token_summary_lines(home: StationHome) -> list[str]:
    """A station CA whose key is in a token: the token, the chain, the issuance quota."""
    out: list[str] = []
    ca_dir = home.ca_dir
    token = TokenSettings.read(ca_dir / TOKEN_FILE)
    out.append(
        f"Station CA key:   in PKCS#11 token {token.token_label!r}, key {token.key_label!r} (not extractable)"
    )
    out.append(f"  module:         {token.module}")
    if not (ca_dir / CA_CERT_FILE).exists():
        out.append(
            f"  certificate:    none yet — take {ca_dir / STATION_CSR_FILE} to the offline root, then "
            "`station ca import-chain CHAIN.pem`"
        )
        return out
    chain = x509.load_pem_x509_certificates((ca_dir / CA_CERT_FILE).read_bytes())
    for role, cert in zip(("Station CA:", "Root CA:"), (chain[0], chain[-1]), strict=True):
        out.append(f"{role:<18}{cert.subject.rfc4514_string()}")
        out.append(f"  SHA-256:        {colon_hex(fingerprint_sha256(cert))}")
        out.append(f"  validity:       {validity_text(cert)}")
    from station.pki import max_certificates_of

    limit = max_certificates_of(chain[0])
    settings = load_ca_settings(home.config_file)
    if home.audit_db.exists():
        from station.audit import AuditLog
        from station.pki import IssuanceQuota

        with AuditLog(home.audit_db) as audit:
            since = chain[0].not_valid_before_utc
            today = datetime.now(since.tzinfo).replace(hour=0, minute=0, second=0, microsecond=0)
            quota = IssuanceQuota(
                issued=audit.certificates_issued_since(since),
                maximum=limit,
                issued_today=audit.certificates_issued_since(max(since, today)),
                maximum_per_day=settings.max_certificates_per_day,
            )
        out.append(f"  quota:          {quota.describe()}")
    else:
        out.append(f"  quota:          0 certificates issued; limit {limit if limit is not None else 'none'}")
    return out


def summary_lines(ca_dir: Path) -> list[str]:
    """A file CA: its certificate, key file, and the system's TLS server certificate."""
    out: list[str] = []
    ca_cert = read_certificate(ca_dir / CA_CERT_FILE)
    out.append(f"CA certificate:   {ca_dir / CA_CERT_FILE}")
    out.append(f"  subject:        {ca_cert.subject.rfc4514_string()}")
    out.append(f"  key type:       {describe_key_type(ca_cert.public_key())}")
    out.append(f"  SHA-256:        {colon_hex(fingerprint_sha256(ca_cert))}")
    out.append(f"  validity:       {validity_text(ca_cert)}")
    out.append(f"  key file:       {_key_file_state(ca_dir / CA_KEY_FILE)}")
    kdf = key_file_kdf(ca_dir / CA_KEY_FILE)
    if kdf != "scrypt":
        out.append(
            f"  key protection: {kdf} — written before scrypt; re-encrypt it: move ca/ away and `station ca import` it"
        )
    system_path = ca_dir / SYSTEM_CERT_FILE
    system = read_certificate(system_path)
    try:
        san = system.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ", ".join(str(name.value) for name in san)
    except x509.ExtensionNotFound:
        names = "(none)"
    out.append(f"System (TLS server) certificate: {system_path}")
    out.append(f"  subject:        {system.subject.rfc4514_string()}")
    out.append(f"  names:          {names}")
    out.append(f"  SHA-256:        {colon_hex(fingerprint_sha256(system))}")
    out.append(f"  validity:       {validity_text(system)}")
    return out


def audit_trust(home: StationHome) -> tuple[list[x509.Certificate] | None, datetime | None]:
    """What the audit log's checkpoints are checked against: the CA chain, and since when signing is required.

    A station CA in a token signs every unit ending and revocation from its birth on; the demo file CA signs
    them too when it is unlocked, but an unsigned demo log is not an error.
    """
    path = home.ca_dir / CA_CERT_FILE
    if not path.exists():
        return None, None
    chain = x509.load_pem_x509_certificates(path.read_bytes())
    required = chain[0].not_valid_before_utc if (home.ca_dir / TOKEN_FILE).exists() else None
    return chain, required


def revoked_from_audit(home: StationHome) -> list[RevokedEntry]:
    """The revoked device certificates recorded in the audit log.

    No audit database means this station never certified anything, so nothing can be revoked
    (and opening the log would create an empty database as a side effect).  If the database
    exists it must be read: a CRL silently missing a revocation is worse than no CRL.
    """
    if not home.audit_db.exists():
        return []
    try:
        # Imported here: `station ca` must work on a station whose audit log was never set up.
        from station.audit import AuditLog

        trusted, required = audit_trust(home)
        with AuditLog(home.audit_db) as audit:
            report = audit.verify(trusted=trusted, require_signed_since=required)
            if not report.ok:
                raise StationError(
                    f"Refusing to build a CRL: the audit log {home.audit_db} does not verify ({report.problem}). "
                    "A CRL built from a rewritten log could leave revoked boards valid. Keep the file as it is, "
                    "report it to quality assurance, and restore the log from a verified backup."
                )
            records = audit.revoked_certificates()
    except (ImportError, AttributeError) as exc:
        raise StationError(
            f"The audit log {home.audit_db} exists but this station cannot read revocations from it "
            f"({exc}) — update the station software, then run again."
        ) from None
    return [
        RevokedEntry(serial_number=record.serial_number, revoked_at=record.revoked_at, reason=record.reason)
        for record in records
    ]


# --- what the commands do to the home ------------------------------------------------------------


def show_lines(home: StationHome) -> list[str]:
    """`station ca show`."""
    if (home.ca_dir / TOKEN_FILE).exists():
        return token_summary_lines(home)
    if not (home.ca_dir / CA_CERT_FILE).exists():
        raise StationError(
            f"This station has no CA yet (nothing in {home.ca_dir}) — create it with `station ca init`."
        )
    return summary_lines(home.ca_dir)


def check_key_type(key_type: str, *, token: bool) -> None:
    """Before any secret is asked for: a key type the chosen storage can make."""
    choices = TOKEN_KEY_TYPES if token else KEY_TYPES
    if key_type not in choices:
        what = "A token key" if token else "A file CA key"
        raise StationError(f"{what} is one of {', '.join(choices)} — choose --key-type from those.")


def check_new_passphrase(passphrase: bytes) -> None:
    if len(passphrase.decode("utf-8")) < MIN_PASSPHRASE_LENGTH:
        raise StationError(
            f"The CA passphrase must have at least {MIN_PASSPHRASE_LENGTH} characters — "
            "choose a longer one and run again."
        )


def init_token_ca(
    home: StationHome, token: TokenSettings, *, pin: str, key_type: str, common_name: str
) -> tuple[list[str], bytes]:
    """`station ca init` with a token: (what it says, the CSR to take to the offline root)."""
    check_key_type(key_type, token=True)
    csr_path = CertificateAuthority.init_in_token(
        home.ca_dir, settings=token, pin=pin, common_name=common_name, key_type=key_type
    )
    lines = [
        f"Created the station CA key in token {token.token_label!r} (label {token.key_label!r}, not extractable).",
        f"Its certificate request is {csr_path}",
    ]
    return lines, csr_path.read_bytes()


def init_file_ca(
    home: StationHome, *, passphrase: bytes, key_type: str, common_name: str, validity_days: int
) -> list[str]:
    """`station ca init` without a token: a self-signed demo CA in an encrypted file."""
    check_key_type(key_type, token=False)
    check_new_passphrase(passphrase)
    ca = CertificateAuthority.init(
        home.ca_dir,
        passphrase=passphrase,
        common_name=common_name,
        key_type=key_type,
        validity_days=validity_days,
    )
    try:
        return [
            f"Created the station CA in {ca.directory}",
            *summary_lines(ca.directory),
            f"\nNext: install {ca.certificate_path} on the devices as their trusted CA (ca.cert).",
        ]
    finally:
        ca.close()


def import_ca(
    home: StationHome, *, key_pem: bytes, cert_pem: bytes, key_password: bytes | None, passphrase: bytes
) -> list[str]:
    """`station ca import`: an existing CA's key (stored re-encrypted under ``passphrase``) and certificate."""
    refuse_existing_ca(home.ca_dir)
    check_new_passphrase(passphrase)
    ca = CertificateAuthority.import_existing(
        home.ca_dir, key_pem=key_pem, cert_pem=cert_pem, key_password=key_password, passphrase=passphrase
    )
    try:
        return [f"Imported the CA into {ca.directory}", *summary_lines(ca.directory)]
    finally:
        ca.close()


def import_chain(home: StationHome, chain_pem: bytes) -> list[str]:
    """`station ca import-chain`: the chain the offline root issued for this station's token CA."""
    chain = CertificateAuthority.import_chain(home.ca_dir, chain_pem)
    lines = [f"Installed the station CA chain in {home.ca_dir / CA_CERT_FILE}:"]
    for cert in chain:
        lines.append(
            f"  {cert.subject.rfc4514_string()}  (valid to {cert.not_valid_after_utc:%Y-%m-%d}, "
            f"SHA-256 {fingerprint_sha256(cert)[:16]}…)"
        )
    lines.append("Devices receive this chain as their ca.cert; the station can now provision.")
    return lines
