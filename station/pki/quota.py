"""The issuance limit the offline root writes into a station CA certificate."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from station.errors import StationError
from station.pki.certs import MAX_CERTIFICATES_OID, QUOTA_WARNING_SHARE


@dataclass(frozen=True)
class IssuanceQuota:
    """How many device certificates a CA issued and may still issue, in total and today."""

    issued: int
    maximum: int | None
    issued_today: int = 0
    maximum_per_day: int | None = None

    @property
    def remaining(self) -> int | None:
        left = [
            limit - used
            for limit, used in ((self.maximum, self.issued), (self.maximum_per_day, self.issued_today))
            if limit is not None
        ]
        return max(0, min(left)) if left else None

    @property
    def near_limit(self) -> bool:
        """At or beyond 90 % of either limit: time to ask the root for the next station CA."""
        return any(
            limit is not None and used >= QUOTA_WARNING_SHARE * limit
            for limit, used in ((self.maximum, self.issued), (self.maximum_per_day, self.issued_today))
        )

    def describe(self) -> str:
        parts = []
        if self.maximum is not None:
            parts.append(f"{self.issued} of {self.maximum} certificates issued")
        else:
            parts.append(f"{self.issued} certificates issued (no total limit)")
        if self.maximum_per_day is not None:
            parts.append(f"{self.issued_today} of {self.maximum_per_day} today")
        if self.remaining is not None:
            parts.append(f"{self.remaining} remaining")
        text = ", ".join(parts)
        return text + (
            " — WARNING: 90 % of the quota is used; ask for the next station CA now"
            if self.near_limit
            else ""
        )

    def check(self) -> None:
        if self.maximum is not None and self.issued >= self.maximum:
            raise QuotaReached(
                f"The station CA has issued {self.issued} of the {self.maximum} certificates the offline root "
                "allowed — no more boards can be enrolled with it. Nothing was signed and the board was not "
                "touched; have the root issue a new station CA (`station ca init` on a new token, "
                "`station ca root sign-station`), then retry."
            )
        if self.maximum_per_day is not None and self.issued_today >= self.maximum_per_day:
            raise QuotaReached(
                f"The station CA has issued today's {self.maximum_per_day} certificates ([ca] "
                "max_certificates_per_day in station.toml) — nothing was signed and the board was not touched; "
                "continue tomorrow (UTC) or have an administrator raise the daily limit."
            )


class QuotaReached(StationError):
    """The issuing CA may not sign another certificate now; nothing was signed."""


def max_certificates_of(cert: x509.Certificate) -> int | None:
    """The issuance limit the root wrote into a station CA certificate, if any."""
    try:
        value = cert.extensions.get_extension_for_oid(MAX_CERTIFICATES_OID).value
    except x509.ExtensionNotFound:
        return None
    data = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(data) < 3 or data[0] != 0x02 or data[1] != len(data) - 2:
        raise StationError(f"The CA certificate's issuance limit extension is malformed ({data.hex()}).")
    return int.from_bytes(data[2:], "big")
