"""Outcome accounting: every request ends exactly once, and the counts per outcome and class prove it.

Owned by each policy (sloguard.sidecar.core.policy); the sidecar's metrics and the simulator's reports
read its counters. A request is *open* from admission until it ends; ending a request that is not open
(never admitted, or already ended) raises `LedgerError`, so a double end is a loud bug, not a silent
miscount. Memory stays bounded: only open requests are remembered individually. Pure.
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from sloguard.api.errors import RejectionReason
from sloguard.sidecar.core.requests import Outcome


class LedgerError(RuntimeError):
    """A request was ended twice, ended without being admitted, or admitted twice."""


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    """A copy of the counters: outcomes per (outcome, class), rejections per (reason, class)."""

    outcomes: Mapping[tuple[Outcome, str], int]
    rejections: Mapping[tuple[RejectionReason, str], int]
    slo_met: Mapping[str, int]
    admitted: Mapping[str, int]
    open: int

    def total(self, outcome: Outcome) -> int:
        return sum(n for (o, _), n in self.outcomes.items() if o is outcome)


class OutcomeLedger:
    """Open requests by id, and monotone counters of how requests ended."""

    def __init__(self) -> None:
        self._open: dict[str, str] = {}  # request_id -> slo_class
        self._outcomes: Counter[tuple[Outcome, str]] = Counter()
        self._rejections: Counter[tuple[RejectionReason, str]] = Counter()
        self._slo_met: Counter[str] = Counter()
        self._admitted: Counter[str] = Counter()

    def is_open(self, request_id: str) -> bool:
        return request_id in self._open

    @property
    def open_count(self) -> int:
        return len(self._open)

    def admit(self, request_id: str, slo_class: str) -> None:
        """The request entered the policy; it must end exactly once from now on."""
        if request_id in self._open:
            raise LedgerError(f"request {request_id!r} is already open")
        self._open[request_id] = slo_class
        self._admitted[slo_class] += 1

    def reject_at_arrival(self, slo_class: str, reason: RejectionReason) -> None:
        """A request refused on arrival: it ends at once without ever being open."""
        self._outcomes[(Outcome.REJECTED, slo_class)] += 1
        self._rejections[(reason, slo_class)] += 1

    def end(
        self,
        request_id: str,
        outcome: Outcome,
        *,
        reason: RejectionReason | None = None,
        slo_met: bool = False,
    ) -> str:
        """End an open request; returns its class. Raises LedgerError when it is not open."""
        slo_class = self._open.pop(request_id, None)
        if slo_class is None:
            raise LedgerError(f"request {request_id!r} ended as {outcome} but is not open (ended twice?)")
        if (outcome is Outcome.REJECTED) != (reason is not None):
            self._open[request_id] = slo_class
            raise LedgerError(f"only a rejection has a reason, and it needs one ({outcome}, {reason})")
        self._outcomes[(outcome, slo_class)] += 1
        if reason is not None:
            self._rejections[(reason, slo_class)] += 1
        if slo_met and outcome is Outcome.COMPLETED:
            self._slo_met[slo_class] += 1
        return slo_class

    def counts(self) -> LedgerCounts:
        return LedgerCounts(
            outcomes=dict(self._outcomes),
            rejections=dict(self._rejections),
            slo_met=dict(self._slo_met),
            admitted=dict(self._admitted),
            open=len(self._open),
        )
