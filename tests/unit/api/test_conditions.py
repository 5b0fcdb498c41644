"""Conditions keep their transition time while their status holds (no status churn on every reconcile)."""

from sloguard.api.conditions import ConditionStatus, ConditionType, find_condition, set_condition


def test_transition_time_moves_only_when_status_changes() -> None:
    ready = ConditionType.READY.value
    conditions = set_condition(
        [], type_=ready, status=ConditionStatus.FALSE, reason="Starting", message="", now_iso="t1"
    )
    conditions = set_condition(
        conditions, type_=ready, status=ConditionStatus.FALSE, reason="Waiting", message="0/1", now_iso="t2"
    )
    first = find_condition(conditions, ready)
    assert first is not None and (first.last_transition_time, first.reason) == ("t1", "Waiting")
    conditions = set_condition(
        conditions,
        type_=ready,
        status=ConditionStatus.TRUE,
        reason="Ready",
        message="",
        now_iso="t3",
        observed_generation=4,
    )
    second = find_condition(conditions, ready)
    assert second is not None and second.last_transition_time == "t3" and second.observed_generation == 4
    assert len(conditions) == 1
    assert second.to_wire() == {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": "",
        "lastTransitionTime": "t3",
        "observedGeneration": 4,
    }
