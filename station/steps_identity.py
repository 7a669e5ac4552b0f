"""The board's identity checks of the identify and guard steps: its SSH host key against the fixture's
inventory, its SoC unique id, and the same board under another label (or this label on another board).
Moved out of :mod:`station.steps`, which re-exports every name.
"""

from __future__ import annotations

from station.errors import StationError
from station.identity import (
    Basis,
    SocIdUnreadable,
    find_fixture,
    host_key_mismatch_advice,
    known_fixtures,
    read_soc_id,
)
from station.identity_log import when
from station.step_context import (
    StepFailed,
    UnitContext,
    UnitRefused,
)
from station.transport import Deadline, HostKeyMismatch


def _check_host_key(ctx: UnitContext, key: tuple[str, str] | None) -> str:
    """Compare the host key the board showed with its fixture's inventory — before any command runs."""
    if key is None:
        return "no SSH host key on this link (serial console): the SoC id is the board's identity"
    settings_file = None
    if ctx.home is not None:
        from station.admin import load_settings  # the admin's fixtures file, as the window uses it

        try:
            settings_file = load_settings(ctx.home).fixtures_file
        except StationError:
            settings_file = None
    fixtures = known_fixtures(ctx.home.root if ctx.home else None, ctx.config, settings_file=settings_file)
    known = find_fixture(fixtures, name=ctx.unit.fixture, device=ctx.unit.device)
    fixture_name = known.fixture.name if known else (ctx.unit.fixture or ctx.unit.device)
    expected = known.fixture.host_key if known else None
    if expected is not None:
        if key[1] != expected:
            raise HostKeyMismatch(
                f"the board on fixture {fixture_name} answered with host key {key[0]} {key[1]}, but the fixture's "
                f"inventory ({known.file if known and known.file else known.origin if known else '?'}) holds "
                f"{expected} — {host_key_mismatch_advice(fixture_name)}"
            )
        ctx.host_key_in_inventory = True
        return f"{Basis.VERIFIED}: host key {key[1]} is the one fixture {fixture_name}'s inventory holds"
    if ctx.config.identity.first_contact == "require-inventory":
        raise HostKeyMismatch(
            f"fixture {fixture_name} has no host key in the inventory and this station requires one "
            f'(first_contact = "require-inventory"); the board answered with {key[0]} {key[1]} — nothing was '
            f"run on it. An administrator checks the key on the board's console (ssh-keygen -lf "
            f"/etc/ssh/ssh_host_ed25519_key.pub) and runs `station fixtures pin {fixture_name}`; until then, "
            "set the board aside"
        )
    return (
        f"host key {key[1]} is not in an inventory (fixture {fixture_name}): pinned for this unit only "
        '(first_contact = "pin-per-unit")'
    )


def _read_soc_id(ctx: UnitContext, deadline: Deadline) -> str:
    earlier = ctx.audit.unit_soc_id(ctx.unit.id)
    try:
        soc = read_soc_id(ctx.link, ctx.profile.identity, deadline)
    except SocIdUnreadable as exc:
        raise StepFailed(str(exc)) from None
    if soc is None:
        ctx.output("SoC unique id: none (the profile does not require one)")
        return "SoC unique id: none (not required by the profile)"
    if earlier is not None and earlier.soc_id != soc.value:
        # A resumed unit must continue on the board it started on.
        raise StepFailed(
            f"this is not the board unit {ctx.unit.id} started on: its SoC id was {earlier.soc_id}, the board on "
            f"the fixture now has {soc.value} — put the unit's board back on the fixture and press Retry, or set "
            "this board aside"
        )
    ctx.audit.record_soc_id(ctx.unit.id, soc_id=soc.value, source=soc.source)
    ctx.soc_id = soc.value
    ctx.output(f"SoC unique id {soc.value} ({Basis.REPORTED}, read from {soc.source})")
    return f"SoC unique id {soc.value} ({Basis.REPORTED}, read from {soc.source})"


def _set_aside(previous_serial: str) -> str:
    return (
        "set the board aside with its label and call the quality lead; scan the next board. "
        f"If the label is wrong, the board stays {previous_serial}; enrolling it under a new serial needs a "
        "re-provision with a reason (station provision … --reprovision --reason)"
    )


def _identity_guard(ctx: UnitContext) -> list[str]:
    """The same board under another label, or this label on another board: refused unless re-provisioned."""
    reason = ctx.unit.reprovision_reason
    lines: list[str] = []
    key = ctx.link.host_key()
    # One question to the audit log (in a worker, to the station over its pipe), about this unit's own serial.
    conflicts = ctx.audit.identity_conflicts(
        ctx.unit.id, soc_id=ctx.soc_id, host_key_fingerprint=key[1] if key is not None else None
    )
    if ctx.soc_id:
        for other in conflicts.same_soc_other_serial[:1]:
            found = (
                f"this board (SoC id {ctx.soc_id}) is already enrolled as serial {other.serial} "
                f"(unit {other.id}, {when(other)}), but its label was scanned as {ctx.serial}"
            )
            if not reason:
                raise UnitRefused(f"{found} — {_set_aside(other.serial)}")
            lines.append(f"{found}; accepted: re-provisioned with reason {reason!r}")
        for other, other_soc_id in conflicts.same_serial_other_soc[:1]:
            found = (
                f"serial {ctx.serial} is already enrolled on another board (SoC id "
                f"{other_soc_id or '?'}, unit {other.id}, {when(other)}); this board's SoC id is "
                f"{ctx.soc_id}"
            )
            if not reason:
                raise UnitRefused(f"{found} — two boards carry the same label: {_set_aside(ctx.serial)}")
            lines.append(f"{found}; accepted: re-provisioned with reason {reason!r}")
        lines.append(f"{Basis.VERIFIED}: SoC id {ctx.soc_id} is enrolled under no other serial")
    if key is not None:
        for other in conflicts.same_host_key_other_serial[:1]:
            found = (
                f"this board's host key {key[1]} belongs to serial {other.serial} (unit {other.id}, "
                f"{when(other)}), but its label was scanned as {ctx.serial} — a swapped label"
            )
            if not reason:
                raise UnitRefused(f"{found} — {_set_aside(other.serial)}")
            lines.append(f"{found}; accepted: re-provisioned with reason {reason!r}")
    return lines
