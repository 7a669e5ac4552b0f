"""Finding one command's output between its markers in a console stream, as the bytes arrive.

The serial link types every command as ``echo __BEGIN_<nonce>__; { CMD ; } …; echo __RC_<nonce>_$?__``
and the command's output is whatever lies between ``__BEGIN_<nonce>__\\n`` and ``__RC_<nonce>_<digits>__``.
Searching the whole received text again after every read costs time quadratic in the answer's
length (a 32 MiB answer took 37 s); :class:`MarkerScanner` looks at every byte a bounded number of
times instead, however the stream is cut into reads, and keeps nothing of what came before the
begin marker but the few bytes that may be the start of it.

It finds what the regular expression ``__BEGIN_n__\\n(.*?)__RC_n_(\\d+)__`` (DOTALL) finds on the
whole text: the first begin marker, then the first status marker after it whose digits are
followed by ``__`` — so the echoed command line (``… __RC_n_$?__``) is never taken for the answer.
"""

from __future__ import annotations

# An exit status has at most three digits; a "marker" with more is not ours (and stopping there
# keeps a stream of digits from being re-read on every piece).
MAX_STATUS_DIGITS = 10
_DIGITS = frozenset(b"0123456789")


class MarkerScanner:
    """Feed it the cleaned console bytes piece by piece; it says when the status marker is complete."""

    def __init__(self, nonce: str) -> None:
        self._begin = f"__BEGIN_{nonce}__\n".encode()
        self._status = f"__RC_{nonce}_".encode()
        self._head = bytearray()  # before the begin marker: only what may be its first bytes
        self._output: bytearray | None = None  # after it: the answer so far
        self._search_from = 0  # where the next status marker search starts in _output
        self._end = 0  # where the answer ends in _output, once found
        self.status: int | None = None
        self.leftover = b""  # what came after the status marker (for whoever reads next)

    @property
    def started(self) -> bool:
        """Whether the begin marker has been seen."""
        return self._output is not None

    @property
    def done(self) -> bool:
        return self.status is not None

    @property
    def output_size(self) -> int:
        """Bytes of answer held so far (once done: the answer's length)."""
        if self._output is None:
            return 0
        return self._end if self.done else len(self._output)

    @property
    def output(self) -> bytes:
        """The answer (complete once :attr:`done`)."""
        if self._output is None:
            return b""
        return bytes(self._output[: self._end] if self.done else self._output)

    def feed(self, data: bytes) -> bool:
        """Take the next piece of the stream; True once the answer and its status are complete."""
        if self.done:
            self.leftover += data
            return True
        if self._output is None:
            self._head += data
            found = self._head.find(self._begin)
            if found < 0:
                # Keep only a tail that may still become the begin marker with the next piece.
                del self._head[: max(0, len(self._head) - (len(self._begin) - 1))]
                return False
            self._output = bytearray(self._head[found + len(self._begin) :])
            self._head = bytearray()
        else:
            self._output += data
        return self._scan()

    def _scan(self) -> bool:
        output = self._output
        assert output is not None
        status = self._status
        while True:
            at = output.find(status, self._search_from)
            if at < 0:
                # The marker may begin in the last few bytes: start there next time, not earlier.
                self._search_from = max(self._search_from, len(output) - len(status) + 1)
                return False
            digits_at = at + len(status)
            end = digits_at
            while end < len(output) and end - digits_at < MAX_STATUS_DIGITS and output[end] in _DIGITS:
                end += 1
            if end == len(output) or (end > digits_at and len(output) < end + 2 and output[end] == ord("_")):
                # Digits (or the closing "__") may still be on their way.
                self._search_from = at
                return False
            if end > digits_at and output[end : end + 2] == b"__":
                self.status = int(output[digits_at:end])
                self._end = at
                self.leftover = bytes(output[end + 2 :])
                del output[at:]  # the answer is all that is kept
                return True
            self._search_from = at + 1  # "__RC_n_$?__" echoed, or not digits: not the marker
