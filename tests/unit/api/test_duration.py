"""Duration strings: the grammar shared by pydantic, the CRD pattern and CEL's duration()."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.api.duration import format_duration_s, parse_duration_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1h1m1s", 3661.0),
        ("0s", 0.0),
        ("250ms", 0.25),
    ],
)
def test_parse_accepts_go_style_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "-1s", "5", "2 s", "1d", "s", "1.s", "ms", "1h-1s", "1e3ms", "NaNs"])
def test_parse_rejects_everything_else_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="expected a positive Go-style duration"):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.5, "500ms"), (2.0, "2s"), (90.0, "1m30s"), (3600.0, "1h"), (0, "0s")]
)
def test_format_gives_the_shortest_exact_form(seconds: float, text: str) -> None:
    assert format_duration_s(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_format_refuses_impossible_durations(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_duration_s(seconds)


@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_round_trips_to_the_millisecond(milliseconds: int) -> None:
    assert parse_duration_s(format_duration_s(milliseconds / 1000)) == pytest.approx(milliseconds / 1000)
