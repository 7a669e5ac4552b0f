"""Faults a simulated board can be given: a named fault (no boot, dropped SSH, no PKCS#11 module) or a command
fault (``ACTION:PATTERN``, struck by gate.sh), and parsing them as written on the command line.  Moved out of
:mod:`station.sim.farm`, which re-exports every name.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from enum import StrEnum

from station.errors import StationError

PATTERN_CHECK_TIMEOUT_S = 5.0  # bash compiling a command fault's pattern


class Fault(StrEnum):
    """Faults a board can be given (per board, one at a time, from the CLI or the Python API)."""

    NO_BOOT = "no-boot"  # after the next reboot the board stays dark until the fault is cleared
    DROP_SSH = "drop-ssh"  # the next key generation drops its SSH connection midway, once
    NO_MODULE = "no-module"  # /usr/lib/libckteec.so.0 is absent (OP-TEE's "TA not found"), at once


class CommandAction(StrEnum):
    """What a command fault does to a matching command on the board (see gate.sh)."""

    DROP = "drop"  # the SSH connection dies; the command never runs
    HANG = "hang"  # the command never finishes and never answers
    FAIL = "fail"  # the command does not run; it exits 2 with an error naming it on stderr
    GARBAGE = "garbage"  # the command does not run; it prints binary noise and exits 0
    STREAM = "stream"  # the command does not run; /dev/zero streams in its place, without end


@dataclass(frozen=True)
class CommandFault:
    """A fault that strikes every SSH command whose line matches ``pattern``, until cleared.

    Written ``ACTION:PATTERN`` on the command line (``hang:--keypairgen``, ``drop:sftp-server``,
    ``garbage:^command -v``, ``stream:--keypairgen``).  ``pattern`` is a POSIX extended regular expression (bash's ``=~``)
    matched against the command line as the board's sshd received it; the sftp subsystem
    (the station's put and get) is seen as ``/usr/lib/openssh/sftp-server``.
    """

    action: CommandAction
    pattern: str

    def __str__(self) -> str:
        return f"{self.action.value}:{self.pattern}"

    @classmethod
    def parse(cls, value: str) -> CommandFault:
        action, sep, pattern = value.partition(":")
        if not sep or action not in {a.value for a in CommandAction}:
            raise StationError(_unknown_fault(value))
        if not pattern or "\n" in pattern or "\r" in pattern:
            raise StationError(
                f"fault {value!r}: give the commands to strike as a regular expression on one line after "
                f"'{action}:', e.g. {action}:--keypairgen"
            )
        # Checked by bash itself (=~ returns 2 for a pattern it cannot compile), as the gate uses it.
        check = subprocess.run(
            ["bash", "-c", '[[ "" =~ $1 ]]; [ "$?" -ne 2 ]', "fault", pattern],
            capture_output=True,
            timeout=PATTERN_CHECK_TIMEOUT_S,
            check=False,
        )
        if check.returncode != 0:
            raise StationError(f"fault {value!r}: {pattern!r} is not a valid extended regular expression")
        return cls(CommandAction(action), pattern)

    def file_text(self) -> str:
        """The fault file gate.sh reads: the action, then the pattern."""
        return f"{self.action.value}\n{self.pattern}\n"


AnyFault = Fault | CommandFault
# The file of a command fault below faults/ (the other faults are empty files named after them).
COMMAND_FAULT_FILE = "command"


def _unknown_fault(value: str) -> str:
    choices = ", ".join(fault.value for fault in Fault)
    actions = "|".join(action.value for action in CommandAction)
    return (
        f"unknown fault {value!r}: choose one of {choices}, or a command fault {actions}:PATTERN "
        "(e.g. hang:--keypairgen)"
    )


def parse_fault(value: str) -> AnyFault:
    """A fault as written on the command line: a Fault name, or ``ACTION:PATTERN`` (a CommandFault)."""
    try:
        return Fault(value)
    except ValueError:
        pass
    if ":" in value:
        return CommandFault.parse(value)
    raise StationError(_unknown_fault(value))
