"""Imported first by the fork server (see FORKSERVER_PRELOAD), before paramiko: what its workers need not hold.

paramiko imports ``invoke`` (and through it ``unittest.mock`` and ``asyncio``) for one thing only: the
``Match exec`` keyword of an OpenSSH client configuration file, which paramiko runs as a shell command.  A
unit's link reads no such file — it connects with the station's own key, host and port — so the fork server
marks ``invoke`` as absent (paramiko then raises only if a ``Match exec`` is ever evaluated).  Every worker is a
fork of this server: what it holds, each worker copies at its fork and tears down at its exit (≈ 4 MiB here).
Only the fork server and its workers: the station's own process keeps paramiko as installed.
"""

from __future__ import annotations

import sys

if "paramiko" not in sys.modules:
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
