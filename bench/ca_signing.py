"""Signing cost per device certificate: the issuing CA's key in a SoftHSM2 token vs in an encrypted file.

    .venv/bin/python -m bench.ca_signing [--certificates 300] [--out bench/results/ca-signing.json]

Builds, in a temporary directory, an offline root, a token station CA (SoftHSM2 token directory private to the
run) and a demo file CA, both EC P-256; then issues the same number of device certificates with each — the
whole `issue_device_certificate` call the sign step makes (policy, build, sign, quota check against a counter) —
alternating the two so machine load hits both alike.  Also times a CRL of 1000 entries, one audit checkpoint
signature and unlocking each CA (PIN login vs scrypt key decryption).  Medians and p95 go to JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.pki import CertificateAuthority, RevokedEntry, device_subject
from station.pki.root import init_root, sign_station
from station.pki.token import TokenSettings

HERE = Path(__file__).resolve().parent
MODULES = ("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/softhsm/libsofthsm2.so")
PIN = "bench-pin-2468"
PASSPHRASE = b"bench passphrase 0123"


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 4),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 4),
        "min_ms": round(ordered[0] * 1000, 4),
        "n": len(ordered),
    }


def _csr(serial: str) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"serial:{serial}")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def run(certificates: int) -> dict[str, Any]:
    module = Path(next(path for path in MODULES if Path(path).exists()))
    with tempfile.TemporaryDirectory(prefix="bench-ca-") as scratch:
        base = Path(scratch)
        tokens = base / "tokens"
        tokens.mkdir()
        conf = base / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                "BENCH",
                "--so-pin",
                "12345678",
                "--pin",
                PIN,
            ],
            env=dict(os.environ, SOFTHSM2_CONF=str(conf)),
            check=True,
            capture_output=True,
            timeout=60,
        )
        init_root(base / "root", common_name="Bench Root", passphrase=PASSPHRASE)
        settings = TokenSettings(module=module, token_label="BENCH", softhsm2_conf=conf)
        csr_path = CertificateAuthority.init_in_token(base / "token-ca", settings=settings, pin=PIN)
        _, chain = sign_station(base / "root", csr_path.read_bytes(), name="BENCH", passphrase=PASSPHRASE)
        CertificateAuthority.import_chain(base / "token-ca", chain)
        CertificateAuthority.init(base / "file-ca", passphrase=PASSPHRASE)

        unlock = {"token": [], "file": []}  # type: dict[str, list[float]]
        for _ in range(5):
            unlock["token"].append(
                _timed(lambda: CertificateAuthority.load(base / "token-ca", pin=PIN).close())
            )
            unlock["file"].append(
                _timed(lambda: CertificateAuthority.load(base / "file-ca", passphrase=PASSPHRASE))
            )
        cas = {
            "token": CertificateAuthority.load(base / "token-ca", pin=PIN),
            "file": CertificateAuthority.load(base / "file-ca", passphrase=PASSPHRASE),
        }
        requests = [_csr(f"2026{index:011d}") for index in range(certificates)]
        issued = {"token": [], "file": []}  # type: dict[str, list[float]]
        for index, request in enumerate(requests):
            subject = device_subject("/CN=serial:{serial}/", serial=f"2026{index:011d}")
            for kind in ("token", "file") if index % 2 else ("file", "token"):
                ca = cas[kind]
                issued[kind].append(
                    _timed(
                        lambda ca=ca, request=request, subject=subject, count=index: (
                            ca.issue_device_certificate(
                                request, validity_days=3650, subject=subject, issued_since=lambda since: count
                            )
                        )
                    )
                )
        now = datetime.now(UTC)
        revoked = [
            RevokedEntry(serial_number=n + 1, revoked_at=now, reason="cessationOfOperation")
            for n in range(1000)
        ]
        crl = {kind: [_timed(lambda ca=ca: ca.crl(revoked)) for _ in range(5)] for kind, ca in cas.items()}
        checkpoint = {
            kind: [_timed(lambda ca=ca: ca.sign_bytes(b"audit head" * 8)) for _ in range(200)]
            for kind, ca in cas.items()
        }
        for ca in cas.values():
            ca.close()
    return {
        "machine": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "token": f"SoftHSM2 via python-pkcs11 ({module}), EC P-256 station CA",
        "file": "EC P-256 key decrypted in memory (scrypt-encrypted PKCS#8 at rest)",
        "issue_device_certificate": {kind: _stats(samples) for kind, samples in issued.items()},
        "crl_1000_entries": {kind: _stats(samples) for kind, samples in crl.items()},
        "checkpoint_signature": {kind: _stats(samples) for kind, samples in checkpoint.items()},
        "unlock": {kind: _stats(samples) for kind, samples in unlock.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certificates", type=int, default=300)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ca-signing.json")
    args = parser.parse_args()
    result = run(args.certificates)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                key: result[key]
                for key in ("issue_device_certificate", "crl_1000_entries", "checkpoint_signature", "unlock")
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
