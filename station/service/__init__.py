"""The station service: the one process that owns the station home and runs units (`station serve`).

* :mod:`station.service.frames` — the wire format (length-prefixed JSON, bounded, every read/write under a
  deadline) and the caller's identity from the kernel (SO_PEERCRED);
* :mod:`station.service.ops` — which role each request needs;
* :mod:`station.service.server` — the service (the one Scheduler, the audit log, the CA);
* :mod:`station.service.client` — how a client finds the socket, connects, or starts a per-user service;
* :mod:`station.service.hardening` — no core dumps, not dumpable/ptraceable.

No Qt here (import-linter contract of station/).
"""
