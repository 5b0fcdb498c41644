"""RelayHold (sidecar/core/relay_hold.py): how long a stream may stay unread, never at its SLO's expense."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.sidecar.core.relay_hold import RelayHold

HOLD = RelayHold(hold_max_s=0.025, tpot_share=0.5, hold_min_s=0.002)


@pytest.mark.parametrize(
    ("tpot_s", "tokens", "since_first_s", "until_deadline_s", "expected_s"),
    [
        (0.050, 0, 0.0, None, 0.0),  # no token yet: the first is never held
        (0.050, 1, 0.0, None, 0.025),  # slack: the cap
        (0.006, 1, 0.0, None, 0.003),  # a tight class right after its first token: half its TPOT
        (0.006, 10, 0.040, None, 0.0),  # running at 4.4 ms per token against 6: 30 - 40 < 0, no hold
        (0.012, 10, 0.040, None, 0.020),  # 0.5 * 12 ms * 10 - 40 ms
        (0.050, 10, 0.100, 0.030, 0.015),  # the deadline is closer than the TPOT allows
        (0.050, 10, 0.100, -0.5, 0.0),  # past the deadline
        (0.006, 2, 0.0045, None, 0.0),  # 1.5 ms of room: not worth a hold
    ],
)
def test_hold_table(
    tpot_s: float, tokens: int, since_first_s: float, until_deadline_s: float | None, expected_s: float
) -> None:
    got = HOLD.hold_s(
        tpot_s=tpot_s,
        output_tokens=tokens,
        since_first_token_s=since_first_s,
        until_deadline_s=until_deadline_s,
    )
    assert got == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("only_while_queued", "queued", "expected_s"),
    [
        (True, 0, 0.0),  # nothing waits for the CPU a hold would save: read as tokens come
        (True, 3, 0.025),
        (True, None, 0.025),  # a caller that does not know its queue: as if requests waited
        (False, 0, 0.025),
    ],
)
def test_holds_only_while_requests_wait_in_the_queue(
    only_while_queued: bool, queued: int | None, expected_s: float
) -> None:
    hold = RelayHold(hold_max_s=0.025, only_while_queued=only_while_queued)
    got = hold.hold_s(tpot_s=0.050, output_tokens=1, since_first_token_s=0.0, queued=queued)
    assert got == pytest.approx(expected_s)


def test_off_never_holds() -> None:
    off = RelayHold(hold_max_s=0.0)
    assert not off.enabled
    assert off.hold_s(tpot_s=10.0, output_tokens=100, since_first_token_s=0.0) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"hold_max_s": -0.1}, {"hold_max_s": 0.01, "tpot_share": 0.0}, {"hold_max_s": 0.01, "tpot_share": 1.5}],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RelayHold(**kwargs)


@given(
    tpot_s=st.floats(1e-4, 10.0),
    tokens=st.integers(1, 100_000),
    since_first_s=st.floats(0.0, 1e4),
    until_deadline_s=st.none() | st.floats(-10.0, 1e4),
    share=st.floats(0.05, 1.0),
    hold_max_s=st.floats(0.0, 1.0),
)
def test_a_hold_keeps_the_tpot_and_the_deadline_even_if_the_next_token_is_the_last(
    *,
    tpot_s: float,
    tokens: int,
    since_first_s: float,
    until_deadline_s: float | None,
    share: float,
    hold_max_s: float,
) -> None:
    hold = RelayHold(hold_max_s=hold_max_s, tpot_share=share)
    got = hold.hold_s(
        tpot_s=tpot_s,
        output_tokens=tokens,
        since_first_token_s=since_first_s,
        until_deadline_s=until_deadline_s,
    )
    assert 0.0 <= got <= hold_max_s
    if got > 0.0:
        assert got >= hold.hold_min_s
        # the last token right after the hold began: it reaches the client `got` late
        assert (since_first_s + got) / tokens <= share * tpot_s * (1 + 1e-9)
        if until_deadline_s is not None:
            assert got <= share * until_deadline_s * (1 + 1e-9)
