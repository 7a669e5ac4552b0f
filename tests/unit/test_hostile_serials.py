"""Ten thousand hostile scanned serials: each is refused, or reaches the device shell as one word.

A scanner types whatever the label (or a prankster's QR code) says.  For every generated serial —
shell metacharacters, ``$()``, backticks, quotes, newlines, NUL, unicode look-alikes, very long
strings, and the plain serials of two profile patterns — the station must either refuse it in
``DeviceProfile.validate_serial`` or, if it accepts it, put it into the device command line so
that a real ``sh`` parses exactly the argument vector the profile describes, executing nothing.

Quoting is also checked on its own for every generated string (serials are not the only values
that reach a shell: PINs and paths in profiles do too): a string without control characters
must survive ``ShellCommand`` and ``sh`` byte for byte; one with them is refused.

The shell runs once per batch of 500 command lines (never once per input), each line printing
its arguments NUL-separated; a canary file proves nothing was executed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station.profiles import MAX_SERIAL_LENGTH, DeviceProfile, InvalidSerial, load_profile, load_profile_file
from station.shell import ShellCommand, UnsafeArgument

EXAMPLES = 10_000
BATCH_LINES = 500
SH_TIMEOUT_S = 60
PERMISSIVE_PATTERN = "^[A-Za-z0-9._:/+-]{1,64}$"
# The station's own hard whitelist, whatever a profile's pattern allows.
WHITELIST = re.compile(r"[A-Za-z0-9._:/+-]+")
# Separates the output of one command line from the next; a control character, so no quoted
# value can contain it.
RECORD_END = "\x01"
REFERENCE_SERIAL = "202600000000001"
REFERENCE_SUBJECT = f"/CN=serial:{REFERENCE_SERIAL}/"

SHELL_META = list(";&|$()`<>*?[]{}~!#'\"\\ =%^,\t\n\r\x00\x1b\x7f")
LOOKALIKES = [
    "é",
    "ü",
    "ß",
    "٣",
    "０",
    "；",
    "｜",
    "＄",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\u2028",
    "😀",
    "ﬁ",
    "İ",
]
ALPHABET = st.sampled_from(SHELL_META + LOOKALIKES) | st.characters(codec="utf-8")


def hostile_serials(canary: Path) -> st.SearchStrategy[str]:
    touch = f"touch {canary}"
    payloads = [
        f"$({touch})",
        f"`{touch}`",
        f";{touch}",
        f"|{touch}",
        f"&&{touch}",
        f"\n{touch}",
        f"'; {touch}; '",
        f'"; {touch}; "',
        f"$(IFS=_;{touch})",
        f"${{IFS}}{touch}",
        f"\x00{touch}",
    ]
    digits = st.from_regex(r"[0-9]{15}", fullmatch=True)
    allowed = st.from_regex(r"[A-Za-z0-9._:/+-]{1,64}", fullmatch=True)
    return st.one_of(
        st.text(ALPHABET, max_size=40),
        st.builds(
            lambda a, p, b: a + p + b,
            digits | st.text(ALPHABET, max_size=8),
            st.sampled_from(payloads),
            st.text(ALPHABET, max_size=8),
        ),
        st.text(ALPHABET, min_size=MAX_SERIAL_LENGTH - 2, max_size=300),
        digits,
        allowed,
        st.builds(
            lambda good, bad, at: good[:at] + bad + good[at:],
            digits | allowed,
            st.sampled_from(SHELL_META + LOOKALIKES),
            st.integers(0, 64),
        ),
    )


def permissive_profile(directory: Path) -> DeviceProfile:
    text = load_profile("welma-optee").source.read_text()
    text = text.replace('serial_pattern = "^[0-9]{15}$"', f'serial_pattern = "{PERMISSIVE_PATTERN}"')
    text = text.replace('name = "welma-optee"', 'name = "permissive"')
    path = directory / "permissive.toml"
    path.write_text(text)
    return load_profile_file(path)


class Shell:
    """Collects command lines and runs them through one real `sh` per batch."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pending: list[tuple[str, list[str], str]] = []  # (line, expected argv, what)
        self.lines_run = 0
        self.mismatches: list[str] = []

    def expect(self, line: str, argv: list[str], what: str) -> None:
        self.pending.append((line, argv, what))
        if len(self.pending) >= BATCH_LINES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        script = "".join(f"{line}; printf '{RECORD_END}'\n" for line, _, _ in self.pending)
        done = subprocess.run(
            ["sh"],
            input=script.encode("utf-8"),
            capture_output=True,
            cwd=self.workdir,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            timeout=SH_TIMEOUT_S,
            check=False,
        )
        records = done.stdout.decode("utf-8", "surrogateescape").split(RECORD_END)
        if len(records) != len(self.pending) + 1 or records[-1] or done.stderr:
            self.mismatches.append(
                f"sh printed {len(records) - 1} records for {len(self.pending)} lines "
                f"(stderr {done.stderr[:300]!r})"
            )
        for (line, argv, what), record in zip(self.pending, records, strict=False):
            words = record.split("\0")
            if words[-1] != "" or words[:-1] != argv:
                self.mismatches.append(f"{what}: sh parsed {line!r} as {words[:-1]!r}, expected {argv!r}")
        self.lines_run += len(self.pending)
        self.pending.clear()


def printed(argv: tuple[str, ...], env: dict[str, str] | None = None) -> str:
    """The command line that makes `sh` print ``argv`` NUL-separated (env assignments consumed by env)."""
    return ShellCommand(("printf", "%s\\0", *argv), env or {}).render()


def test_ten_thousand_hostile_serials_are_refused_or_reach_the_shell_as_one_word(tmp_path: Path) -> None:
    workdir = tmp_path / "sh"
    workdir.mkdir()
    canary = workdir / "CANARY"
    profiles = [load_profile("welma-optee"), permissive_profile(tmp_path)]
    shell = Shell(workdir)
    tally = {"examples": 0, "refused": 0, "accepted": 0, "quoted": 0, "unquotable": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(serial=hostile_serials(canary))
    def check(serial: str) -> None:
        tally["examples"] += 1
        for profile in profiles:
            try:
                accepted = profile.validate_serial(serial)
            except InvalidSerial:
                tally["refused"] += 1
                continue
            tally["accepted"] += 1
            # Accepted means: within the hard whitelist and the profile's pattern, nothing more.
            assert accepted == serial and WHITELIST.fullmatch(serial) and len(serial) <= MAX_SERIAL_LENGTH
            assert profile.serial_pattern.fullmatch(serial)
            # The serial reaches the device inside exactly one word of the real command line: the
            # same argument vector as for a plain serial, with only the subject word different.
            cmd = profile.command("csr", serial=serial)
            expected = [
                f"/CN=serial:{serial}/" if word == REFERENCE_SUBJECT else word
                for word in profile.command("csr", serial=REFERENCE_SERIAL).argv
            ]
            assert list(cmd.argv) == expected, cmd.argv
            shell.expect(
                printed(cmd.argv, dict(cmd.env)), list(cmd.argv), f"{profile.name} csr for {serial!r}"
            )
        # Quoting on its own, for any value: one word, byte for byte — or refused if it cannot be.
        try:
            line = printed((serial,))
        except UnsafeArgument:
            tally["unquotable"] += 1
            assert re.search(r"[\x00-\x1f\x7f]", serial)
            return
        tally["quoted"] += 1
        shell.expect(line, [serial], f"quoting of {serial!r}")

    check()
    shell.flush()
    assert not shell.mismatches, "\n".join(shell.mismatches[:20])
    assert not canary.exists(), "a hostile value was executed by the shell"
    assert tally["examples"] >= EXAMPLES, tally
    # The strategy must really exercise both sides: refusals and values that reach the shell.
    assert tally["refused"] > EXAMPLES // 2 and tally["accepted"] > 500 and tally["unquotable"] > 500, tally
    assert shell.lines_run == tally["accepted"] + tally["quoted"]
    print(f"hostile serials: {tally}; {shell.lines_run} command lines checked by sh")


@pytest.mark.parametrize(
    "serial", ["$(touch CANARY)", "`touch CANARY`", "1;touch CANARY", "a'b", 'a"b', "\\"]
)
def test_the_shell_check_itself_notices_an_unquoted_value(tmp_path: Path, serial: str) -> None:
    # The batch check must be able to fail: the same value pasted in unquoted is caught.
    shell = Shell(tmp_path)
    shell.expect(f"printf '%s\\0' {serial}", [serial], "unquoted")
    shell.flush()
    assert shell.mismatches or (tmp_path / "CANARY").exists()
