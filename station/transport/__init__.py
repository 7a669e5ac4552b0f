"""Device links: how the station reaches a board (SSH with paramiko, or a serial console)."""

from station.transport.base import (
    CommandFailed,
    CommandResult,
    CommandTimedOut,
    Deadline,
    DeviceAddress,
    DeviceLink,
    HostKeyMismatch,
    LinkCancelled,
    LinkError,
    LinkLost,
    OutputTooLarge,
    open_link,
)

__all__ = [
    "CommandFailed",
    "CommandResult",
    "CommandTimedOut",
    "Deadline",
    "DeviceAddress",
    "DeviceLink",
    "HostKeyMismatch",
    "LinkCancelled",
    "LinkError",
    "LinkLost",
    "OutputTooLarge",
    "open_link",
]
