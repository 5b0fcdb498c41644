"""Names of the scheduling policies a pool may select, and what each needs from the engine.

The sidecar's policy registry must register exactly these names (a conformance test checks it); the
CRD schema lists them as an enum, so a typo in an InferencePool is refused by the API server.
"""

from enum import StrEnum


class SchedulingPolicyName(StrEnum):
    FCFS = "fcfs"  # pass-through in arrival order: vLLM's default behaviour
    SJF = "sjf"  # speculative shortest-job-first on predicted output length (SSJF)
    EDF = "edf"  # earliest deadline first, no rejection
    MOONCAKE = "mooncake"  # early rejection on predicted load (Mooncake)
    SA = "sa"  # simulated-annealing priority sequence (arXiv 2504.14966)
    SCORPIO = "scorpio"  # SCORPIO's TTFT and TPOT guards, as a sidecar
    SLOGUARD = "sloguard"  # our default: combines and improves on the above

    @property
    def stamps_engine_priority(self) -> bool:
        """Whether the policy sends a vLLM `priority` (the engine must run `--scheduling-policy priority`)."""
        return self in _STAMPING


_STAMPING = frozenset({SchedulingPolicyName.SLOGUARD, SchedulingPolicyName.EDF})
