"""fcfs: vLLM's default behaviour as a sidecar policy: arrival order, no rejection, no priority.

The baseline every benchmark compares against. Admits while the queue has room and releases in arrival
order up to the in-flight cap and the KV room. O(1) amortised per decision (a deque, lazy deletion).
"""

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from sloguard.api.policies import SchedulingPolicyName
from sloguard.sidecar.core.base_policy import Entry, QueuePolicy


@dataclass(frozen=True)
class FcfsParameters:
    """fcfs takes no parameters."""


class ArrivalOrderPolicy(QueuePolicy):
    """Queue in arrival order (shared by fcfs and mooncake)."""

    def _init_queue(self) -> None:
        self._order: deque[Entry] = deque()
        self._live: dict[str, Entry] = {}

    def _push(self, entry: Entry, now_s: float) -> None:
        self._order.append(entry)
        self._live[entry.request_id] = entry

    def _remove(self, entry: Entry) -> None:
        if self._live.get(entry.request_id) is entry:
            del self._live[entry.request_id]
        while self._order and self._live.get(self._order[0].request_id) is not self._order[0]:
            self._order.popleft()

    def _candidates(self, now_s: float, room: int) -> Iterator[Entry]:
        for entry in self._order:
            if self._live.get(entry.request_id) is entry:
                yield entry


class FcfsPolicy(ArrivalOrderPolicy):
    name: ClassVar[SchedulingPolicyName] = SchedulingPolicyName.FCFS
    Parameters: ClassVar[type[FcfsParameters]] = FcfsParameters
    params: FcfsParameters
