r"""Text an action produced, made storable and held to a length: `escape` and `fit`.

No backend stores a NUL character or a lone UTF-16 surrogate as text. An action may
print both, and bytes that are not UTF-8, which a reader decoding with Python's
`surrogateescape` holds as the surrogates U+DC80..U+DCFF. `escape` writes each out
visibly: a NUL as `\x00`, such a surrogate as its byte `\xNN`, any other lone
surrogate as `\udNNN`.

Escaping lengthens text (one character becomes up to six), so a length limit must be
applied to the escaped text, not before: `fit` escapes, then cuts to the limit, never
inside a character or an escape sequence.

Pure standard library: the python child process imports it without pydantic.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""A NUL or a lone surrogate: what `escape` writes out."""


def unstorable(text: str) -> bool:
    """Whether `text` holds a NUL or a lone surrogate (text no backend stores as is)."""
    return UNSTORABLE.search(text) is not None


def _escaped(char: str) -> str:
    code = ord(char)
    if code == 0:
        return "\\x00"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with each NUL and lone surrogate written out as a visible escape."""
    if not unstorable(text):
        return text
    return UNSTORABLE.sub(lambda match: _escaped(match.group()), text)


def _pieces(text: str) -> Iterator[tuple[str, bool]]:
    """`text` escaped, as pieces: runs of plain text (False) and escape sequences (True)."""
    start = 0
    for match in UNSTORABLE.finditer(text):
        if match.start() > start:
            yield text[start : match.start()], False
        yield _escaped(match.group()), True
        start = match.end()
    if start < len(text):
        yield text[start:], False


def _fits(text: str, chars: int | None, utf8_bytes: int | None) -> bool:
    if chars is not None and len(text) > chars:
        return False
    if utf8_bytes is None or len(text) * 4 <= utf8_bytes:
        return True
    return len(text.encode()) <= utf8_bytes


def fit(text: str, *, chars: int | None = None, utf8_bytes: int | None = None) -> str:
    """`text` escaped, then cut to at most `chars` characters and `utf8_bytes` bytes of UTF-8.

    The cut never falls inside a character or inside an escape sequence: an escape
    that does not fit whole is left out. Without limits it is `escape(text)`.
    """
    if not unstorable(text) and _fits(text, chars, utf8_bytes):
        return text
    room_chars = len(text) * 6 if chars is None else chars
    room_bytes = utf8_bytes
    out: list[str] = []
    for piece, is_escape in _pieces(text):
        size = len(piece.encode()) if room_bytes is not None else 0
        if len(piece) <= room_chars and (room_bytes is None or size <= room_bytes):
            out.append(piece)
            room_chars -= len(piece)
            if room_bytes is not None:
                room_bytes -= size
            continue
        if not is_escape:
            cut = piece[:room_chars]
            if room_bytes is not None:
                cut = cut.encode()[:room_bytes].decode("utf-8", "ignore")
            out.append(cut)
        break
    return "".join(out)
