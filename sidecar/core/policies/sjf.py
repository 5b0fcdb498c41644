"""sjf: SSJF, speculative shortest-job-first on the predicted output length, with its starvation guard.

reference/papers.md §3.1: the queue is sorted by predicted execution time `base + per_token *
predicted_tokens` (0.1 s + 0.02 s/token in the authors' simulator); the longest-waiting request goes
first once it has waited more than `starvation_wait_s` (100 s) or more than `starvation_factor` (10)
times its predicted execution time. No rejection, no engine priority (the engine runs FCFS on the
sidecar's release order). O(log n) per arrival, O(1) amortised per release.
"""

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from sloguard.api.policies import SchedulingPolicyName
from sloguard.sidecar.core.base_policy import Entry
from sloguard.sidecar.core.ldf_policy import LdfPolicy


@dataclass(frozen=True)
class SjfParameters:
    exec_base_s: float = field(default=0.1, metadata={"min": 0.0})
    exec_per_token_s: float = field(default=0.02, metadata={"min": 0.0})
    starvation_wait_s: float = field(default=100.0, metadata={"min": 0.0})
    starvation_factor: float = field(default=10.0, metadata={"min": 0.0})


class SjfPolicy(LdfPolicy):
    name: ClassVar[SchedulingPolicyName] = SchedulingPolicyName.SJF
    Parameters: ClassVar[type[SjfParameters]] = SjfParameters
    params: SjfParameters

    def _init_queue(self) -> None:
        super()._init_queue()
        self._arrivals: deque[Entry] = deque()

    def _exec_s(self, entry: Entry) -> float:
        return self.params.exec_base_s + self.params.exec_per_token_s * entry.predicted_output_tokens

    def _push(self, entry: Entry, now_s: float) -> None:
        spec = entry.spec
        self._entries[spec.request_id] = entry
        self._main.push(spec.request_id, self._exec_s(entry), spec.prompt_tokens, tie=spec.arrival_s)
        self._arrivals.append(entry)

    def _remove(self, entry: Entry) -> None:
        super()._remove(entry)
        while self._arrivals and self._entries.get(self._arrivals[0].request_id) is not self._arrivals[0]:
            self._arrivals.popleft()

    def _is_starving(self, entry: Entry, now_s: float) -> bool:
        waited = now_s - entry.spec.arrival_s
        limit = min(self.params.starvation_wait_s, self.params.starvation_factor * self._exec_s(entry))
        return waited > limit

    def _candidates(self, now_s: float, room: int) -> Iterator[Entry]:
        # The longest-waiting requests go first while they starve (oldest first, at most `room`).
        promoted: set[str] = set()
        for entry in self._arrivals:
            if len(promoted) >= room:
                break
            if self._entries.get(entry.request_id) is not entry:
                continue
            if not self._is_starving(entry, now_s):
                break
            promoted.add(entry.request_id)
            yield entry
        for item in self._main:
            if item[4] not in promoted:
                yield self._entries[item[4]]
