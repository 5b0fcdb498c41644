"""QLM-style waiting-time estimate for batch classes, and the replicas it takes to meet their deadlines.

QLM (`QLM-project/QLM`, `rwt_estimator.py`) estimates a group's waiting time as the tokens queued ahead
of it divided by the token throughput. Chiron notes the bound tightens as the queue grows: the work of n
queued requests is a sum of n output lengths, so by the central limit theorem its upper quantile is
`n·μ + z·σ·√n`, whose relative margin shrinks as 1/√n. Classes are drained earliest-deadline-first,
so the work ahead of a class's most urgent request is everything in more urgent classes plus its own
queue (for a backlog that arrived together, exactly; for a trickle, conservative).

The queued requests' work is what the output-length predictor said at enqueue time, and a predictor
trained on another domain is biased (the Azure batch trace: 289 tokens predicted on average against
210 generated). `length_bias` corrects it with the ratio of actual to predicted mean over the
requests of the class that completed recently, both of which the sidecar exports, clamped to the
tuning's range; without both means the queue is taken at face value.

`replicas_to_drain` adds what the papers leave out: a replica asked for now serves only after the
pool's start-up time, so the existing capacity must carry the work alone until then.
Pure functions; called by the SLOGuard and Chiron policies.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.operator.core.autoscaling.context import AutoscalerTuning, ScalingContext, z_for
from sloguard.operator.core.autoscaling.snapshot import ClassSnapshot


@dataclass(frozen=True, slots=True)
class BatchBacklog:
    """The work ahead of one batch class's most urgent queued request (EDF order), in tokens."""

    name: str
    target: float
    slack_s: float  # deadline − oldest age − margin (may be negative: already late)
    tokens_mean: float  # cumulative over this and more urgent classes
    tokens_variance: float  # cumulative
    service_s: float  # the last request's own generation time at its TPOT target
    queued: float  # requests of this class queued

    @property
    def tokens_upper(self) -> float:
        """Upper `target` quantile of the work ahead (normal approximation)."""
        return self.tokens_mean + z_for(self.target) * math.sqrt(max(0.0, self.tokens_variance))


def length_bias(snap: ClassSnapshot, tuning: AutoscalerTuning) -> float:
    """Actual over predicted output tokens of the class's completed requests, clamped; 1 when unknown."""
    actual, predicted = snap.output_tokens_mean, snap.predicted_tokens_mean
    if actual is None or predicted is None or predicted <= 0 or actual < 0:
        return 1.0
    return min(tuning.length_bias_max, max(tuning.length_bias_min, actual / predicted))


def batch_backlogs(
    context: ScalingContext,
    batch_classes: Sequence[SLOClassConfig],
    observed: Sequence[ClassSnapshot],
) -> tuple[list[BatchBacklog], list[str]]:
    """Cumulative EDF backlogs for the batch classes with queued work; notes name classes left out."""
    by_name = {c.name: c for c in observed}
    tuning = context.tuning
    items: list[tuple[float, SLOClassConfig, float, float, float]] = []
    notes: list[str] = []
    for cls in batch_classes:
        snap = by_name.get(cls.name)
        if snap is None or snap.queue_depth is None:
            notes.append(f"{cls.name}: no queue data")
            continue
        queued = snap.queue_depth
        in_flight = snap.in_flight or 0.0
        if queued <= 0 and in_flight <= 0:
            continue
        mean = snap.output_tokens_mean
        if snap.queue_predicted_tokens is not None and queued > 0:
            per_request = snap.queue_predicted_tokens / queued
            mean = mean if mean is not None else per_request
            queued_tokens = snap.queue_predicted_tokens * length_bias(snap, tuning)
        elif mean is not None:
            queued_tokens = queued * mean
        else:
            notes.append(f"{cls.name}: no output-length data")
            continue
        std = snap.output_tokens_std if snap.output_tokens_std is not None else tuning.output_tokens_cv * mean
        running = tuning.in_flight_remaining_fraction
        tokens = queued_tokens + running * in_flight * mean
        variance = (queued + running * in_flight) * std * std
        deadline = cls.deadline_s if cls.deadline_s is not None else math.inf
        age = snap.queue_oldest_age_s or 0.0
        slack = deadline - age - tuning.deadline_margin_fraction * deadline
        items.append((slack, cls, tokens, variance, queued))
    items.sort(key=lambda item: item[0])
    backlogs: list[BatchBacklog] = []
    tokens_sum = variance_sum = 0.0
    for slack, cls, tokens, variance, queued in items:
        tokens_sum += tokens
        variance_sum += variance
        snap = by_name[cls.name]
        mean = snap.output_tokens_mean or (tokens / max(queued, 1.0))
        backlogs.append(
            BatchBacklog(
                name=cls.name,
                target=cls.attainment_target,
                slack_s=slack,
                tokens_mean=tokens_sum,
                tokens_variance=variance_sum,
                service_s=mean * cls.tpot_s,
                queued=queued,
            )
        )
    return backlogs, notes


def drain_time_s(tokens: float, replicas: float, tokens_per_s_per_replica: float) -> float:
    """Time for `replicas` ready replicas to generate `tokens`; infinite without capacity."""
    if tokens <= 0:
        return 0.0
    capacity = replicas * tokens_per_s_per_replica
    return math.inf if capacity <= 0 else tokens / capacity


def replicas_to_drain(
    *,
    tokens: float,
    available_s: float,
    ready: float,
    tokens_per_s_per_replica: float,
    startup_s: float,
) -> float | None:
    """Fewest replicas (ready ones first) that generate `tokens` within `available_s`.

    Replicas beyond `ready` start now and produce only after `startup_s`. Returns a float (the caller
    rounds up) or None when no number of replicas can make it (the time left is shorter than a start-up
    and the ready ones cannot finish alone).
    """
    rate = tokens_per_s_per_replica
    if tokens <= 0:
        return 0.0
    if rate <= 0 or available_s <= 0:
        return None
    alone = tokens / (rate * available_s)
    if alone <= ready:
        return alone
    productive_s = available_s - startup_s
    if productive_s <= 0:
        return None
    remaining = tokens - ready * rate * available_s
    return ready + remaining / (rate * productive_s)
