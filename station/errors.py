"""Errors that a person reads.

Every message says what happened and what to do next, because the person reading it is a
technician at a line, not the developer.
"""


class StationError(Exception):
    """A failure explained for the person at the station (what happened, what to do next)."""


class ConfigError(StationError):
    """A configuration file (station.toml, a device profile, a fixtures file) is malformed.

    The message names the file, the line when known, and the problem.
    """
