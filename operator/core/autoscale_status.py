"""What one autoscaling tick writes back: replica counts in, status fields, Events and restart memory out.

Pure glue between the decision core (`core.autoscaling`) and the Kubernetes wire form, called by the
operator's autoscaling timer (`sloguard.operator.autoscale`), which does the reading and writing:

- `replica_counts`: the decision core's `ReplicaCounts` from the pool's desired replicas and its
  Deployment's status;
- `history_from_status`: after an operator restart, a `ScalingHistory` seeded from `status.lastScaling`
  so cooldowns survive the restart (recommendations are not persisted, so a scale-down first waits one
  stabilisation window of fresh ones);
- `autoscaling_status`: `desiredReplicas`, `lastScaling`, per-class observations and the three
  conditions the autoscaler owns (SLOAtRisk, ScalingLimited, MetricsUnavailable), set with
  `set_condition` on the live conditions so the reconciler's (Ready, Progressing, Degraded) are kept;
- `scaling_events`: a Kubernetes Event on each replica change and on MetricsUnavailable transitions;
- `pod_loads`: the pool's pods with their sidecars' load, for the drain choice (`autoscaling.drain`).

Time comes in as arguments (`now_iso`, the decision's `time_s`); nothing here reads the clock.
"""

import datetime
from dataclasses import dataclass
from typing import Any

from sloguard.api.conditions import Condition, ConditionStatus, ConditionType, set_condition
from sloguard.operator.core.autoscaling import (
    PoolSnapshot,
    ReplicaCounts,
    ScalingDecision,
    ScalingEvent,
    ScalingHistory,
)
from sloguard.operator.core.autoscaling.drain import PodLoad

OWNED_CONDITIONS = (
    ConditionType.SLO_AT_RISK,
    ConditionType.SCALING_LIMITED,
    ConditionType.METRICS_UNAVAILABLE,
)
REASON_MAX_CHARS = 1024  # status.lastScaling.reason's schema limit


@dataclass(frozen=True, slots=True)
class EventSpec:
    """A core/v1 Event about the pool, before the adapter adds names and times."""

    type: str  # Normal or Warning
    reason: str  # CamelCase
    message: str


def iso_of(time_s: float) -> str:
    return datetime.datetime.fromtimestamp(time_s, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_of(iso: str) -> float:
    """Unix seconds of an RFC 3339 time ("Z" or an offset); ValueError when it is not one."""
    parsed = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def replica_counts(desired: int, deployment: dict[str, Any] | None) -> ReplicaCounts:
    """`current` is what the pool asks for (the /scale value); ready and starting come from its pods."""
    status = (deployment or {}).get("status") or {}
    ready = max(0, int(status.get("readyReplicas", 0) or 0))
    return ReplicaCounts(current=desired, ready=ready, starting=max(0, desired - ready))


def history_from_status(status: dict[str, Any] | None) -> ScalingHistory:
    """The history to start from after a restart: the last change recorded in the status, if any."""
    last = (status or {}).get("lastScaling") or {}
    try:
        event = ScalingEvent(
            time_s=seconds_of(str(last["time"])),
            from_replicas=int(last["fromReplicas"]),
            to_replicas=int(last["toReplicas"]),
            reason=str(last.get("reason", "")),
        )
    except (KeyError, TypeError, ValueError):
        return ScalingHistory()
    if event.from_replicas == event.to_replicas:
        return ScalingHistory()
    return ScalingHistory(events=(event,))


def _ms(value_s: float | None) -> float | None:
    return None if value_s is None or value_s < 0 else round(value_s * 1000.0, 3)


def _class_observations(decision: ScalingDecision, snapshot: PoolSnapshot) -> list[dict[str, Any]]:
    targets = {c.name: c.target for c in decision.classes}
    out = []
    for snap in snapshot.classes:
        observation: dict[str, Any] = {
            "name": snap.name,
            "attainment": None if snap.attainment is None else min(1.0, max(0.0, snap.attainment)),
            "target": targets.get(snap.name),
            "ttftP50Ms": _ms(snap.ttft_p50_s),
            "ttftP99Ms": _ms(snap.ttft_p99_s),
            "tpotP50Ms": _ms(snap.tpot_p50_s),
            "tpotP99Ms": _ms(snap.tpot_p99_s),
        }
        out.append({k: v for k, v in observation.items() if v is not None})
    return out


def autoscaling_status(
    live_status: dict[str, Any] | None,
    decision: ScalingDecision,
    snapshot: PoolSnapshot,
    *,
    generation: int | None,
    now_iso: str,
) -> dict[str, Any]:
    """The status fields the autoscaler owns, for a merge patch of the live pool's status.

    `classes` is left out when the snapshot had no data (the last observation stays), and `lastScaling`
    when nothing changed (it records the last change, not the last tick).
    """
    live = live_status or {}
    conditions = [Condition.model_validate(c) for c in live.get("conditions", []) or []]
    for type_ in OWNED_CONDITIONS:
        cond = decision.condition(type_)
        if cond is None:
            continue
        conditions = set_condition(
            conditions,
            type_=type_.value,
            status=cond.status,
            reason=cond.reason,
            message=cond.message,
            now_iso=now_iso,
            observed_generation=generation,
        )
    status: dict[str, Any] = {
        "desiredReplicas": decision.desired_replicas,
        "conditions": [c.to_wire() for c in conditions],
    }
    if snapshot.available and snapshot.classes:
        status["classes"] = _class_observations(decision, snapshot)
    if decision.changed:
        status["lastScaling"] = {
            "time": iso_of(decision.time_s),
            "fromReplicas": decision.from_replicas,
            "toReplicas": decision.desired_replicas,
            "reason": decision.reason[:REASON_MAX_CHARS],
        }
    return status


def condition_status(status: dict[str, Any] | None, type_: ConditionType) -> str | None:
    """ "True", "False", "Unknown" or None (absent) for condition `type_` of a wire-form status."""
    for raw in (status or {}).get("conditions", []) or []:
        if raw.get("type") == type_.value:
            return str(raw.get("status"))
    return None


def scaling_events(decision: ScalingDecision, metrics_before: str | None) -> list[EventSpec]:
    """Events for this tick: the replica change, and MetricsUnavailable turning on or off.

    `metrics_before` is the MetricsUnavailable status of the previous tick ("True", "False", None):
    the caller remembers it, and reads it from the status only after a restart.
    """
    events = []
    if decision.changed:
        up = decision.desired_replicas > decision.from_replicas
        events.append(
            EventSpec(
                "Normal",
                "ScaledUp" if up else "ScaledDown",
                f"{decision.from_replicas} → {decision.desired_replicas} replicas: {decision.reason}",
            )
        )
    metrics = decision.condition(ConditionType.METRICS_UNAVAILABLE)
    if metrics is not None:
        before = metrics_before
        now = metrics.status.value
        if now == ConditionStatus.TRUE and before != ConditionStatus.TRUE:
            events.append(EventSpec("Warning", "MetricsUnavailable", f"{metrics.reason}: {metrics.message}"))
        elif now == ConditionStatus.FALSE and before == ConditionStatus.TRUE:
            events.append(EventSpec("Normal", "MetricsAvailable", metrics.message))
    return events


def _pod_ready(pod: dict[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions", []) or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def pod_loads(pods: list[dict[str, Any]], loads: dict[str, float], selector: dict[str, str]) -> list[PodLoad]:
    """The pool's pods (those carrying every `selector` label) with their sidecar load, for `drain`."""
    out = []
    for pod in pods:
        md = pod.get("metadata") or {}
        labels = md.get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        name = str(md.get("name", ""))
        out.append(
            PodLoad(
                name=name,
                ready=_pod_ready(pod),
                load=loads.get(name),
                terminating=bool(md.get("deletionTimestamp")),
            )
        )
    return out
