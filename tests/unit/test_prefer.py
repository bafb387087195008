"""`Prefer: return=minimal` (RFC 7240) as the bulk invoke reads it."""

from __future__ import annotations

import pytest

from oprun.api.operations import prefers_minimal


@pytest.mark.parametrize(
    ("header", "minimal"),
    [
        (None, False),
        ("", False),
        ("return=minimal", True),
        ('Return="Minimal"', True),
        ("respond-async, return=minimal; foo=bar", True),
        ("return=representation", False),
        ("return", False),
        ("returns=minimal", False),
        ("handling=lenient, wait=5", False),
    ],
)
def test_prefers_minimal(header: str | None, minimal: bool) -> None:
    assert prefers_minimal(header) is minimal
