"""Turning a child's byte streams into lines of bounded size."""

from __future__ import annotations


def cut_bytes(raw: bytes, max_bytes: int) -> bytes:
    """`raw` cut to at most `max_bytes`, never inside a UTF-8 character."""
    if len(raw) <= max_bytes:
        return raw
    end = max_bytes
    # Back off over continuation bytes (0b10xxxxxx) to the start of a character.
    while end > 0 and (raw[end] & 0xC0) == 0x80:
        end -= 1
    return raw[:end]


def decode_line(raw: bytes) -> str:
    """A line of output as text: UTF-8 (bad bytes replaced), without its trailing CR."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", "replace")


class LineSplitter:
    """Split a byte stream into lines; a line longer than `max_bytes` is cut.

    The rest of a cut line is skipped up to its newline, so memory stays bounded
    however long a line without a newline grows (a progress bar drawn with CR).
    """

    def __init__(self, max_bytes: int) -> None:
        """Split into lines of at most `max_bytes` bytes (newline excluded)."""
        self._max = max_bytes
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return the lines it completed (without their newlines)."""
        *complete, tail = data.split(b"\n")
        lines: list[bytes] = []
        for piece in complete:
            if self._skipping:
                self._skipping = False
                continue
            if self._buf:
                self._buf += piece
                line = bytes(self._buf)
                self._buf.clear()
            else:
                line = piece
            lines.append(cut_bytes(line, self._max))
        if not self._skipping and tail:
            self._buf += tail
            if len(self._buf) > self._max:
                lines.append(cut_bytes(bytes(self._buf), self._max))
                self._buf.clear()
                self._skipping = True
        return lines

    def close(self) -> list[bytes]:
        """The end of the stream: the last, unterminated line if there is one."""
        rest = bytes(self._buf)
        self._buf.clear()
        skipped, self._skipping = self._skipping, False
        return [rest] if rest and not skipped else []
