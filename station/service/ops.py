"""Which role each request to the station service needs: the one table the service enforces.

A request is refused unless the caller (identified by the kernel, SO_PEERCRED) holds the role named here,
or a stronger one (:mod:`station.roles`: roles nest, root is an administrator).  The refusal names the
role needed and is recorded in the audit log (``service_requests``).
"""

from __future__ import annotations

from dataclasses import dataclass

from station.roles import Role


@dataclass(frozen=True)
class Op:
    name: str
    # None: anyone who can reach the socket (who am I, sign in).
    role: Role | None
    words: str
    # Recorded in service_requests when allowed too (refusals are always recorded).
    recorded: bool = True


_TABLE = (
    # Anyone
    Op("whoami", None, "say who the service sees", recorded=False),
    Op("sign_in", None, "sign in at a kiosk window"),
    Op("sign_out", None, "sign out of a kiosk window"),
    # Needs the person's old credential, or an administrator (checked by station.people).
    Op("people_change", None, "change a person's credential"),
    # Technician: provision, batch, retry, abort, labels, this station's recent units.
    Op("provision", Role.TECHNICIAN, "provision a board"),
    Op("batch", Role.TECHNICIAN, "run a batch of boards"),
    Op("retry", Role.TECHNICIAN, "retry a failed board"),
    Op("abort", Role.TECHNICIAN, "abort a running board"),
    Op("labels", Role.TECHNICIAN, "print a board's label"),
    Op("units", Role.TECHNICIAN, "list this station's recent units", recorded=False),
    Op("follow", Role.TECHNICIAN, "watch the running units", recorded=False),
    Op("fixtures_list", Role.TECHNICIAN, "list the fixtures", recorded=False),
    Op("window", Role.TECHNICIAN, "see what the station's window shows", recorded=False),
    Op("window_orders", Role.TECHNICIAN, "see the open work orders", recorded=False),
    Op("window_plan", Role.TECHNICIAN, "see a profile's step times", recorded=False),
    # Quality lead: audit views, exports, reports, backup, revoke, CRL.
    Op("audit_view", Role.QUALITY, "view the audit log"),
    Op("audit_export", Role.QUALITY, "export the audit log"),
    Op("audit_verify", Role.QUALITY, "verify the audit log"),
    Op("audit_checkpoint", Role.QUALITY, "sign the audit log's head"),
    Op("report", Role.QUALITY, "make a yield report"),
    Op("backup", Role.QUALITY, "back up the audit log"),
    Op("revoke", Role.QUALITY, "revoke a certificate"),
    Op("crl", Role.QUALITY, "publish the certificate revocation list"),
    # Administrator: settings, profiles, fixtures, CA operations, production mode.
    Op("settings", Role.ADMIN, "change the station's settings"),
    Op("profiles", Role.ADMIN, "change device profiles"),
    Op("fixtures", Role.ADMIN, "change fixtures"),
    Op("ca", Role.ADMIN, "operate the station's CA"),
    Op("ca_unlock", Role.ADMIN, "unlock the station's CA"),
    Op("production_mode", Role.ADMIN, "change production mode"),
    Op("admin_set_pin", Role.ADMIN, "set the admin PIN"),
    # The window's audit tab (station.service.audit_reads): reads are not recorded when allowed (paging would
    # fill the journal); refusals are, as always.  A technician's tab covers this station's recent units only.
    Op("recent_units", Role.TECHNICIAN, "list this station's recent units", recorded=False),
    Op("recent_unit", Role.TECHNICIAN, "view one of this station's recent units", recorded=False),
    Op("audit_units", Role.QUALITY, "view the audit log", recorded=False),
    Op("audit_count", Role.QUALITY, "count units in the audit log", recorded=False),
    Op("audit_unit", Role.QUALITY, "view a unit in the audit log", recorded=False),
    Op("audit_yield", Role.QUALITY, "view the yield", recorded=False),
    # The label prints beside the window's "Reprint label": a technician's for this station's recent units only
    # (refused and recorded otherwise, as recent_unit); a quality lead's for any unit.
    Op("label_prints", Role.TECHNICIAN, "view a unit's label prints", recorded=False),
    # The shared admin PIN of demos, checked by the service's one lock (refused in production mode).
    Op("admin_unlock", None, "check the shared admin PIN"),
)

OPS: dict[str, Op] = {op.name: op for op in _TABLE}

# Arguments of a request that are secrets: never recorded (service_requests keeps the rest of the request).
SECRET_ARGS = frozenset({"secret", "pin", "old_secret", "new_secret", "session", "key_pem", "key_password"})
# Arguments that carry a file's content (a certificate, a chain, a profile): recorded as size and SHA-256.
CONTENT_ARGS = frozenset({"cert_pem", "chain_pem", "profile_text"})


def refusal(op: Op, account: str) -> str:
    """The words of a refusal: what was asked, the role it needs, and what to do."""
    assert op.role is not None
    return (
        f"refused: {account} may not {op.words} — that needs the {op.role.words} role (OS group "
        f"{op.role.value}); ask an administrator to add {account} to {op.role.value}, or ask someone who has it"
    )


# Which op a command line needs when it runs next to a service (station.cli): (command, action) → op.
# A command group with None as its action maps every action of it.
COMMAND_OPS: dict[tuple[str, str | None], str] = {
    ("provision", None): "provision",
    ("batch", None): "batch",
    ("abort", None): "abort",
    ("units", None): "units",
    ("label", None): "labels",
    ("revoke", None): "revoke",
    ("audit", "export"): "audit_export",
    ("audit", "verify"): "audit_verify",
    ("audit", "backup"): "backup",
    ("audit", "checkpoint"): "audit_checkpoint",
    ("ca", "crl"): "crl",
    ("ca", "unlock"): "ca_unlock",
    ("ca", None): "ca",
    ("admin", None): "admin_set_pin",
    ("settings", "production"): "production_mode",
    ("settings", None): "settings",
    ("fixtures", "list"): "fixtures_list",
    ("fixtures", None): "fixtures",
    ("profiles", None): "profiles",
}


def op_for_command(command: str, action: str | None) -> Op | None:
    """The op a command needs (None: a command the service does not guard, e.g. the simulator)."""
    name = COMMAND_OPS.get((command, action)) or COMMAND_OPS.get((command, None))
    return OPS[name] if name else None
