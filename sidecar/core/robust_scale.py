"""A multiplicative correction learned online, fast at first, robust to outliers, never stuck high.

The latency model (sidecar/core/latency.py) multiplies its prefill prediction by one of these, learned from
(observed / predicted) ratios of first-token times. Issue 16 measured what a plain running fit does in front
of real vLLM: it starts from another engine's coefficients, learns slowly, and a burst of host stalls drives
it up to where it rejects every tight request on an idle engine, which then produces no new observations to
pull it back. This estimator:

- works in log space (a 2x overestimate weighs as much as a 2x underestimate);
- learns from scratch: the first observation sets the level, the next `warmup` ones average in with weight
  1/n, after that an exponential average with weight `alpha`;
- weighs each observation by the share of it this scale explains (`observe(..., weight)`, default 1: the
  latency model splits a first token between its two prefill corrections); steps scale with the weight and
  the warmup counts summed weights;
- winsorizes every observation after the first to `level ± clip_log` (a stall of any length moves the level by
  at most `alpha * clip_log`), and keeps the level within `[min_scale, max_scale]`;
- tracks a low quantile (`floor_quantile`) of the same log ratios, and lets the level's excess above that
  floor decay with time constant `decay_s` (time is passed in through `advance`): after a burst of slow
  observations, or when a high estimate has stopped admitting the requests that would correct it, the
  estimate returns to what the engine does when it keeps up;
- tracks a high quantile (`ceiling_quantile`) the same way, never below the level, decaying with it: what
  the latency model prices a wait with while first tokens come late (`LatencyModel.cautious_when_behind`).

Pure: no clock, no I/O; the caller passes `now_s`.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RobustScaleSettings:
    alpha: float = 0.1
    warmup: int = 8
    clip_log: float = math.log(3.0)
    min_scale: float = 0.02
    max_scale: float = 20.0
    floor_quantile: float = 0.25
    floor_step_log: float = 0.05
    decay_s: float = 5.0
    ceiling_quantile: float = 0.75

    def __post_init__(self) -> None:
        if not (0.0 < self.alpha <= 1.0 and self.warmup >= 0 and self.clip_log > 0.0):
            raise ValueError("0 < alpha <= 1, warmup >= 0 and clip_log > 0 are required")
        if not (0.0 < self.min_scale <= 1.0 <= self.max_scale and math.isfinite(self.max_scale)):
            raise ValueError("0 < min_scale <= 1 <= max_scale < inf is required")
        if not (0.0 < self.floor_quantile < 1.0 and self.floor_step_log > 0.0 and self.decay_s > 0.0):
            raise ValueError("0 < floor_quantile < 1, floor_step_log > 0 and decay_s > 0 are required")
        if not self.floor_quantile < self.ceiling_quantile < 1.0:
            raise ValueError("floor_quantile < ceiling_quantile < 1 is required")


class RobustScale:
    """The correction factor: `value` is 1.0 until the first observation."""

    def __init__(self, settings: RobustScaleSettings | None = None) -> None:
        self.settings = settings or RobustScaleSettings()
        self._level = 0.0  # log of the scale
        self._floor = 0.0  # log of a low quantile of the observed ratios
        self._ceiling = 0.0  # log of a high quantile of them
        self._count = 0
        self._weight = 0.0  # the observations' summed weights: the warmup's effective count
        self._now_s: float | None = None
        self.revision = 0  # bumped whenever `value`, `floor` or `ceiling` may have changed

    @property
    def value(self) -> float:
        return math.exp(self._level)

    @property
    def floor(self) -> float:
        return math.exp(self._floor)

    @property
    def ceiling(self) -> float:
        """A high quantile (`ceiling_quantile`) of the observed ratios, never below `value`."""
        return math.exp(max(self._ceiling, self._level))

    @property
    def now_s(self) -> float:
        """The latest time seen (0 before any)."""
        return 0.0 if self._now_s is None else self._now_s

    @property
    def count(self) -> int:
        return self._count

    def _bound(self, log_value: float) -> float:
        s = self.settings
        return min(math.log(s.max_scale), max(math.log(s.min_scale), log_value))

    def observe(self, ratio: float, now_s: float, weight: float = 1.0) -> None:
        """One observed / predicted ratio at `now_s`; non-positive or non-finite ratios are ignored.

        `weight` in (0, 1] is the share of the observation this scale explains (the latency model splits a
        first token between the prefill's flat part and its growth per token by their shares of the
        prediction): every step toward it is scaled by the weight, and the warmup counts summed weights,
        so an observation this scale hardly explains hardly moves it. With weight 1 (the default) the
        first observation sets the level, the next `warmup` average in with weight 1/n, then `alpha`."""
        if not (ratio > 0.0 and math.isfinite(ratio)):
            return
        if not 0.0 < weight <= 1.0:
            if weight == 0.0:
                return
            raise ValueError(f"weight must lie in (0, 1], got {weight!r}")
        self.advance(now_s)
        s = self.settings
        x = self._bound(math.log(ratio))
        if self._weight <= 0.0:
            self._level = self._bound(self._level + weight * (x - self._level))
            self._floor = self._bound(min(self._floor + weight * (x - self._floor), self._level))
            self._ceiling = self._bound(max(self._ceiling + weight * (x - self._ceiling), self._level))
        else:
            x = min(self._level + s.clip_log, max(self._level - s.clip_log, x))
            rate = 1.0 / (self._weight + 1.0) if self._weight < s.warmup else s.alpha
            self._level = self._bound(self._level + weight * rate * (x - self._level))
            step = weight * s.floor_step_log * (s.floor_quantile - (1.0 if x < self._floor else 0.0))
            self._floor = self._bound(min(self._floor + step, self._level))
            up = weight * s.floor_step_log * (s.ceiling_quantile - (1.0 if x < self._ceiling else 0.0))
            self._ceiling = self._bound(max(self._ceiling + up, self._level))
        self._count += 1
        self._weight += weight
        self.revision += 1

    def advance(self, now_s: float) -> None:
        """Let time pass: the level's excess over the floor decays with time constant `decay_s`."""
        if not math.isfinite(now_s):
            raise ValueError(f"now_s must be finite, got {now_s!r}")
        if self._now_s is not None and now_s > self._now_s and self._level > self._floor:
            keep = math.exp(-(now_s - self._now_s) / self.settings.decay_s)
            self._level = self._floor + (self._level - self._floor) * keep
            self._ceiling = self._floor + (self._ceiling - self._floor) * keep
            self.revision += 1
        if self._now_s is None or now_s > self._now_s:
            self._now_s = now_s
