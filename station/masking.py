"""Keeps secrets (PINs, passphrases) out of everything a person or a file will see."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

MASK = "****"
# PEM private keys never leave the device or the CA directory; if one ever shows up in output, hide it whole.
_PRIVATE_KEY_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)


class Masker:
    """Replaces every known secret value with ``****``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a PIN that contains another PIN is masked whole.  A secret is masked only
        # as a whole word: PIN "0000" must not turn serial 202600000000001 into "2026****0000001".
        # A secret is also masked as the shell quoting (station/shell.py) writes it into a command line:
        # whole (shlex.quote) and inside a quoted word (each ' becomes '"'"').
        variants = set()
        for secret in secrets:
            if secret:
                variants |= {secret, shlex.quote(secret), secret.replace("'", "'\"'\"'")}
        ordered = sorted(variants, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])" for secret in ordered))
            if ordered
            else None
        )

    def __call__(self, text: str) -> str:
        text = _PRIVATE_KEY_PEM.sub("-----PRIVATE KEY REMOVED-----", text)
        return self._pattern.sub(MASK, text) if self._pattern else text
