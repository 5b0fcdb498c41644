"""How long one engine iteration takes, as a function of what the batch computes.

Called by the engine once per formed iteration (and, vectorised, for a run of identical decode-only
iterations). The model is the structure Vidur uses, fitted per model and GPU by
`sloguard sim fit-profile` and loaded from a versioned profile (see `sloguard.sim.profiles`):

    step_s = layers * ( linear(N_tok) + kv_save * N_tok
                        + dec_const * [decodes > 0] + dec_per_kv * decode_kv_tokens
                        + sum_over_prefill_chunks(p1 * c + p2 * c^2 + p3 * c * context_before) )
             + cpu_base + cpu_per_seq * num_seqs

`linear` is a piecewise-linear table over the batch's total token count (weights are memory-bound for
few tokens, compute-bound for many). All times inside are milliseconds per layer; the result is seconds.
The scalar and vectorised paths perform the same floating-point operations in the same order, so a
fast-forwarded run of steps is bit-identical to stepping one by one.
"""

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class BatchShape:
    """What one iteration computes: decode sequences (one token each) and prefill chunks."""

    decode_seqs: int
    decode_kv_tokens: int  # sum over decode sequences of the context attended (including the new token)
    prefill_chunks: Sequence[tuple[int, int]] = ()  # (chunk tokens, tokens already computed before it)

    @property
    def num_tokens(self) -> int:
        return self.decode_seqs + sum(c for c, _ in self.prefill_chunks)

    @property
    def num_seqs(self) -> int:
        return self.decode_seqs + len(self.prefill_chunks)


class StepTimeModel(Protocol):
    """Anything that prices an iteration. `decode_run_s` must agree bit-for-bit with `step_s`."""

    def step_s(self, batch: BatchShape) -> float: ...

    def decode_run_s(
        self, decode_seqs: int, decode_kv_tokens: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """Step times of decode-only iterations with `decode_seqs` sequences and the given KV sums."""
        ...


class ProfileStepTime:
    """The Vidur-structured model with coefficients from a profile's `"model"` section."""

    def __init__(self, model: Mapping[str, Any]) -> None:
        self.layers = int(model["layers"])
        table = model["linear_ms_per_layer"]
        self._lin_tokens: list[float] = [float(t) for t in table["num_tokens"]]
        self._lin_ms: list[float] = [float(v) for v in table["ms"]]
        if len(self._lin_tokens) < 2 or self._lin_tokens != sorted(self._lin_tokens):
            raise ValueError("linear_ms_per_layer.num_tokens must be >= 2 increasing values")
        self.kv_save_ms_per_token = float(model["kv_save_ms_per_token"])
        self.decode_const_ms = float(model["decode_attention"]["const_ms"])
        self.decode_per_kv_ms = float(model["decode_attention"]["per_kv_token_ms"])
        pre = model["prefill_attention"]
        self.p1, self.p2, self.p3 = (
            float(pre["per_token_ms"]),
            float(pre["per_token_sq_ms"]),
            float(pre["per_token_ctx_ms"]),
        )
        cpu = model["cpu_overhead"]
        self.cpu_base_s = float(cpu["base_ms"]) / 1000.0
        self.cpu_per_seq_s = float(cpu["per_seq_ms"]) / 1000.0
        self._kv_coeff_s = self.layers * self.decode_per_kv_ms / 1000.0

    def linear_ms(self, num_tokens: int) -> float:
        """Piecewise-linear interpolation (linear extrapolation beyond the table's last point)."""
        xs, ys = self._lin_tokens, self._lin_ms
        x = float(num_tokens)
        i = bisect.bisect_right(xs, x) - 1
        i = min(max(i, 0), len(xs) - 2)
        x0, x1 = xs[i], xs[i + 1]
        y0, y1 = ys[i], ys[i + 1]
        if x <= x0:
            return y0
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)

    def _const_s(self, num_tokens: int, num_seqs: int, has_decode: bool) -> float:
        per_layer_ms = self.linear_ms(num_tokens) + self.kv_save_ms_per_token * num_tokens
        if has_decode:
            per_layer_ms += self.decode_const_ms
        return self.layers * per_layer_ms / 1000.0 + self.cpu_base_s + self.cpu_per_seq_s * num_seqs

    def step_s(self, batch: BatchShape) -> float:
        if batch.num_tokens <= 0:
            raise ValueError("an iteration must compute at least one token")
        t = self._const_s(batch.num_tokens, batch.num_seqs, batch.decode_seqs > 0)
        t = t + self._kv_coeff_s * batch.decode_kv_tokens
        if batch.prefill_chunks:
            # fsum: exactly rounded, so the order in which chunks are listed cannot change the result
            pre_ms = math.fsum(
                self.p1 * chunk + self.p2 * chunk * chunk + self.p3 * chunk * ctx
                for chunk, ctx in batch.prefill_chunks
            )
            t = t + self.layers * pre_ms / 1000.0
        return t

    def decode_run_s(
        self, decode_seqs: int, decode_kv_tokens: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        const = self._const_s(decode_seqs, decode_seqs, True)
        out: npt.NDArray[np.float64] = const + self._kv_coeff_s * decode_kv_tokens.astype(np.float64)
        return out


class ScaledStepTime:
    """Another step-time model with every iteration `factor` times as long: a slower engine (an older
    GPU, a larger model, a contended host) with the same batch shape costs. Used by the workload matrix
    (`sloguard.bench.matrix`) for its slowed engine variants. Multiplying both paths by the same factor
    keeps `decode_run_s` bit-identical to `step_s`."""

    def __init__(self, base: StepTimeModel, factor: float) -> None:
        if not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"step-time factor must be a finite number > 0, got {factor!r}")
        self.base = base
        self.factor = float(factor)

    def step_s(self, batch: BatchShape) -> float:
        return self.base.step_s(batch) * self.factor

    def decode_run_s(
        self, decode_seqs: int, decode_kv_tokens: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = self.base.decode_run_s(decode_seqs, decode_kv_tokens) * self.factor
        return out
