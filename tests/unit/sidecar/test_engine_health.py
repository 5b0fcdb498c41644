"""Engine health from more than one error (sidecar/engine_health.py): down after failed probes in a row."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.sidecar.engine_health import EngineHealth

# Events: "ok"/"fail" a probe's result, "answered" a request got an answer, "unreachable" a request found
# no engine even on a fresh connection.
CASES = [
    # (events, up after them, probe due after them)
    ([], True, False),
    (["unreachable"], True, True),  # one refused connection never refuses traffic by itself
    (["unreachable", "unreachable", "unreachable"], True, True),
    (["fail"], True, False),  # one failed (or slow) probe neither
    (["fail", "fail"], False, False),
    (["unreachable", "fail", "fail"], False, False),
    (["fail", "ok", "fail"], True, False),  # not in a row
    (["fail", "answered", "fail"], True, False),  # a request's answer proves the engine reachable
    (["fail", "fail", "ok"], True, False),  # one good probe brings it back
    (["fail", "fail", "answered"], True, False),
    (["unreachable", "ok"], True, False),  # the due probe ran
]


def _apply(health: EngineHealth, events: list[str]) -> None:
    for event in events:
        if event in {"ok", "fail"}:
            health.on_probe(event == "ok")
        elif event == "answered":
            health.on_answered()
        else:
            health.on_unreachable()


@pytest.mark.parametrize(("events", "up", "due"), CASES)
def test_health_after_events(events: list[str], up: bool, due: bool) -> None:
    health = EngineHealth()
    _apply(health, events)
    assert (health.up, health.probe_due) == (up, due)


def test_suspect_asks_for_probes_at_the_short_interval() -> None:
    health = EngineHealth()
    seen = [health.suspect]
    health.on_unreachable()
    seen.append(health.suspect)
    health.on_probe(False)
    seen.append(health.suspect and health.up)  # one failure: still up, probed again soon
    health.on_probe(True)
    seen.append(health.suspect)
    assert seen == [False, True, True, False]


def test_a_threshold_of_one_is_down_on_the_first_failed_probe_and_zero_is_refused() -> None:
    health = EngineHealth(probe_failures_to_down=1)
    assert not health.on_probe(False)
    with pytest.raises(ValueError, match="at least 1"):
        EngineHealth(probe_failures_to_down=0)


@given(st.lists(st.sampled_from(["ok", "fail", "answered", "unreachable"]), max_size=40))
def test_down_exactly_when_the_last_probes_failed_in_a_row(events: list[str]) -> None:
    health = EngineHealth()
    _apply(health, events)
    run = 0  # failed probes since the last success or answer; requests that could not connect do not count
    down = False
    for event in events:
        if event == "fail":
            run += 1
            down = down or run >= 2
        elif event in {"ok", "answered"}:
            run, down = 0, False
    assert health.up is not down
    assert health.probe_failures == run
