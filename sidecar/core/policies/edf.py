"""edf: earliest (TTFT) deadline first, no rejection; stamps the deadline as vLLM priority.

The plain deadline-ordering baseline: it shows what ordering alone buys, without the guards of scorpio
and sloguard. O(log n) search per arrival (sorted list), O(1) per release.
"""

from dataclasses import dataclass
from typing import ClassVar

from sloguard.api.policies import SchedulingPolicyName
from sloguard.sidecar.core.base_policy import Entry
from sloguard.sidecar.core.ldf_policy import LdfPolicy


@dataclass(frozen=True)
class EdfParameters:
    """edf takes no parameters."""


class EdfPolicy(LdfPolicy):
    name: ClassVar[SchedulingPolicyName] = SchedulingPolicyName.EDF
    Parameters: ClassVar[type[EdfParameters]] = EdfParameters
    params: EdfParameters

    def _engine_priority(self, entry: Entry) -> int | None:
        return self.deadline_priority(entry.spec.ttft_deadline_s, demoted=entry.demoted)
