"""Latency model: prefill time from the prompt tokens queued ahead, and inter-token time of a batch.

SCORPIO's two analytic models (reference/papers.md §1.3), used by the TTFT and TPOT guards and by the
policies that predict waits (mooncake, sa, scorpio, sloguard):

- prefill: `t_prefill(N) = C` if `N <= N0` else `alpha*N + beta`, N the cumulative prompt tokens queued
  ahead *including* the request itself;
- decode: `ITL(B, L) = a*B*L + b*B + c*L + d`, B the running batch size, L the mean sequence length.

Both are fitted by least squares (numpy) from a profile (`LatencyModel.fit`, or `from_profile` with the
handful of figures a `LatencyProfile` in the sidecar configuration names) or start from generic defaults,
and learn the engine they front online, from scratch within the first few dozen requests (issue 16):
- prefill: two multiplicative corrections of the piecewise shape (sidecar/core/robust_scale.py), one of
  its flat part and one of its growth per token past the breakpoint, fitted jointly: each first token
  past the breakpoint refits each part from what the other leaves of it, weighted by the part's share of
  the prediction (`observe_prefill`); each correction is set by the first observation that informs it,
  averaged over the next few, then an exponential average of winsorized log ratios;
  bounded, and each one's excess over a low quantile of what it saw decays with time (`advance`), so host
  stalls cannot leave it stuck high; while the engine demonstrably keeps up (most recent first tokens
  within their TTFT targets, sidecar/core/ttft_guard.py `KeepingUp`) the prediction uses those low
  quantiles instead of the running levels: admission is optimistic until first tokens come late; once
  they do, `cautious_when_behind` (set by the sloguard policy) prices waits with high quantiles;
- decode: `observe_step` accumulates exponentially-forgotten normal equations and refits after 4, 8, 16
  and then every `refit_every` observations; each observed inter-token time is first winsorized to within
  `DECODE_CLIP` times the current prediction, so a stall moves the fit by a bounded amount.
Pure: no clock, no I/O; time is passed in.
"""

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sloguard.api.sidecar_config import LatencyProfile
from sloguard.sidecar.core.robust_scale import RobustScale, RobustScaleSettings
from sloguard.sidecar.core.ttft_guard import KeepingUp

DECODE_CLIP = 4.0
"""An observed inter-token time counts as at most this many times the current prediction (and at least
its 1/DECODE_CLIP) once the decode model has been refitted from observations."""
EARLY_REFITS = (4, 8, 16)
PER_TOKEN_MIN_SCALE = 1e-3
"""The per-token part of the prefill prior may shrink this far: a tiny model on a CPU prefills a few hundred
tokens in no measurable time, where the default prior (an 8B model on an A100) charges 0.1 ms a token."""


def _check_finite(name: str, *values: float) -> None:
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")


@dataclass(frozen=True, slots=True)
class PrefillModel:
    """Piecewise prefill time in seconds: flat `flat_s` up to `n0_tokens`, then linear."""

    n0_tokens: float
    flat_s: float
    per_token_s: float
    intercept_s: float

    def __post_init__(self) -> None:
        _check_finite("prefill coefficients", self.n0_tokens, self.flat_s, self.per_token_s, self.intercept_s)

    def time_s(self, tokens: float) -> float:
        """Seconds to prefill `tokens` cumulative prompt tokens (never below the flat part)."""
        if tokens <= self.n0_tokens:
            return self.flat_s
        return max(self.flat_s, self.per_token_s * tokens + self.intercept_s)

    @classmethod
    def fit(cls, tokens: Sequence[float], seconds: Sequence[float]) -> "PrefillModel":
        """Least-squares fit; the breakpoint N0 is chosen among the observed token counts by SSE."""
        x = np.asarray(tokens, dtype=np.float64)
        y = np.asarray(seconds, dtype=np.float64)
        if x.shape != y.shape or x.size < 2:
            raise ValueError("prefill fit needs at least two (tokens, seconds) pairs of equal length")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.any(x < 0) or np.any(y < 0):
            raise ValueError("prefill samples must be finite and non-negative")
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        best: tuple[float, PrefillModel] | None = None
        for split in np.unique(x):
            low, high = x <= split, x > split
            flat = float(y[low].mean())
            if int(high.sum()) >= 2 and float(np.ptp(x[high])) > 0:
                slope, intercept = np.polyfit(x[high], y[high], 1)
            elif int(high.sum()) >= 1:
                slope, intercept = 0.0, float(y[high].mean())
            else:
                slope, intercept = 0.0, flat
            model = cls(float(split), flat, float(slope), float(intercept))
            sse = float(sum((model.time_s(float(a)) - float(b)) ** 2 for a, b in zip(x, y, strict=True)))
            if best is None or sse < best[0]:
                best = (sse, model)
        assert best is not None
        return best[1]


@dataclass(frozen=True, slots=True)
class DecodeModel:
    """Inter-token latency in seconds: `a*B*L + b*B + c*L + d`."""

    a: float
    b: float
    c: float
    d: float

    def __post_init__(self) -> None:
        _check_finite("decode coefficients", self.a, self.b, self.c, self.d)

    def itl_s(self, batch_size: float, mean_len_tokens: float) -> float:
        bl = batch_size * mean_len_tokens
        value = self.a * bl + self.b * batch_size + self.c * mean_len_tokens + self.d
        return max(value, 1e-6)

    @classmethod
    def fit(
        cls, batch_sizes: Sequence[float], mean_lens: Sequence[float], itls_s: Sequence[float]
    ) -> "DecodeModel":
        """Least squares over the four terms (SCORPIO's modeling_decode.py, with an explicit intercept d)."""
        bs = np.asarray(batch_sizes, dtype=np.float64)
        ln = np.asarray(mean_lens, dtype=np.float64)
        y = np.asarray(itls_s, dtype=np.float64)
        if not bs.shape == ln.shape == y.shape or bs.size < 4:
            raise ValueError("decode fit needs at least four (batch, length, itl) triples of equal length")
        if not (np.all(np.isfinite(bs)) and np.all(np.isfinite(ln)) and np.all(np.isfinite(y))):
            raise ValueError("decode samples must be finite")
        design = np.column_stack([bs * ln, bs, ln, np.ones_like(bs)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        return cls(*(float(v) for v in coef))


# Placeholder coefficients, roughly a Llama-3-8B-class model on one A100 (TPOT ~13 ms alone, ~1 ms per
# extra sequence; prefill ~0.1 ms per token beyond a ~20 ms floor). A deployment fits its own from a
# profile, and online calibration pulls these toward what the engine actually does.
DEFAULT_PREFILL = PrefillModel(n0_tokens=256.0, flat_s=0.020, per_token_s=0.0001, intercept_s=-0.0056)
DEFAULT_DECODE = DecodeModel(a=2.0e-8, b=0.0008, c=5.0e-7, d=0.012)


def profile_per_token_prior_s(ttft_s: float) -> float:
    """The growth per queued prompt token assumed for a profile that names none: the default prior's, in
    proportion to the profile's TTFT (DEFAULT_PREFILL: 0.1 ms a token on a 20 ms flat part).

    Zero would be wrong, not neutral: with no growth past the breakpoint every first token would count as
    the flat part's, so the queueing a busy engine adds to it would drive the flat correction up (measured in
    front of real vLLM: 6.5 ms profiled, first tokens 100-700 ms under load) and an idle engine's next
    request would be priced at that; the per-token correction, which learns the queueing, would never
    see an observation. A small positive prior lets it learn from the first requests released behind others.
    """
    return DEFAULT_PREFILL.per_token_s * ttft_s / DEFAULT_PREFILL.flat_s


class _OnlineLeastSquares:
    """Exponentially forgotten normal equations for y = x . theta, refitted on demand.

    Observations wait in a buffer and are folded into the normal equations in one vectorised step when a
    fit reads them (`xtx`, `xty`) or the buffer fills: the sidecar adds one per engine read of every
    stream, and a numpy outer product per read was 4.4 % of the sidecar's busy samples in front of real vLLM
    (py-spy, `LatencyModel.observe_step`). The fold is exact: the same sums as adding one at a time."""

    FOLD_AT = 64  # buffered observations at most

    def __init__(self, dims: int, forgetting: float) -> None:
        self._xtx = np.zeros((dims, dims))
        self._xty = np.zeros(dims)
        self._pending: list[tuple[Sequence[float], float, float]] = []
        self.count = 0
        self.forgetting = forgetting

    def add(self, x: Sequence[float], y: float, weight: float = 1.0) -> None:
        """One observation counted `weight` times (what came in one measurement of `weight` samples):
        weighted in the fit as that many, and forgetting as many steps."""
        self._pending.append((x, y, weight))
        self.count += 1
        if len(self._pending) >= self.FOLD_AT:
            self._fold()

    def _fold(self) -> None:
        """Each buffered observation k enters with its weight, forgotten by the weight of those after it;
        what was folded before is forgotten by the weight of all of them."""
        if not self._pending:
            return
        xs, ys, ws = zip(*self._pending, strict=True)
        self._pending.clear()
        v = np.asarray(xs, dtype=np.float64)
        w = np.asarray(ws, dtype=np.float64)
        after = np.cumsum(w[::-1])[::-1] - w
        factor = w * self.forgetting**after
        decay = self.forgetting ** float(w.sum())
        self._xtx = self._xtx * decay + (v * factor[:, None]).T @ v
        self._xty = self._xty * decay + v.T @ (factor * np.asarray(ys, dtype=np.float64))

    @property
    def xtx(self) -> np.ndarray:
        self._fold()
        return self._xtx

    @property
    def xty(self) -> np.ndarray:
        self._fold()
        return self._xty

    def solve(self, prior: np.ndarray, ridge: float) -> np.ndarray:
        """Ridge toward `prior` so few or degenerate samples cannot produce wild coefficients."""
        scale = np.maximum(np.diag(self.xtx), 1e-12)
        reg = ridge * np.diag(scale)
        coef: np.ndarray = np.linalg.solve(self.xtx + reg, self.xty + reg @ prior)
        return coef

    def solve_nonnegative(self, prior: np.ndarray, ridge: float) -> np.ndarray:
        """`solve` with every coefficient >= 0 (inter-token time never shrinks as the batch or the sequences
        grow): coefficients that come out negative are fixed at 0 and the rest refitted, at most once per
        coefficient. Without this, a fit over the batch sizes one load produced can extrapolate to an
        inter-token time of 0 for a request alone, which no guard can use."""
        free = np.ones(len(prior), dtype=bool)
        coef = self.solve(prior, ridge)
        for _ in range(len(prior)):
            negative = free & (coef < 0)
            if not negative.any():
                break
            free &= ~negative
            coef = np.zeros(len(prior))
            if free.any():
                idx = np.flatnonzero(free)
                scale = np.maximum(np.diag(self.xtx)[idx], 1e-12)
                reg = ridge * np.diag(scale)
                sub = self.xtx[np.ix_(idx, idx)]
                coef[idx] = np.linalg.solve(sub + reg, self.xty[idx] + reg @ prior[idx])
        return coef


@dataclass(frozen=True, slots=True)
class BatchLoad:
    """The running batch as the TPOT guard sees it: size, summed sequence length, TPOT targets."""

    batch_size: float
    total_len_tokens: float


class LatencyModel:
    """Prefill and decode models with online calibration. Answers the guards' two questions."""

    def __init__(
        self,
        prefill: PrefillModel = DEFAULT_PREFILL,
        decode: DecodeModel = DEFAULT_DECODE,
        *,
        online: bool = True,
        refit_every: int = 32,
        forgetting: float = 0.999,
        ridge: float = 0.05,
        prefill_learning: RobustScaleSettings | None = None,
    ) -> None:
        if refit_every < 1 or not 0.0 < forgetting <= 1.0 or ridge < 0:
            raise ValueError("refit_every >= 1, 0 < forgetting <= 1 and ridge >= 0 are required")
        self.prefill = prefill
        self.decode = decode
        self.prior_decode = decode  # as seeded: online refits replace `decode` only
        self.online = online
        self.refit_every = refit_every
        self.ridge = ridge
        self._decode_ls = _OnlineLeastSquares(4, forgetting)
        self._prefill_learning = prefill_learning or RobustScaleSettings()
        self._prefill_scale = RobustScale(self._prefill_learning)  # of the flat part
        self._per_token_scale = RobustScale(  # of the part that grows with the tokens ahead
            dataclasses.replace(self._prefill_learning, min_scale=PER_TOKEN_MIN_SCALE)
        )
        self._decode_refits = 0
        self.keeping_up = KeepingUp()
        self.cautious_when_behind = False  # `prefill_s`: the corrections' high quantiles while not keeping up
        self._factors_key: tuple[int, int, bool, bool] | None = None  # `_prefill_factors`' cache
        self._factors = (1.0, 1.0)
        self.version = 0  # bumped whenever a refit changes the coefficients

    @classmethod
    def from_profile(cls, profile: LatencyProfile, *, online: bool = True) -> "LatencyModel":
        """Seeded with a measured profile (the sidecar configuration's `latency_profile`): a short prompt's
        TTFT and a single request's inter-token time on the idle engine, and optionally their growth per
        prompt token and per running sequence. Online learning goes on from there."""
        n0 = float(profile.prefill_flat_tokens)
        per_token = profile.prefill_per_token_s or profile_per_token_prior_s(profile.ttft_s)
        prefill = PrefillModel(n0, profile.ttft_s, per_token, profile.ttft_s - per_token * n0)
        per_seq = profile.itl_per_sequence_s
        decode = DecodeModel(a=0.0, b=per_seq, c=0.0, d=max(1e-6, profile.itl_s - per_seq))
        return cls(prefill, decode, online=online)

    @classmethod
    def fit(
        cls,
        *,
        prefill_samples: Sequence[tuple[float, float]],
        decode_samples: Sequence[tuple[float, float, float]],
        online: bool = True,
    ) -> "LatencyModel":
        """Fit from a profile: (prompt tokens, seconds) and (batch size, mean length, ITL seconds)."""
        prefill = PrefillModel.fit([t for t, _ in prefill_samples], [s for _, s in prefill_samples])
        b, ln, itl = zip(*decode_samples, strict=True) if decode_samples else ((), (), ())
        decode = DecodeModel.fit(b, ln, itl)
        return cls(prefill, decode, online=online)

    def copy(self) -> "LatencyModel":
        """A fresh model with the same coefficients and settings (no shared online state)."""
        return LatencyModel(
            self.prefill,
            self.decode,
            online=self.online,
            refit_every=self.refit_every,
            forgetting=self._decode_ls.forgetting,
            ridge=self.ridge,
            prefill_learning=self._prefill_learning,
        )

    # --- the guards' questions -------------------------------------------------------------------

    def prefill_s(self, tokens_ahead_incl_self: float, *, held_back: bool = True) -> float:
        """Predicted time until the first token when `tokens_ahead_incl_self` prompt tokens queue: the
        profile's flat part and its growth past the breakpoint, each times its learned correction (their
        low quantiles while the engine keeps up; their high quantiles while it does not, where
        `cautious_when_behind` is set). `held_back`: whether the caller holds requests back from the engine
        (its queue did not empty at its last release); one that holds nothing back gets the low quantiles
        too, where `cautious_when_behind` is set: whatever it admits starts at once and takes no slot
        another request waits for."""
        flat_s = self.prefill.flat_s
        extra_s = self.prefill.time_s(tokens_ahead_incl_self) - flat_s
        flat_factor, per_token_factor = self._prefill_factors(held_back)
        return flat_s * flat_factor + extra_s * per_token_factor

    def _prefill_factors(self, held_back: bool) -> tuple[float, float]:
        """The two corrections `prefill_s` applies now, recomputed only when either scale or the mode
        changed: a queue walk asks for hundreds of waits between two changes."""
        flat, per_token = self._prefill_scale, self._per_token_scale
        optimistic = self.keeping_up.keeping_up or (self.cautious_when_behind and not held_back)
        key = (flat.revision, per_token.revision, optimistic, self.cautious_when_behind)
        if key != self._factors_key:
            if optimistic:
                self._factors = (flat.floor, per_token.floor)
            elif self.cautious_when_behind:
                self._factors = (flat.ceiling, per_token.ceiling)
            else:
                self._factors = (flat.value, per_token.value)
            self._factors_key = key
        return self._factors

    def ttft_at_position_s(self, tokens_ahead_incl_self: float) -> float:
        """TTFT of a request at the queue position where this many prompt tokens (its own included) wait."""
        return self.prefill_s(tokens_ahead_incl_self)

    def itl_s(self, batch_size: float, mean_len_tokens: float) -> float:
        return self.decode.itl_s(batch_size, mean_len_tokens)

    def tpot_if_joins_s(
        self,
        load: BatchLoad,
        *,
        candidate_prompt_tokens: float,
        candidate_output_tokens: float,
        candidate_weight: float = 1.0,
    ) -> float:
        """TPOT if the candidate joins the running batch, at the mean length over its generation.

        `candidate_weight` is the candidate's share of iterations (SCORPIO's TRP, 1 without credit
        batching); `load.batch_size` may itself be a virtual batch size.
        """
        batch = load.batch_size + candidate_weight
        n_seqs = max(1.0, load.batch_size + 1.0)
        mean_len = (load.total_len_tokens + candidate_prompt_tokens) / n_seqs + candidate_output_tokens / 2
        return self.itl_s(batch, mean_len)

    # --- online calibration ----------------------------------------------------------------------

    def advance(self, now_s: float) -> None:
        """Let time pass (the policy calls this on every release): a prefill correction pushed up by slow
        first tokens decays toward what the engine does when it keeps up."""
        self._prefill_scale.advance(now_s)
        self._per_token_scale.advance(now_s)

    def observe_step(self, batch_size: float, mean_len_tokens: float, itl_s: float, tokens: int = 1) -> None:
        """A measured mean inter-token time `itl_s` over `tokens` tokens that came in one read, at this batch
        size and mean sequence length.

        Weighted by `tokens`: the fit is of the time per token, which is what TPOT is. Counted one per read
        instead, a stream read in bursts (the relay's hold, sidecar/core/relay_hold.py, packs the fast
        stretches of a stream into one read, while a step slowed by a prefill arrives alone) would weigh
        each slow interval as much as a whole burst of fast ones. In front of real vLLM at half the knee
        the reads of one run averaged 4.26 ms per token counted per read and 3.74 ms counted per token
        (40,053 reads of 96,052 tokens)."""
        _check_finite("decode observation", batch_size, mean_len_tokens, itl_s)
        if not self.online or batch_size <= 0 or itl_s <= 0 or tokens < 1:
            return
        if self._decode_refits:  # winsorize against what the model already learned from this engine
            predicted = self.decode.itl_s(batch_size, mean_len_tokens)
            itl_s = min(predicted * DECODE_CLIP, max(predicted / DECODE_CLIP, itl_s))
        self._decode_ls.add(
            (batch_size * mean_len_tokens, batch_size, mean_len_tokens, 1.0),
            itl_s,
            weight=float(tokens),
        )
        count = self._decode_ls.count
        if count in EARLY_REFITS or count % self.refit_every == 0:
            prior = np.array([self.decode.a, self.decode.b, self.decode.c, self.decode.d])
            coef = self._decode_ls.solve_nonnegative(prior, self.ridge)
            if np.all(np.isfinite(coef)):
                self.decode = DecodeModel(*(float(v) for v in coef))
                self._decode_refits += 1
                self.version += 1

    def observe_first_token(self, *, on_time: bool, slo_class: str | None = None) -> None:
        """Whether a released request's first token (of `slo_class`) came within its TTFT target
        (`KeepingUp`)."""
        if self.online:
            before = self.keeping_up.keeping_up
            self.keeping_up.observe(on_time, slo_class)
            if self.keeping_up.keeping_up != before:
                self.version += 1  # the prefill prediction switched between optimistic and running

    def observe_prefill(
        self, tokens_ahead_incl_self: float, ttft_s: float, now_s: float | None = None
    ) -> None:
        """A measured time from release to first token with this many prompt tokens ahead, at `now_s`.

        Calibrates two corrections of the piecewise profile jointly: of its flat part and of its growth
        past the breakpoint. A first token released with at most the breakpoint's tokens ahead informs the
        flat part alone. Past it, each part is refitted from what the other (at its current correction)
        leaves of the observation (backfitting the additive model), weighted by its share of the current
        prediction: right past the breakpoint the growth is a sliver of the prediction, so an overhead the
        flat part does not yet explain (decode steps sharing the prefill step, a chunk boundary) barely
        moves the per-token correction, where reading it all as growth made it ~20x; far past it the
        growth dominates and learns at full weight. Together they learn an engine's fixed overhead and its
        cost per queued token from scratch. `now_s` (default: the last time seen) lets the corrections'
        excess decay between observations.
        """
        _check_finite("prefill observation", tokens_ahead_incl_self, ttft_s)
        if not self.online or ttft_s <= 0:
            return
        flat_s = self.prefill.flat_s
        extra_s = self.prefill.time_s(tokens_ahead_incl_self) - flat_s
        flat, per_token = self._prefill_scale, self._per_token_scale
        at_s = flat.now_s if now_s is None else now_s
        before = (flat.value, per_token.value)
        if extra_s <= 0:
            if flat_s > 0:
                flat.observe(ttft_s / flat_s, at_s)
        else:
            self.advance(at_s)
            flat_part_s, growth_part_s = flat_s * flat.value, extra_s * per_token.value
            growth_share = growth_part_s / (flat_part_s + growth_part_s)
            if growth_share < 1.0:  # flat_s > 0
                flat_ratio = max(ttft_s - growth_part_s, 0.0) / flat_s
                flat.observe(flat_ratio or flat.settings.min_scale, at_s, weight=1.0 - growth_share)
            growth_ratio = max(ttft_s - flat_part_s, 0.0) / extra_s
            per_token.observe(growth_ratio or PER_TOKEN_MIN_SCALE, at_s, weight=growth_share)
        if (flat.value, per_token.value) != before:
            self.version += 1

    @property
    def prefill_scale(self) -> float:
        """The learned correction of the profile's flat prefill part (1.0 before any observation)."""
        return self._prefill_scale.value

    @property
    def per_token_scale(self) -> float:
        """The learned correction of the profile's prefill growth per token past its breakpoint."""
        return self._per_token_scale.value
