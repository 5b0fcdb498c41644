"""Drain-aware scale-down: which pods the ReplicaSet should remove, as `pod-deletion-cost` annotations.

Called by the operator's autoscaling timer (`sloguard.operator.autoscale`) just before it lowers a pool's
replicas. The ReplicaSet controller deletes pods in rank order: unscheduled, pending and not-ready pods
first, then lower `controller.kubernetes.io/pod-deletion-cost` before higher. We choose the pods with the
least work in their sidecars (in flight plus queued) and give them a negative cost, and every other pod
of the pool cost 0, so the pods that go are the ones whose sidecars finish their streams soonest after
SIGTERM (the sidecar stops admitting and drains within the grace period). Pure: loads come in as data.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
KEEP_COST = 0
"""The cost of a pod we want kept: the Kubernetes default when the annotation is absent."""


@dataclass(frozen=True, slots=True)
class PodLoad:
    """One pod of the pool as the autoscaler sees it before a scale-down."""

    name: str
    ready: bool
    load: float | None  # sidecar in flight + queued over all classes; None when its series are missing
    terminating: bool = False  # has a deletionTimestamp: already going, not a candidate


def _rank(pod: PodLoad) -> tuple[int, float, str]:
    # Not-ready pods go first (the ReplicaSet removes them first anyway), then the least loaded; a pod
    # whose sidecar reports nothing is kept over one known to be idle (its load may be anything).
    if not pod.ready:
        return (0, 0.0, pod.name)
    if pod.load is None:
        return (2, 0.0, pod.name)
    return (1, pod.load, pod.name)


def choose_pods_to_remove(pods: Sequence[PodLoad], count: int) -> tuple[str, ...]:
    """Names of the `count` pods to remove first, least loaded first; terminating pods are skipped."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    candidates = sorted((p for p in pods if not p.terminating), key=_rank)
    return tuple(p.name for p in candidates[:count])


def deletion_costs(pods: Sequence[PodLoad], count: int) -> dict[str, int]:
    """Desired deletion cost of every non-terminating pod: -count..-1 for the chosen ones (the first
    chosen lowest), `KEEP_COST` for the rest, so a pod chosen at an earlier scale-down that is busy now
    is released again."""
    chosen = choose_pods_to_remove(pods, count)
    costs = {p.name: KEEP_COST for p in pods if not p.terminating}
    for rank, name in enumerate(chosen):
        costs[name] = rank - len(chosen)
    return costs


def cost_patches(costs: Mapping[str, int], current: Mapping[str, str | None]) -> dict[str, int]:
    """Only the pods whose annotation must change (`current`: the live annotation value or None)."""
    patches = {}
    for name, cost in costs.items():
        live = current.get(name)
        try:
            live_cost = KEEP_COST if live is None else int(live)
        except ValueError:  # someone wrote garbage: overwrite it
            live_cost = None
        if live_cost != cost:
            patches[name] = cost
    return patches
