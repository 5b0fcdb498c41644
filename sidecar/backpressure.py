"""Local backpressure (Chiron's local autoscaler): an AIMD in-flight cap from measured inter-token latency.

The lifecycle feeds every measured inter-token latency (`observe_itl`, seconds per token) together with
the TPOT target of the request it was measured on; every `window_s` (once the window holds `min_samples`)
the controller compares a high percentile of the window's ITLs to the tightest target seen in it: above
it, the cap shrinks multiplicatively; below it and while the cap was actually reached, it grows by one.
The cap stays inside [min, max] from config; `pin` (the operator's SetLimits) fixes it and switches the
adaptation off until `unpin`. No clock: time is an argument.
"""

import math
from dataclasses import dataclass


@dataclass
class AimdSettings:
    min_cap: int
    max_cap: int
    window_s: float = 1.0
    decrease_factor: float = 0.75
    increase_step: int = 1
    percentile: float = 0.9
    min_samples: int = 8


class AimdCap:
    def __init__(self, settings: AimdSettings, initial_cap: int | None = None) -> None:
        self.settings = settings
        start = settings.max_cap if initial_cap is None else initial_cap
        self._cap = min(settings.max_cap, max(settings.min_cap, start))
        self._pinned: int | None = None
        self._samples: list[float] = []
        self._tightest_tpot_s = math.inf
        self._saturated = False
        self._window_start_s: float | None = None

    @property
    def cap(self) -> int:
        return self._pinned if self._pinned is not None else self._cap

    @property
    def pinned(self) -> bool:
        return self._pinned is not None

    def set_bounds(self, min_cap: int, max_cap: int) -> None:
        if not 1 <= min_cap <= max_cap:
            raise ValueError(f"need 1 <= min_in_flight <= max_in_flight, got {min_cap}, {max_cap}")
        self.settings.min_cap, self.settings.max_cap = min_cap, max_cap
        self._cap = min(max_cap, max(min_cap, self._cap))

    def pin(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"in-flight cap must be >= 1, got {cap}")
        self._pinned = cap

    def unpin(self) -> None:
        self._pinned = None

    def note_saturated(self) -> None:
        """The release loop had queued work but no room: the cap, not demand, limited throughput."""
        self._saturated = True

    def observe_itl(self, itl_s: float, tpot_target_s: float, now_s: float) -> None:
        if self._window_start_s is None:
            self._window_start_s = now_s
        self._samples.append(itl_s)
        self._tightest_tpot_s = min(self._tightest_tpot_s, tpot_target_s)
        if now_s - self._window_start_s >= self.settings.window_s:
            self._close_window(now_s)

    def _close_window(self, now_s: float) -> None:
        if len(self._samples) < self.settings.min_samples:
            return  # too little evidence: the window stays open until it has enough samples
        samples, target = sorted(self._samples), self._tightest_tpot_s
        saturated = self._saturated
        self._samples, self._tightest_tpot_s, self._saturated = [], math.inf, False
        self._window_start_s = now_s
        high = samples[min(len(samples) - 1, int(self.settings.percentile * len(samples)))]
        if high > target:
            self._cap = max(self.settings.min_cap, math.floor(self._cap * self.settings.decrease_factor))
        elif saturated:
            self._cap = min(self.settings.max_cap, self._cap + self.settings.increase_step)
