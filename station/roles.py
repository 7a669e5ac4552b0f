"""Who may do what: the station's three roles, each an operating-system group.

The station service identifies a caller by the kernel (``SO_PEERCRED`` on its Unix socket: uid, gid,
pid), never by what the caller says, and maps the caller's OS groups to roles here.  Roles nest:
an administrator may do what a quality lead may, a quality lead what a technician may.  root is an
administrator.  Which request needs which role is the service's table (``station/service``); this
module only answers "which roles does this account hold".
"""

from __future__ import annotations

import grp
import os
import pwd
from enum import StrEnum


class Role(StrEnum):
    """A role, named by the OS group that grants it."""

    TECHNICIAN = "welma-tech"
    QUALITY = "welma-quality"
    ADMIN = "welma-admin"

    @property
    def words(self) -> str:
        """The role in words, as refusals and the window say it."""
        return _TITLES[self]

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether holding this role is enough for something that needs ``needed``."""
        return self.rank >= needed.rank


_TITLES = {Role.TECHNICIAN: "technician", Role.QUALITY: "quality lead", Role.ADMIN: "administrator"}
_RANKS = {Role.TECHNICIAN: 1, Role.QUALITY: 2, Role.ADMIN: 3}

# The account the station service runs as on a line PC (packaging/), owner of the station home.
SERVICE_ACCOUNT = "welma-station"


def account_name(uid: int) -> str:
    """The login name of ``uid`` (``uid:NNNN`` when the account has no passwd entry)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def group_names(uid: int, gid: int | None = None) -> frozenset[str]:
    """The names of every group ``uid`` belongs to (primary and supplementary), read from the system."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    primary = entry.pw_gid if gid is None else gid
    names: set[str] = set()
    for number in os.getgrouplist(entry.pw_name, primary):
        try:
            names.add(grp.getgrgid(number).gr_name)
        except KeyError:
            continue
    return frozenset(names)


def roles_of(uid: int, gid: int | None = None) -> frozenset[Role]:
    """The roles an account holds: root is an administrator; otherwise one role per welma-* group."""
    if uid == 0:
        return frozenset(Role)
    groups = group_names(uid, gid)
    return frozenset(role for role in Role if role.value in groups)


def highest(roles: frozenset[Role]) -> Role | None:
    """The strongest role held, or None for an account with none."""
    return max(roles, key=lambda role: role.rank, default=None)


def allowed(roles: frozenset[Role], needed: Role) -> bool:
    """Whether any held role is enough for something that needs ``needed``."""
    return any(role.allows(needed) for role in roles)
