"""What the serial link types and what it reads on a console: its named settings (timings, limits), the
patterns it recognises (escapes, kernel lines, login and prompts), and the shell scripts it types (private
mode, file transfer).  Moved out of :mod:`station.transport.serial`, which re-exports every name.
"""

from __future__ import annotations

import base64
import re

# -- named settings ---------------------------------------------------------------------------

DEFAULT_BAUD = 115200
# Longest wait inside a loop before cancel and the deadline are looked at again.
POLL_INTERVAL_S = 0.1
# Before waking the console, stale output is drained until it has been quiet this long ...
QUIET_PERIOD_S = 0.2
# ... but a chatty console never holds us longer than this.
DRAIN_LIMIT_S = 1.0
# How long a board may take to show it is going down after `reboot` before we call it stuck.
SHUTDOWN_TIMEOUT_S = 30.0
# After a reboot, a prompt-like end of the boot log counts once the console has been quiet this long.
PROMPT_SETTLE_S = 0.5
# Login prompts answered in one attempt to log in (a getty that ate our wake-up CR asks twice).
LOGIN_ATTEMPTS = 3
# close() types `exit` so the next session starts from a fresh login; it never waits longer.
CLOSE_TIMEOUT_S = 1.0
# A canonical-mode tty drops whatever a line holds beyond 4095 bytes, and a board without flow
# control loses bytes once its 4096-byte input buffer is full: stay well under both.
MAX_LINE_BYTES = 2048
# Base64 words per file-transfer line are cut at this length (a multiple of 4).
TRANSFER_WORD_CHARS = 512
# A transfer whose checksum does not match is sent again this many times in all.
TRANSFER_ATTEMPTS = 2
READ_CHUNK_BYTES = 65536
# Text kept for prompt matching and error messages while waiting through a boot log.
TAIL_KEPT_BYTES = 8192
# A line still arriving is held back (its end may hold a prompt or an escape sequence) up to this
# length; beyond it, all but its last PENDING_KEPT_BYTES are passed on as output.
PENDING_MAX_BYTES = 8192
PENDING_KEPT_BYTES = 256
# How much of the console's last line the prompt patterns look at (prompts are short).
TAIL_WINDOW_BYTES = 4096
# Everything received while one command runs (markers, kernel lines, escapes included) may be at
# most this many times its output cap: a board streaming something that never becomes output
# (no begin marker, only escapes) is stopped too.
RAW_FACTOR = 2
# After a command was stopped for answering too much: how long the shell may take to answer a
# `true` again, and how much stale output may still come in the meantime.
RESYNC_TIMEOUT_S = 5.0
RESYNC_OUTPUT_BYTES = 1024 * 1024
KERNEL_LINES_KEPT = 50
KERNEL_LINE_KEPT_BYTES = 512

# The shell's prompts once the link has set it up; unlikely in any real output.
PRIVATE_PS1 = "__station__# "
PRIVATE_PS2 = "__station_more__> "

# -- what the console says ---------------------------------------------------------------------

# CSI (colours, bracketed paste ESC[?2004h), OSC (window titles), charset selection, and the
# two-byte escapes (keypad modes ESC= ESC>, ...).
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[0-~])")
# A kernel printk line: "[   12.345678] text".  printk may cut into a line the shell is
# writing, so it is removed wherever it starts; it always ends with a newline.
_KERNEL_LINE = re.compile(rb"\[ *\d+\.\d{6}\] [^\n]*\n")
# CRLF from the tty's onlcr, sometimes CRCRLF when a program already wrote CRLF.
_LINE_END = re.compile(rb"\r+\n")
_LOGIN = re.compile(r"login: *$", re.IGNORECASE)
_PASSWORD = re.compile(r"password: *$", re.IGNORECASE)
_LOGIN_REFUSED = re.compile(rb"Login incorrect|Login timed out", re.IGNORECASE)
# Our prompts are recognised only as a whole line: while the setup line itself is echoed, a read
# can end right after "PS2='__station_more__> " and must not be taken for the prompt.
_PRIVATE_PROMPT = re.compile(r"^\s*" + re.escape(PRIVATE_PS1.rstrip()) + r" ?$")
_CONTINUATION_PROMPT = re.compile(r"^\s*" + re.escape(PRIVATE_PS2.rstrip()) + r" ?$")
DEFAULT_PROMPT_PATTERN = r"[#$] ?$"
# What we type must never hold a control character: the tty would act on it (^C, ^D, ^U, a
# newline ending the line early) before the shell ever parses the quotes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Switches the logged-in shell to the link's private mode.  No echo: our typing never comes back
# (and readline stops redrawing long lines).  Bracketed paste only exists in bash (`bind` would
# fail in busybox ash).  No history: command lines carry PINs and must not land in
# ~/.bash_history on the board.  Not wrapped in `</dev/null`: stty needs the console as stdin.
_SETUP = (
    "stty -echo 2>/dev/null; unset HISTFILE PROMPT_COMMAND; "
    "if [ -n \"${BASH_VERSION:-}\" ]; then bind 'set enable-bracketed-paste off' 2>/dev/null; "
    "set +o history; fi; "
    f"PS1='{PRIVATE_PS1}'; PS2='{PRIVATE_PS2}'"
)

# File transfer scripts.  Every value (paths, base64 words, digest, mode) reaches them as a
# positional parameter through ShellCommand, so nothing here is ever concatenated with data.
_PUT_START = 'rm -f "$1" && : >"$2"'
_PUT_APPEND = 'f=$1; shift; printf "%s\\n" "$@" >>"$f"'
# Exit 3 = the checksum did not match: the temporary file is removed and the target untouched.
_PUT_FINISH = (
    'base64 -d "$1" >"$2" && rm -f "$1" || exit 2; '
    'printf "%s  %s\\n" "$3" "$2" | sha256sum -c >/dev/null 2>&1 || { rm -f "$2"; exit 3; }; '
    'chmod "$4" "$2" && mv -f "$2" "$5"'
)
_CHECKSUM_MISMATCH = 3
# Reading a file: at most $2 bytes of "$1", copied once so the digest and the base64 lines are of
# the same bytes; prints the digest line, then the base64 lines.  head's error names a missing file.
_GET = (
    't=$(mktemp) || exit 2; head -c "$2" -- "$1" >"$t" && sha256sum <"$t" && base64 <"$t"; '
    's=$?; rm -f "$t"; exit $s'
)


def _wrap(line: str, nonce: str, *, own_stdin: bool = True) -> str:
    """The line as typed: markers around the command, so its output and exit status can be found."""
    # The command's own stdin is /dev/null: it must never read the lines we type next (and
    # `openssl s_client` ends when its stdin does, as it does over SSH).  The echoed line shows
    # `$?`, never digits, so it cannot be taken for the status marker.
    body = f"{{ {line} ; }} </dev/null 2>&1" if own_stdin else line
    return f"echo __BEGIN_{nonce}__; {body}; echo __RC_{nonce}_$?__"


def _base64_words(data: bytes) -> list[str]:
    encoded = base64.b64encode(data).decode("ascii")
    return [encoded[i : i + TRANSFER_WORD_CHARS] for i in range(0, len(encoded), TRANSFER_WORD_CHARS)]
