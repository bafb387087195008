"""Ages and durations, as the web UI and the CLI both spell them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oprun import _humanize
from oprun.cli import _render
from oprun.web import views


@pytest.mark.parametrize(
    ("seconds", "pages", "compact"),
    [
        (-5, "0 s", "0s"),
        (0, "0 s", "0s"),
        (0.5, "0 s", "0s"),
        (12, "12 s", "12s"),
        (59.9, "59 s", "59s"),
        (60, "1 min", "1m"),
        (125, "2 min", "2m"),
        (3599, "59 min", "59m"),
        (3600, "1 h", "1h"),
        (7200, "2 h", "2h"),
        (86399, "23 h", "23h"),
        (86400, "1 d", "1d"),
        (200000, "2 d", "2d"),
    ],
)
def test_age_is_whole_units_of_the_largest_unit_in_either_spelling(
    seconds: float, pages: str, compact: str
) -> None:
    assert _humanize.age(seconds) == pages
    assert _humanize.age(seconds, compact=True) == compact


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-1, "0 ms"),
        (0.035, "35 ms"),
        (0.9999, "999 ms"),
        (1, "1.0 s"),
        (4.25, "4.2 s"),
        (9.96, "10.0 s"),
        (12.7, "12 s"),
        (250, "4 min 10 s"),
        (3720, "1 h 2 min"),
        (90000, "1 d 1 h"),
    ],
)
def test_duration_names_at_most_two_units(seconds: float, text: str) -> None:
    assert _humanize.duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.25, "4.2s"), (0.04, "0.0s"), (3720, "3720.0s"), (-0.3, "-0.3s")]
)
def test_compact_duration_is_seconds_to_one_decimal_as_given(seconds: float, text: str) -> None:
    assert _humanize.duration(seconds, compact=True) == text


def test_web_and_cli_format_through_the_shared_functions() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for seconds in (0, 12, 125, 7200, 200000):
        at = now - timedelta(seconds=seconds)
        assert _render.age(at, now) == _humanize.age(seconds, compact=True)
        assert views.age(seconds) == _humanize.age(seconds)
        assert _render.duration(at, now) == _humanize.duration(seconds, compact=True)
        assert views.duration(seconds) == _humanize.duration(seconds)
    assert views.age(None) == views.duration(None) == "—"
    assert _render.age(None) == _render.duration(None, now) == "-"
