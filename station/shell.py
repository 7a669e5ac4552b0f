"""The one place that builds device shell command lines.

Every value that reaches a device shell passes through :func:`quote_argv`, one argument at a time,
so a scanned serial like ``1;reboot`` arrives as exactly one word and is never executed.  Nothing
else in the station concatenates shell strings.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that must never be typed into a device shell, even quoted: an interactive console
# (serial link) acts on control characters before the shell ever parses the quotes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafeArgument(ValueError):
    """An argument that no quoting can make safe for an interactive device shell."""


@dataclass(frozen=True)
class ShellCommand:
    """A device command as an argument vector plus environment, rendered once, quoted per word."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    # Shell operators appended verbatim after the quoted words (e.g. "</dev/null"); these come
    # from the station's own code, never from a scanned value or a profile.
    redirect: str = ""

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("a device command needs at least a program name")
        for name, value in self.env.items():
            if not _ENV_NAME.fullmatch(name):
                raise UnsafeArgument(f"environment variable name {name!r} is not a valid name")
            _check_word(value)
        for word in self.argv:
            _check_word(word)

    def render(self) -> str:
        """The command line exactly as the device shell receives it."""
        words = [f"{name}={shlex.quote(value)}" for name, value in self.env.items()]
        if words:
            words.insert(0, "env")
        words.extend(shlex.quote(word) for word in self.argv)
        line = " ".join(words)
        return f"{line} {self.redirect}" if self.redirect else line


def _check_word(word: str) -> None:
    if _CONTROL.search(word):
        raise UnsafeArgument(
            f"argument {word!r} contains a control character or newline; it cannot be sent to a device"
        )


def command(*argv: str, env: Mapping[str, str] | None = None, redirect: str = "") -> ShellCommand:
    """Shorthand: ``command("sha256sum", path)``."""
    return ShellCommand(tuple(argv), dict(env or {}), redirect)
