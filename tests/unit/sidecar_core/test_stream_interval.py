"""StreamInterval and TokenPace (sidecar/core/stream_interval.py): how many tokens the engine may pack into
one chunk, never delivering a token later than a stream at exactly its class's TPOT pace would."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.sidecar.core.stream_interval import StreamInterval, TokenPace

INTERVAL = StreamInterval(wait_max_s=0.025, tokens_max=16)


@pytest.mark.parametrize(
    ("tpot_s", "itl_s", "expected"),
    [
        (0.050, None, 1),  # the pace is not known yet: plain streaming
        (0.0055, 0.0035, 1),  # a tight class on a busy engine: 2 tokens would take 7 ms > 5.5
        (0.011, 0.0035, 3),  # 3 * 3.5 = 10.5 ms <= 11
        (0.0274, 0.0035, 7),  # 7 * 3.5 = 24.5 ms <= 27.4, 6 * 3.5 = 21 ms of wait <= 25
        (0.115, 0.0035, 8),  # the wait bound: 7 * 3.5 = 24.5 ms <= 25 ms, 8 * 3.5 = 28 would not
        (1.0, 0.0005, 16),  # the cap
        (0.005, 0.010, 1),  # the engine is slower than the TPOT: never below one
        (0.050, 0.0, 1),  # a pace of zero is no pace
        (0.0, 0.003, 1),  # no TPOT: nothing to pack within
    ],
)
def test_tokens_per_chunk_table(tpot_s: float, itl_s: float | None, expected: int) -> None:
    assert INTERVAL.tokens_per_chunk(tpot_s=tpot_s, itl_s=itl_s) == expected


def test_switched_off_it_is_always_one() -> None:
    off = StreamInterval(wait_max_s=0.0)
    assert not off.enabled and off.tokens_per_chunk(tpot_s=1.0, itl_s=0.001) == 1
    assert StreamInterval(tokens_max=1).tokens_per_chunk(tpot_s=1.0, itl_s=0.001) == 1


@pytest.mark.parametrize("kwargs", [{"wait_max_s": -0.1}, {"wait_max_s": math.nan}, {"tokens_max": 0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        StreamInterval(**kwargs)  # type: ignore[arg-type]


@given(
    tpot_s=st.floats(1e-4, 1.0),
    itl_s=st.floats(1e-5, 0.5),
    wait_max_s=st.floats(0.0, 0.2),
    tokens=st.integers(2, 400),
)
def test_no_token_comes_later_than_at_the_tpot_pace(
    tpot_s: float, itl_s: float, wait_max_s: float, tokens: int
) -> None:
    """With the engine at the estimated pace, every token of a chunked stream reaches the client by
    first + (k - 1) * TPOT and waits at most wait_max_s for its chunk, or the interval is 1."""
    n = StreamInterval(wait_max_s=wait_max_s).tokens_per_chunk(tpot_s=tpot_s, itl_s=itl_s)
    assert n >= 1
    if n == 1:
        return
    for k in range(2, tokens + 1):  # token k is made at (k - 1) * itl after the first
        made_s = (k - 1) * itl_s
        chunk_end = min(tokens, 1 + math.ceil((k - 1) / n) * n)  # the last token of k's chunk
        sent_s = (chunk_end - 1) * itl_s
        assert sent_s <= (k - 1) * tpot_s + 1e-12 or sent_s == made_s
        assert sent_s - made_s <= wait_max_s + 1e-12


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
