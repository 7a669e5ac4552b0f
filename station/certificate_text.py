"""A certificate as people in the field read it: the text of ``openssl x509 -text -noout``.

Quality leads compare what the station shows with what they see on a board or a server, where the tool at hand
is OpenSSL — so the station shows OpenSSL's own text, not a look-alike. The real ``openssl`` runs with a
deadline; when it is missing or does not answer in time, a shorter description made with ``cryptography`` is
returned instead, saying so, because a detail pane that shows nothing helps nobody.
"""

from __future__ import annotations

import shutil
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import hashes

# `openssl x509` on one certificate takes milliseconds; a wedged binary must not hold up a worker for long.
OPENSSL_TIMEOUT_S = 5.0


def certificate_text(pem: str, *, timeout_s: float = OPENSSL_TIMEOUT_S) -> str:
    """The ``openssl x509 -text -noout`` text of a PEM certificate (a fallback description without openssl).

    Raises ValueError when ``pem`` is not a certificate.
    """
    certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))  # ValueError when it is not one
    openssl = shutil.which("openssl")
    if openssl is not None:
        try:
            # The PEM goes in on stdin: no temporary file, nothing on the command line.
            shown = subprocess.run(
                [openssl, "x509", "-text", "-noout"],
                input=pem.encode("ascii"),
                capture_output=True,
                timeout=timeout_s,
                check=False,
            )
        except (subprocess.TimeoutExpired, OSError) as exc:
            reason = (
                f"openssl did not answer within {timeout_s:g} s"
                if isinstance(exc, subprocess.TimeoutExpired)
                else f"openssl could not be run ({exc})"
            )
        else:
            if shown.returncode == 0:
                return shown.stdout.decode("utf-8", errors="replace")
            reason = f"openssl x509 failed: {shown.stderr.decode('utf-8', errors='replace').strip()[:200]}"
    else:
        reason = "openssl is not installed"
    return f"({reason}; a summary instead)\n" + _summary(certificate)


def _summary(certificate: x509.Certificate) -> str:
    """The main fields of a certificate, laid out like OpenSSL's text."""
    lines = [
        "Certificate:",
        "    Data:",
        f"        Version: {certificate.version.value + 1}",
        "        Serial Number:",
        f"            {_colon_hex(format(certificate.serial_number, 'x'))}",
        f"        Signature Algorithm: {certificate.signature_algorithm_oid._name}",
        f"        Issuer: {certificate.issuer.rfc4514_string()}",
        "        Validity",
        f"            Not Before: {certificate.not_valid_before_utc:%b %d %H:%M:%S %Y} GMT",
        f"            Not After : {certificate.not_valid_after_utc:%b %d %H:%M:%S %Y} GMT",
        f"        Subject: {certificate.subject.rfc4514_string()}",
        "        X509v3 extensions:",
    ]
    for extension in certificate.extensions:
        critical = " critical" if extension.critical else ""
        lines.append(f"            {extension.oid._name}:{critical}")
        lines.append(f"                {extension.value}")
    lines.append(f"    SHA-256 Fingerprint: {_colon_hex(certificate.fingerprint(hashes.SHA256()).hex())}")
    return "\n".join(lines) + "\n"


def _colon_hex(hex_digits: str) -> str:
    if len(hex_digits) % 2:
        hex_digits = "0" + hex_digits
    return ":".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2))
