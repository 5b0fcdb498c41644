"""sa: the simulated-annealing priority sequence of arXiv 2504.14966, as a sidecar policy (papers.md §6.5).

The whole queue (or, with `window` > 0, its `window` most urgent requests, least TTFT deadline first) is
planned by sloguard.sidecar.core.annealing: an order and a grouping that maximise G = n_met / sum of
latencies, starting from the LDF order. Full strength by default: the plan covers every queued request,
and `iterations` is where the benchmark's convergence curve flattens (`sloguard bench sa`, the
"convergence" table: attainment against the iteration budget). Releases consume the plan group by group:
one release step sends at most the first remaining group (the paper's batch-size control; the in-flight
cap still bounds it). The plan is recomputed when the queue changed (an arrival, a cancellation) and when
a group has been released, so each next group is planned from where the engine really is (its running
requests and the time now) rather than from the predictions made for the previous groups. No rejection;
no engine priority. The budget is an iteration count (`iterations`), so the decision is deterministic for
a seed.
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from sloguard.api.policies import SchedulingPolicyName
from sloguard.sidecar.core.annealing import SaJob, anneal
from sloguard.sidecar.core.base_policy import Entry
from sloguard.sidecar.core.ldf_policy import LdfPolicy

ITERATIONS = 1000  # where the convergence curve flattens: `sloguard bench sa`, docs/benchmarks.md


@dataclass(frozen=True)
class SaParameters:
    window: int = field(default=0, metadata={"min": 0})  # 0: the whole queue
    iterations: int = field(default=ITERATIONS, metadata={"min": 0})
    initial_temperature: float = field(default=0.1, metadata={"min": 0.0})
    cooling: float = field(default=0.97, metadata={"min": 0.0})


class SaPolicy(LdfPolicy):
    name: ClassVar[SchedulingPolicyName] = SchedulingPolicyName.SA
    Parameters: ClassVar[type[SaParameters]] = SaParameters
    params: SaParameters

    def _init_queue(self) -> None:
        super()._init_queue()
        self._rng = random.Random(self.seed)
        self._plan: list[list[str]] = []
        self._dirty = True
        self._yielded: set[str] = set()
        self.plans_computed = 0

    def _push(self, entry: Entry, now_s: float) -> None:
        super()._push(entry, now_s)
        self._dirty = True

    def _remove(self, entry: Entry) -> None:
        super()._remove(entry)
        if entry.request_id in self._yielded:
            self._yielded.discard(entry.request_id)
            if self._plan:
                group = self._plan[0]
                if entry.request_id in group:
                    group.remove(entry.request_id)
                if not group:
                    self._plan.pop(0)
                    self._dirty = True  # the next group is planned from where the engine really is
        else:
            self._dirty = True

    def replan(self, now_s: float, room: int) -> None:
        """Anneal over the head of the queue; the plan's groups replace the old plan."""
        window: list[Entry] = []
        limit = self.params.window or len(self._main)
        for item in self._main:
            if len(window) >= limit:
                break
            window.append(self._entries[item[4]])
        jobs = [
            SaJob(
                arrival_s=e.spec.arrival_s,
                prompt_tokens=e.spec.prompt_tokens,
                output_tokens=max(1.0, e.predicted_output_tokens),
                ttft_s=e.spec.ttft_s,
                tpot_s=e.spec.tpot_s,
                deadline_s=e.spec.deadline_s,
            )
            for e in window
        ]
        plan = anneal(
            jobs,
            now_s=now_s,
            running=self.in_flight_count,
            first_group_cap=max(1, room),
            group_cap=max(1, self._last_cap),
            latency=self.latency,
            rng=self._rng,
            iterations=self.params.iterations,
            initial_temperature=self.params.initial_temperature,
            cooling=self.params.cooling,
        )
        groups: list[list[str]] = []
        pos = 0
        for size in plan.sizes:
            groups.append([window[i].request_id for i in plan.order[pos : pos + size]])
            pos += size
        self._plan = groups
        self._dirty = False
        self.plans_computed += 1

    def _candidates(self, now_s: float, room: int) -> Iterator[Entry]:
        self._yielded = set()
        if self._dirty or not self._plan:
            self.replan(now_s, room)
        if not self._plan:
            return
        for request_id in list(self._plan[0]):
            entry = self._entries.get(request_id)
            if entry is not None:
                self._yielded.add(request_id)
                yield entry
