"""The serial link's incremental marker search: the same answer as the regular expression on the
whole text, however the stream is cut into reads, looking at each byte a bounded number of times."""

from __future__ import annotations

import random
import re

import pytest

from station.transport.markers import MarkerScanner

NONCE = "0a1b2c3d4e5f"
BEGIN = f"__BEGIN_{NONCE}__\n".encode()


def status(code: int | str) -> bytes:
    return f"__RC_{NONCE}_{code}__".encode()


def whole_text_answer(stream: bytes) -> tuple[bytes, int, bytes] | None:
    """What the link's regular expression found on the whole received text before the scanner."""
    found = re.search(
        rb"__BEGIN_" + NONCE.encode() + rb"__\n(.*?)__RC_" + NONCE.encode() + rb"_(\d+)__", stream, re.DOTALL
    )
    if found is None:
        return None
    return found.group(1), int(found.group(2)), stream[found.end() :]


def scan(stream: bytes, pieces: list[int]) -> MarkerScanner:
    scanner = MarkerScanner(NONCE)
    at = 0
    for size in pieces:
        scanner.feed(stream[at : at + size])
        at += size
    scanner.feed(stream[at:])
    return scanner


# What the console really shows: the echoed line (echo still on during setup), the answer, then
# the next prompt; answers with odd contents around the markers.
ECHOED = f"echo __BEGIN_{NONCE}__; {{ uname -n ; }} </dev/null 2>&1; echo __RC_{NONCE}_$?__\n".encode()
STREAMS = {
    "plain": ECHOED + BEGIN + b"board-01\n" + status(0) + b"\n__station__# ",
    "empty answer": BEGIN + status(0) + b"\n",
    "no trailing newline": BEGIN + b"no newline" + status(3) + b"\n",
    "status 255 and leftovers": BEGIN + b"x\n" + status(255) + b"\nnext prompt # ",
    "a decoy with no digits": BEGIN + f"__RC_{NONCE}_$?__ printed by the command\n".encode() + status(1),
    "a decoy with digits but one underscore": BEGIN + f"__RC_{NONCE}_7_ x\n".encode() + status(0),
    "another nonce": BEGIN + b"__RC_ffffffffffff_0__\n" + status(0),
    "begin marker echoed first": f"echo __BEGIN_{NONCE}__;".encode() + BEGIN + b"ok\n" + status(0),
    "binary noise": BEGIN + bytes(range(256)) * 8 + b"\n" + status(0),
    "partial marker repeats": BEGIN + b"__RC___RC_" + f"__RC_{NONCE}".encode() + b"x" + status(42),
}


@pytest.mark.parametrize("name", STREAMS)
def test_the_answer_is_what_the_whole_text_search_finds_however_the_stream_is_cut(name):
    stream = STREAMS[name]
    expected = whole_text_answer(stream)
    assert expected is not None
    generator = random.Random(name)
    cuts = [[len(stream)], [1] * len(stream)] + [
        [generator.randint(1, 7) for _ in range(len(stream))] for _ in range(20)
    ]
    for pieces in cuts:
        scanner = scan(stream, pieces)
        assert scanner.done
        assert (scanner.output, scanner.status, scanner.leftover) == expected, pieces[:10]


def test_nothing_is_found_before_the_status_marker_is_complete():
    scanner = MarkerScanner(NONCE)
    assert not scanner.feed(BEGIN + b"answer\n")
    assert scanner.started and scanner.output_size == len(b"answer\n")
    for piece in (b"__RC_", NONCE.encode(), b"_", b"12", b"_"):
        assert not scanner.feed(piece), piece
    assert scanner.feed(b"_\nrest")
    assert (scanner.output, scanner.status, scanner.leftover) == (b"answer\n", 12, b"\nrest")
    scanner.feed(b" more")  # read after the end: kept for the next reader
    assert scanner.leftover == b"\nrest more"


def test_what_comes_before_the_begin_marker_is_not_kept():
    scanner = MarkerScanner(NONCE)
    for _ in range(1000):
        scanner.feed(b"boot log line before our command\n" * 100)
    assert not scanner.started and scanner.output_size == 0
    assert len(scanner._head) < len(BEGIN)  # only what may be the start of the marker
    assert scanner.feed(BEGIN + b"ok\n" + status(0))
    assert scanner.output == b"ok\n"


def test_too_many_digits_is_not_a_status_marker():
    stream = BEGIN + f"__RC_{NONCE}_{'9' * 40}__\n".encode() + status(5)
    scanner = scan(stream, [3] * len(stream))
    assert (scanner.output, scanner.status) == (f"__RC_{NONCE}_{'9' * 40}__\n".encode(), 5)


def test_a_long_answer_is_searched_once_not_again_on_every_read():
    """32 MiB in 4 KiB reads (a pty's size): the search position only moves forward."""
    scanner = MarkerScanner(NONCE)
    scanner.feed(BEGIN)
    line = b"a" * 63 + b"\n"
    piece = line * 64
    for _ in range(32 * 1024 * 1024 // len(piece)):
        assert not scanner.feed(piece)
        # The next search starts within one marker's length of the end: nothing is looked at twice.
        assert scanner.output_size - scanner._search_from < len(status(0))
    assert scanner.feed(status(0))
    assert scanner.output_size == 32 * 1024 * 1024 and scanner.status == 0
