"""Where a link call happens inside each step of the welma-optee flow, so a test can break that step only.

Each value is a FakeLink call description fragment (``FakeLink.fail``) that only this step's calls contain.
``check_csr`` and ``sign`` make no link call: they are broken through what the board sent (see the tests).
"""

from __future__ import annotations

LINK_CALL_IN_STEP = {
    "identify": "open",
    "guard": "run test -s",
    "wipe": "run find",
    "reboot": "reboot",
    "init_token": "--init-token",
    "init_pin": "--init-pin",
    "keygen": "--keypairgen",
    "csr": "openssl req",
    "fetch_csr": "get /tmp/key0.csr",
    "push": "put /var/lib/key0.cert",
    "tls_proof": "s_client",
}
