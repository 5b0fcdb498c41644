"""The engine time the prompts released lately took from the running decodes (prefill stalls).

The sloguard policy (sidecar/core/policies/sloguard.py `_tpot_verdict`) records each request it releases
with the prefill time its latency model gives the prompt, and asks how much of that fell within the span a
candidate would decode for. A decode step waits for the prompts scheduled with it (vLLM's V1 scheduler
mixes prefill chunks into the decode steps), so over a span in which prefills took a share `s` of the
engine's time a batch decodes about 1 / (1 - s) times slower than its steps alone: the decode model
prices the steps, this history prices the stalls. Pure: times are passed in.
"""

from bisect import bisect_left
from dataclasses import dataclass, field

MAX_STALL_SHARE = 0.9
"""The largest share of engine time counted as prefill: beyond it the batch is priced 10x its steps,
which holds anything a TPOT target bounds; the cap keeps the price finite where prompts alone fill a span."""


@dataclass
class PrefillStallHistory:
    """Release times with the cumulative prefill seconds up to each, oldest first. Entries older than
    `horizon_s` before the latest are dropped (a span reaching further back sees only the horizon), so the
    memory is bounded by the releases of one horizon."""

    horizon_s: float = 600.0
    _at_s: list[float] = field(default_factory=list)
    _cumulative_s: list[float] = field(default_factory=lambda: [0.0])  # before each entry, and after all

    def __post_init__(self) -> None:
        if not self.horizon_s > 0.0:
            raise ValueError(f"horizon_s must be positive, got {self.horizon_s}")

    def __len__(self) -> int:
        return len(self._at_s)

    def add(self, at_s: float, prefill_s: float) -> None:
        """One prompt released at `at_s` that takes `prefill_s` of engine time (times never go back)."""
        if prefill_s < 0.0:
            raise ValueError(f"prefill_s must be >= 0, got {prefill_s}")
        if self._at_s and at_s < self._at_s[-1]:
            raise ValueError(f"release at {at_s} before the last one, {self._at_s[-1]}")
        self._at_s.append(at_s)
        self._cumulative_s.append(self._cumulative_s[-1] + prefill_s)
        stale = bisect_left(self._at_s, at_s - self.horizon_s)
        if stale > len(self._at_s) // 2:  # amortised: drop the old half at once
            base = self._cumulative_s[stale]
            del self._at_s[:stale]
            self._cumulative_s = [c - base for c in self._cumulative_s[stale:]]

    def since(self, from_s: float) -> float:
        """The prefill seconds of the prompts released at or after `from_s`."""
        first = bisect_left(self._at_s, from_s)
        return self._cumulative_s[-1] - self._cumulative_s[first]
