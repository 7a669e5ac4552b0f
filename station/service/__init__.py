"""The station service: the one process that owns the station home and runs units (`station serve`).

* :mod:`station.service.frames` — the wire format (length-prefixed JSON, bounded, every read/write under a
  deadline) and the caller's identity from the kernel (SO_PEERCRED);
* :mod:`station.service.ops` — which role each request needs;
* :mod:`station.service.server` — the service (the one Scheduler, the audit log, the CA), its socket and the
  dispatch of every request;
* one module per group of requests, each with ``handlers(service)`` → op name → handler, merged by the
  service: :mod:`~station.service.unit_ops` (provision, batch, abort, units, follow),
  :mod:`~station.service.quality_ops` (revoke, CRL, export, verify, backup, checkpoint),
  :mod:`~station.service.admin_ops` (admin PIN, production mode, fixtures, labels),
  :mod:`~station.service.people_ops` (sign in/out, credential change), :mod:`~station.service.ca_ops` (CA
  init/import/import-chain/show), :mod:`~station.service.profile_ops` (device profiles); what they share is
  :mod:`station.service.connection`;
* :mod:`station.service.client` — how a client finds the socket, connects, or starts a per-user service;
* :mod:`station.service.hardening` — no core dumps, not dumpable/ptraceable.

No Qt here (import-linter contract of station/).
"""
