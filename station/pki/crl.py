"""Revocation entries as the CRL carries them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509


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
