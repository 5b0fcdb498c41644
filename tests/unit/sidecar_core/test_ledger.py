"""Outcome accounting: every request ends exactly once, counted per outcome, reason and class."""

import pytest

from sloguard.api.errors import RejectionReason
from sloguard.sidecar.core.ledger import LedgerError, OutcomeLedger
from sloguard.sidecar.core.requests import Outcome


def test_each_outcome_is_counted_once_per_class() -> None:
    ledger = OutcomeLedger()
    for rid in ("a", "b", "c", "d"):
        ledger.admit(rid, "chat")
    ledger.end("a", Outcome.COMPLETED, slo_met=True)
    ledger.end("b", Outcome.COMPLETED, slo_met=False)
    ledger.end("c", Outcome.REJECTED, reason=RejectionReason.TTFT_UNATTAINABLE)
    ledger.end("d", Outcome.CANCELLED)
    ledger.reject_at_arrival("batch", RejectionReason.QUEUE_FULL)
    counts = ledger.counts()
    assert counts.outcomes == {
        (Outcome.COMPLETED, "chat"): 2,
        (Outcome.REJECTED, "chat"): 1,
        (Outcome.CANCELLED, "chat"): 1,
        (Outcome.REJECTED, "batch"): 1,
    }
    assert counts.rejections == {
        (RejectionReason.TTFT_UNATTAINABLE, "chat"): 1,
        (RejectionReason.QUEUE_FULL, "batch"): 1,
    }
    assert counts.slo_met == {"chat": 1} and counts.admitted == {"chat": 4} and counts.open == 0
    assert counts.total(Outcome.REJECTED) == 2


@pytest.mark.parametrize("second", list(Outcome))
def test_ending_twice_raises(second: Outcome) -> None:
    ledger = OutcomeLedger()
    ledger.admit("a", "chat")
    ledger.end("a", Outcome.FAILED)
    reason = RejectionReason.DRAINING if second is Outcome.REJECTED else None
    with pytest.raises(LedgerError, match="not open"):
        ledger.end("a", second, reason=reason)
    assert ledger.counts().total(Outcome.FAILED) == 1


def test_a_rejection_needs_a_reason_and_nothing_else_has_one() -> None:
    ledger = OutcomeLedger()
    ledger.admit("a", "chat")
    with pytest.raises(LedgerError):
        ledger.end("a", Outcome.REJECTED)
    with pytest.raises(LedgerError):
        ledger.end("a", Outcome.COMPLETED, reason=RejectionReason.DRAINING)
    assert ledger.is_open("a")  # a refused end loses nothing
    with pytest.raises(LedgerError, match="already open"):
        ledger.admit("a", "chat")
