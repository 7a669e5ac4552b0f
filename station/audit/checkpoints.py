"""Signed checkpoints of the audit log's hash chain.

The event chain of :mod:`station.audit` has no secret: whoever holds the database file and knows the formula can
rewrite a row and recompute every hash after it.  A checkpoint is the chain's head (sequence number and hash)
signed with the station CA's key — in the PKCS#11 token — so a recomputed chain no longer matches the signed
heads, and nobody without the token can sign new ones.  A checkpoint is written in the same transaction as every
unit ending and every revocation (so a revocation is never unsigned), and :func:`verify_checkpoints` checks them
against the CA's certificate chain.

Only the audit package touches SQLite: the functions here take the open transaction from :class:`AuditLog`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

if TYPE_CHECKING:
    import sqlite_utils  # the log's connection, passed in: a worker signing nothing never loads it

SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS checkpoints (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        seq INTEGER NOT NULL,
        head_hash TEXT NOT NULL,
        at TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS checkpoints_seq ON checkpoints(seq)",
    """
    CREATE TRIGGER IF NOT EXISTS checkpoints_are_append_only_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS checkpoints_are_append_only_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END
    """,
)

# Events that end a unit or revoke a certificate: each is signed in the transaction that writes it.
SIGNED_KINDS: Final = frozenset(
    {"unit.passed", "unit.failed", "unit.aborted", "certificate.revoked", "certificate.superseded"}
)
_DOMAIN: Final = b"welma-station audit checkpoint v1\n"


@dataclass(frozen=True)
class CheckpointSigner:
    """Signs checkpoints with the station CA's key; ``key_id`` is the CA certificate's subject key identifier."""

    key_id: str
    sign: Callable[[bytes], bytes]

    @classmethod
    def for_certificate(
        cls, certificate: x509.Certificate, sign: Callable[[bytes], bytes]
    ) -> CheckpointSigner:
        return cls(key_id=key_id_of(certificate), sign=sign)


@dataclass(frozen=True)
class CheckpointReport:
    checkpoints: int
    problem: str | None
    last_signed_seq: int | None


def key_id_of(certificate: x509.Certificate) -> str:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest.hex()


def message(*, seq: int, head_hash: str, at: str, key_id: str) -> bytes:
    return _DOMAIN + f"{seq}\n{head_hash}\n{at}\n{key_id}".encode("ascii")


def write_checkpoint(db: sqlite_utils.Database, signer: CheckpointSigner, *, at: str) -> int | None:
    """Sign the chain's current head inside the caller's transaction; return the signed sequence number."""
    head = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    if head is None:
        return None
    seq, head_hash = int(head[0]), str(head[1])
    signature = signer.sign(message(seq=seq, head_hash=head_hash, at=at, key_id=signer.key_id))
    db.table("checkpoints").insert(
        {
            "seq": seq,
            "head_hash": head_hash,
            "at": at,
            "key_id": signer.key_id,
            "signature": base64.b64encode(signature).decode("ascii"),
        }
    )
    return seq


def _verifies(certificate: x509.Certificate, signature: bytes, data: bytes) -> bool:
    public_key = certificate.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except Exception:  # noqa: BLE001 - InvalidSignature or a malformed signature: both mean "not signed by it"
        return False
    return True


# long: one pass over the checkpoints, each check naming what broke
def verify_checkpoints(
    db: sqlite_utils.Database,
    trusted: Iterable[x509.Certificate],
    *,
    require_signed_since: datetime | None,
) -> CheckpointReport:
    """Check every checkpoint's signature and that it signs the journal as it is now.

    With ``require_signed_since`` (when the station CA in a token came to be), every unit ending and revocation
    recorded since then must be covered by a signed checkpoint at or after it: deleting the checkpoints does not
    make a rewritten journal pass.
    """
    keys = {key_id_of(cert): cert for cert in trusted}
    count, last_seq = 0, None
    if (
        db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'").fetchone()
        is None
    ):
        rows: list[dict[str, Any]] = []
    else:
        rows = list(db.query("SELECT * FROM checkpoints ORDER BY id"))
    for row in rows:
        count += 1
        event = db.execute("SELECT hash FROM events WHERE seq = ?", [row["seq"]]).fetchone()
        if event is None or event[0] != row["head_hash"]:
            return CheckpointReport(
                count - 1,
                (
                    f"signed checkpoint {row['id']} covers event {row['seq']} with hash {str(row['head_hash'])[:16]}…, "
                    f"but the journal's event {row['seq']} is {'missing' if event is None else str(event[0])[:16] + '…'} "
                    "— the journal was rewritten (its hash chain recomputed) after it was signed; the signature fails"
                ),
                last_seq,
            )
        cert = keys.get(row["key_id"])
        if cert is None:
            return CheckpointReport(
                count - 1,
                (
                    f"signed checkpoint {row['id']} was signed by key {str(row['key_id'])[:16]}…, which is not this "
                    "station's CA — the checkpoint was forged or the log comes from another station"
                ),
                last_seq,
            )
        try:
            signature = base64.b64decode(row["signature"], validate=True)
        except ValueError:
            signature = b""
        data = message(seq=row["seq"], head_hash=row["head_hash"], at=row["at"], key_id=row["key_id"])
        if not _verifies(cert, signature, data):
            return CheckpointReport(
                count - 1,
                (
                    f"the signature of checkpoint {row['id']} (event {row['seq']}) does not verify with the station "
                    "CA's certificate — the checkpoint was forged or edited"
                ),
                last_seq,
            )
        last_seq = max(last_seq or 0, int(row["seq"]))
    if require_signed_since is not None:
        kinds = sorted(SIGNED_KINDS)
        since = require_signed_since.isoformat(timespec="microseconds")
        placeholders = ", ".join("?" for _ in kinds)
        unsigned = db.execute(
            f"SELECT seq, kind, at FROM events WHERE kind IN ({placeholders}) AND at >= ? AND seq > ? "
            "ORDER BY seq LIMIT 1",
            [*kinds, since, last_seq or 0],
        ).fetchone()
        if unsigned is not None:
            return CheckpointReport(
                count,
                (
                    f"event {unsigned[0]} ({unsigned[1]} at {unsigned[2]}) is not covered by any signed checkpoint — "
                    "the journal was rewritten or written without the station CA's token; the signature check fails. "
                    "If this log is known good, sign its head with `station audit checkpoint`"
                ),
                last_seq,
            )
    return CheckpointReport(count, None, last_seq)
