"""Shared least-deadline-first queueing for the deadline-driven policies (edf, scorpio, sa, sloguard).

Two `SortedQueue`s (sloguard.sidecar.core.ttft_guard): the SLO-bound queue ordered by TTFT deadline
(ties: the more important class first), and the best-effort queue for demoted requests, served only
after every SLO-bound one. Subclasses add their guards. Pure.
"""

from collections.abc import Iterator

from sloguard.sidecar.core.base_policy import Entry, QueuePolicy
from sloguard.sidecar.core.ttft_guard import SortedQueue


class LdfPolicy(QueuePolicy):
    """A QueuePolicy whose order is least TTFT deadline first, demoted requests last."""

    def _init_queue(self) -> None:
        self._main = SortedQueue()
        self._best_effort = SortedQueue()
        self._entries: dict[str, Entry] = {}

    def _push(self, entry: Entry, now_s: float) -> None:
        spec = entry.spec
        self._entries[spec.request_id] = entry
        queue = self._best_effort if entry.demoted else self._main
        queue.push(
            spec.request_id,
            spec.ttft_deadline_s,
            spec.prompt_tokens,
            tie=self._tie(entry),
            weight=self._queue_weight(entry),
        )

    def _remove(self, entry: Entry) -> None:
        request_id = entry.request_id
        if self._entries.get(request_id) is entry:
            del self._entries[request_id]
        self._main.remove(request_id) or self._best_effort.remove(request_id)

    def _candidates(self, now_s: float, room: int) -> Iterator[Entry]:
        for queue in (self._main, self._best_effort):
            for item in queue:
                yield self._entries[item[4]]

    def _tie(self, entry: Entry) -> float:
        """Order among equal TTFT deadlines (lower first): the more important class first."""
        return float(-entry.spec.class_priority)

    def _queue_weight(self, entry: Entry) -> float:
        """Weight of a queued item handed to the wait model (sloguard: predicted output tokens)."""
        return 0.0

    def _queued_tokens(self) -> float:
        return float(self._main.total_tokens)

    def move_to_best_effort(self, entry: Entry) -> None:
        """Demote a queued SLO-bound request: it now waits behind every SLO-bound one."""
        spec = entry.spec
        if self._main.remove(spec.request_id):
            self.demote(entry)
            self._best_effort.push(
                spec.request_id,
                spec.ttft_deadline_s,
                spec.prompt_tokens,
                tie=self._tie(entry),
                weight=self._queue_weight(entry),
            )
