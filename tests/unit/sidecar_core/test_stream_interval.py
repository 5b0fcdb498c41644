"""StreamInterval and TokenPace (sidecar/core/stream_interval.py): how many tokens the engine may pack into
one chunk: the first and the last token are never delayed, no other waits longer than the bound."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.sidecar.core.stream_interval import StreamInterval, TokenPace

INTERVAL = StreamInterval(wait_max_s=0.025, tokens_max=16)


@pytest.mark.parametrize(
    ("itl_s", "expected"),
    [
        (None, 1),  # the pace is not known yet: plain streaming
        (0.0035, 8),  # 7 * 3.5 = 24.5 ms of wait <= 25, 8 * 3.5 = 28 would not be
        (0.005, 6),  # 5 * 5 = 25 ms
        (0.030, 1),  # a slow engine: one token already takes longer than the bound
        (0.0005, 16),  # the cap
        (0.0, 1),  # a pace of zero is no pace
        (-0.001, 1),
    ],
)
def test_tokens_per_chunk_table(itl_s: float | None, expected: int) -> None:
    assert INTERVAL.tokens_per_chunk(itl_s) == expected


def test_switched_off_it_is_always_one() -> None:
    off = StreamInterval(wait_max_s=0.0)
    assert not off.enabled and off.tokens_per_chunk(0.001) == 1
    assert StreamInterval(tokens_max=1).tokens_per_chunk(0.001) == 1


@pytest.mark.parametrize("kwargs", [{"wait_max_s": -0.1}, {"wait_max_s": math.nan}, {"tokens_max": 0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        StreamInterval(**kwargs)  # type: ignore[arg-type]


@given(
    itl_s=st.floats(1e-5, 0.5),
    wait_max_s=st.floats(0.0, 0.2),
    tokens=st.integers(2, 400),
)
def test_no_token_waits_longer_than_the_bound_and_the_ends_do_not_move(
    itl_s: float, wait_max_s: float, tokens: int
) -> None:
    """With the engine at the estimated pace, a chunked stream's first and last tokens go out when they
    are made (so TTFT and the mean time per output token do not change), and every other token waits at
    most wait_max_s for its chunk; or the interval is 1."""
    n = StreamInterval(wait_max_s=wait_max_s).tokens_per_chunk(itl_s)
    assert n >= 1
    for k in range(1, tokens + 1):  # token k is made at (k - 1) * itl after the first
        made_s = (k - 1) * itl_s
        chunk_end = 1 if k == 1 else min(tokens, 1 + math.ceil((k - 1) / n) * n)  # its chunk's last token
        sent_s = (chunk_end - 1) * itl_s
        assert sent_s - made_s <= wait_max_s + 1e-12 or n == 1
        if k in (1, tokens):
            assert sent_s == made_s


def test_pace_is_unknown_until_enough_tokens_then_tracks_the_reads() -> None:
    pace = TokenPace(min_tokens=8)
    pace.observe(0.008, 4)
    assert pace.itl_s is None
    pace.observe(0.008, 4)
    assert pace.itl_s == pytest.approx(0.002)


def test_pace_rises_at_once_and_falls_slowly() -> None:
    pace = TokenPace(rise=0.5, fall=0.01, min_tokens=1)
    pace.observe(0.002, 1)
    pace.observe(0.010, 1)  # a slow read (a stall, a bigger batch)
    assert pace.itl_s == pytest.approx(0.006)
    for _ in range(10):
        pace.observe(0.002, 1)
    assert 0.0055 < (pace.itl_s or 0.0) < 0.006  # ten fast tokens barely move it back
    pace.observe(0.02, 10)  # as fast per token, in one read: the same as ten reads of one
    before = pace.itl_s
    assert before is not None and 0.005 < before < 0.0056


@pytest.mark.parametrize(("interval_s", "tokens"), [(0.01, 0), (-0.01, 1), (math.inf, 1), (math.nan, 1)])
def test_pace_ignores_what_is_not_an_observation(interval_s: float, tokens: int) -> None:
    pace = TokenPace(min_tokens=1)
    pace.observe(interval_s, tokens)
    assert pace.itl_s is None
