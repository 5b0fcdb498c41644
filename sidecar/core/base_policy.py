"""The bookkeeping every policy shares: validation, the ledger, in-flight state, the release loop.

Concrete policies (sloguard.sidecar.core.policies.*) subclass `QueuePolicy` and supply only what makes
them different: an arrival check (`_arrival_check`), their queue order (`_push`, `_remove`,
`_candidates`), a per-candidate release gate (`_gate`), expiry of queued requests (`_expire`) and the
engine priority they stamp. The release loop, the in-flight and KV limits, outcome accounting, online
calibration of the latency model and predictor, and the driver-facing checks live here once, so every
policy keeps the contract of sloguard.sidecar.core.policy the same way. Pure.
"""

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from sloguard.api.errors import RejectionReason
from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.api.sloclass import OnUnattainable
from sloguard.predictor import LengthPrediction, OutputLengthPredictor
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.ledger import LedgerError, OutcomeLedger
from sloguard.sidecar.core.parameters import parse_parameters
from sloguard.sidecar.core.policy import (
    Admitted,
    Decision,
    EngineView,
    Policy,
    PolicySnapshot,
    Rejected,
    Release,
    ReleaseStep,
)
from sloguard.sidecar.core.requests import InvalidRequestError, Outcome, RequestSpec, check_time
from sloguard.sidecar.core.tpot_guard import TpotState

PRIORITY_DEMOTED_OFFSET = 1 << 40
"""Added to a best-effort request's vLLM priority so it sorts after every SLO-bound request."""


class Gate(Enum):
    RELEASE = "release"  # send it now
    SKIP = "skip"  # not now; look at the next candidate
    STOP = "stop"  # not now, and nothing behind it either (head-of-line)


@dataclass(slots=True)
class Entry:
    """A queued or in-flight request with what the policy predicted for it."""

    spec: RequestSpec
    prediction: LengthPrediction
    predicted_output_tokens: float
    demoted: bool = False
    predicted_itl_s: float = math.nan  # what the TPOT guard predicted when it let the request in
    tpot_waived: bool = False  # running, but no longer constrains the TPOT gate (`waive_tpot`)
    gate_holds: int = 0  # queued: release rounds in which the TPOT gate (`_gate`) held it back
    # set at release
    released_s: float = math.nan
    tokens_ahead_at_release: float = 0.0
    prefill_credit_s: float = 0.0  # engine time already spent on the prompts ahead of it at its release
    first_token_s: float | None = None
    output_tokens: int = 0
    last_tokens_s: float = math.nan
    # the latency model's inter-token time of the batch it ran in, summed over its reported tokens after
    # the first, and how many tokens that covers (sloguard's `lifetime_inflation`)
    batch_itl_sum_s: float = 0.0
    batch_itl_tokens: int = 0

    @property
    def request_id(self) -> str:
        return self.spec.request_id

    @property
    def kv_need_tokens(self) -> int:
        """Prompt plus predicted output (capped at max_tokens): the KV a request will occupy."""
        out = min(float(self.spec.max_tokens), self.predicted_output_tokens)
        return self.spec.prompt_tokens + max(1, math.ceil(out))


class QueuePolicy(Policy):
    """Shared state and the release loop; subclasses define order, gates and expiry."""

    name: ClassVar[SchedulingPolicyName]
    Parameters: ClassVar[type[Any]]
    params: Any
    calibrate_prefill: bool = False  # feed first-token timings to the latency model
    calibrate_decode: bool = False  # feed inter-token timings to the latency model
    learn_lengths_online: bool = False  # feed completed lengths back to the predictor

    def __init__(
        self,
        config: SidecarConfig,
        *,
        predictor: OutputLengthPredictor,
        latency: LatencyModel,
        seed: int = 0,
        oracle: bool = False,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.classes = {c.name: c for c in config.classes}
        self.predictor = predictor
        self.latency = latency
        self.seed = seed
        self.oracle = oracle
        self.ledger = OutcomeLedger()
        self._queued: dict[str, Entry] = {}
        self._in_flight: dict[str, Entry] = {}
        self._queued_by_class: Counter[str] = Counter()
        self._in_flight_by_class: Counter[str] = Counter()
        self._demoted_queued = 0
        self._tpot = TpotState()
        self._running_len_tokens = 0.0  # prompt + generated tokens of in-flight requests
        self._pending_prefill_tokens = 0.0  # prompt tokens released but without a first token yet
        self._kv_reserved_tokens = 0
        self._predicted_out_in_flight = 0.0  # sum of predicted output tokens of in-flight requests
        self._generated_in_flight = 0  # sum of tokens generated so far by in-flight requests
        self._last_cap = self.limits.max_in_flight  # the in-flight cap seen at the last release
        self._epoch_s: float | None = None
        self.params = parse_parameters(self.Parameters, config.policy.parameters)
        self._init_queue()

    # --- driver-facing API --------------------------------------------------------------------------

    def submit(self, spec: RequestSpec, now_s: float) -> Decision:
        now_s = check_time("now_s", now_s)
        self._check_not_open(spec)
        decision, entry = self._decide(spec, now_s)
        if isinstance(decision, Rejected):
            self.ledger.reject_at_arrival(spec.slo_class, decision.reason)
            return decision
        assert entry is not None
        if self._epoch_s is None:
            self._epoch_s = now_s
        self.ledger.admit(spec.request_id, spec.slo_class)
        entry.demoted = decision.demoted
        self._queued[spec.request_id] = entry
        self._queued_by_class[spec.slo_class] += 1
        self._demoted_queued += entry.demoted
        self._push(entry, now_s)
        return decision

    def estimate(self, spec: RequestSpec, now_s: float) -> Decision:
        now_s = check_time("now_s", now_s)
        self._check_not_open(spec)
        return self._decide(spec, now_s)[0]

    def release(self, now_s: float, engine: EngineView) -> ReleaseStep:
        now_s = check_time("now_s", now_s)
        self.latency.advance(now_s)
        rejections = [self._give_up(entry, reason, now_s) for entry, reason in self._expire(now_s)]
        self._last_cap = min(engine.in_flight_cap, self.limits.max_in_flight)
        room = self._last_cap - len(self._in_flight)
        kv_free = self._kv_room(engine.kv_free_tokens)
        chosen: list[Entry] = []
        if room > 0 and self._queued:
            for entry in self._candidates(now_s, room):
                if room <= 0:
                    break
                need = entry.kv_need_tokens if self._in_flight else entry.spec.prompt_tokens + 1
                if kv_free is not None and need > kv_free:
                    break
                verdict = self._gate(entry, now_s)
                if verdict is not Gate.RELEASE:
                    entry.gate_holds += 1
                if verdict is Gate.STOP:
                    break
                if verdict is Gate.SKIP:
                    continue
                self._start(entry, now_s)
                chosen.append(entry)
                room -= 1
                if kv_free is not None:
                    kv_free -= need
        releases = []
        for entry in chosen:
            self._remove(entry)
            releases.append(Release(entry.request_id, self._engine_priority(entry)))
        return ReleaseStep(releases=tuple(releases), rejections=tuple(rejections))

    def next_wakeup_s(self, now_s: float) -> float | None:
        check_time("now_s", now_s)
        return None

    def on_first_token(self, request_id: str, now_s: float) -> None:
        now_s = check_time("now_s", now_s)
        entry = self._in_flight.get(request_id)
        if entry is None or entry.first_token_s is not None:
            return  # already ended (a cancel racing the stream) or already seen
        entry.first_token_s = now_s
        entry.last_tokens_s = now_s
        if entry.output_tokens == 0:
            entry.output_tokens = 1
            self._running_len_tokens += 1
            self._generated_in_flight += 1
        self._pending_prefill_tokens -= entry.spec.prompt_tokens
        if self.calibrate_prefill:
            waited_s = now_s - entry.released_s + entry.prefill_credit_s
            self.latency.observe_prefill(entry.tokens_ahead_at_release, waited_s, now_s)
            self.latency.observe_first_token(
                on_time=now_s <= entry.spec.ttft_deadline_s, slo_class=entry.spec.slo_class
            )

    def on_tokens(self, request_id: str, now_s: float, output_tokens: int) -> None:
        now_s = check_time("now_s", now_s)
        if isinstance(output_tokens, bool) or not isinstance(output_tokens, int) or output_tokens < 0:
            raise ValueError(f"output_tokens must be a non-negative integer, got {output_tokens!r}")
        entry = self._in_flight.get(request_id)
        if entry is None:
            return  # already ended (a cancel racing the stream)
        if entry.first_token_s is None:
            if output_tokens <= 0:
                return  # a progress report before the first token: nothing has arrived yet
            self.on_first_token(request_id, now_s)
        new = output_tokens - entry.output_tokens
        if new <= 0:
            return
        dt = now_s - entry.last_tokens_s
        entry.output_tokens = output_tokens
        entry.last_tokens_s = now_s
        self._running_len_tokens += new
        self._generated_in_flight += new
        if self.calibrate_decode and dt > 0 and self._in_flight:
            n = len(self._in_flight)
            self.latency.observe_step(float(n), self._running_len_tokens / n, dt / new, tokens=new)

    def on_finish(self, request_id: str, now_s: float, *, outcome: Outcome, output_tokens: int) -> None:
        now_s = check_time("now_s", now_s)
        if outcome not in (Outcome.COMPLETED, Outcome.FAILED, Outcome.CANCELLED):
            raise ValueError(f"on_finish takes COMPLETED, FAILED or CANCELLED, got {outcome!r}")
        if isinstance(output_tokens, bool) or not isinstance(output_tokens, int) or output_tokens < 0:
            raise ValueError(f"output_tokens must be a non-negative integer, got {output_tokens!r}")
        entry = self._flight(request_id)
        slo_met = outcome is Outcome.COMPLETED and self._met_slo(entry, now_s, output_tokens)
        self._stop(entry)
        self.ledger.end(request_id, outcome, slo_met=slo_met)
        if outcome is Outcome.COMPLETED and self.learn_lengths_online and not self.oracle:
            spec = entry.spec
            self.predictor.observe(
                prompt_text=spec.prompt_text,
                prompt_tokens=spec.prompt_tokens,
                slo_class=spec.slo_class,
                max_tokens=spec.max_tokens,
                output_tokens=output_tokens,
            )

    def cancel(self, request_id: str, now_s: float) -> bool:
        check_time("now_s", now_s)
        entry = self._queued.get(request_id)
        if entry is not None:
            self._dequeue(entry)
            self.ledger.end(request_id, Outcome.CANCELLED)
            return True
        entry = self._in_flight.get(request_id)
        if entry is not None:
            self._stop(entry)
            self.ledger.end(request_id, Outcome.CANCELLED)
            return True
        return False

    def shed(self, now_s: float, reason: RejectionReason) -> tuple[Rejected, ...]:
        now_s = check_time("now_s", now_s)
        return tuple(self._give_up(entry, reason, now_s) for entry in list(self._queued.values()))

    def snapshot(self) -> PolicySnapshot:
        return PolicySnapshot(
            queued_by_class={k: v for k, v in self._queued_by_class.items() if v},
            in_flight_by_class={k: v for k, v in self._in_flight_by_class.items() if v},
            demoted_queued=self._demoted_queued,
            kv_reserved_tokens=self._kv_reserved_tokens,
        )

    # --- hooks for subclasses -----------------------------------------------------------------------

    def _init_queue(self) -> None:
        """Create the ordering structures (`self.params` is already parsed)."""
        raise NotImplementedError

    def _arrival_check(self, entry: Entry, now_s: float) -> Decision:
        """Admit (maybe demoted) or reject a validated request; default: admit."""
        return Admitted(entry.request_id, entry.predicted_output_tokens)

    def _push(self, entry: Entry, now_s: float) -> None:
        raise NotImplementedError

    def _remove(self, entry: Entry) -> None:
        """Take `entry` out of the ordering structures (it was released, rejected or cancelled)."""
        raise NotImplementedError

    def _candidates(self, now_s: float, room: int) -> Iterable[Entry]:
        """Queued requests in release order; iterated lazily, stopped early by the release loop."""
        raise NotImplementedError

    def _gate(self, entry: Entry, now_s: float) -> Gate:
        return Gate.RELEASE

    def _expire(self, now_s: float) -> list[tuple[Entry, RejectionReason]]:
        """Queued requests to give up on now (they end as rejected)."""
        return []

    def _engine_priority(self, entry: Entry) -> int | None:
        return None

    def _kv_room(self, kv_free_tokens: int | None) -> float | None:
        """KV tokens this release step may hand out (None: unknown, no KV gating); default: the engine's
        free room as it is now."""
        return kv_free_tokens

    # --- helpers for subclasses ---------------------------------------------------------------------

    def deadline_priority(self, deadline_s: float, *, demoted: bool = False) -> int:
        """vLLM priority (lower = earlier) from an absolute deadline: milliseconds since the first arrival.

        Equivalent to the remaining slack in ms plus a constant per release instant, so the engine's
        queue keeps the sidecar's least-deadline-first order; best-effort requests sort after all others.
        """
        epoch = self._epoch_s if self._epoch_s is not None else 0.0
        value = math.floor((deadline_s - epoch) * 1000.0)
        return value + (PRIORITY_DEMOTED_OFFSET if demoted else 0)

    def pending_prefill_tokens(self) -> float:
        return max(0.0, self._pending_prefill_tokens)

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    def slot_wait_s(self, requests_ahead_incl_self: int) -> float:
        """Predicted wait for an in-flight slot at this queue position (0 while slots are free).

        Departures come at rate n / (mean remaining tokens * current ITL); position k past the free
        slots waits k / rate. Crude, monotone in k, and cheap (running sums only).
        """
        n = len(self._in_flight)
        beyond = requests_ahead_incl_self - max(0, self._last_cap - n)
        if beyond <= 0 or n == 0:
            return 0.0
        remaining = max(1.0, (self._predicted_out_in_flight - self._generated_in_flight) / n)
        itl = self.latency.itl_s(float(n), self._running_len_tokens / n)
        return beyond * remaining * itl / n

    def running_len_tokens(self) -> float:
        return self._running_len_tokens

    def in_flight_entries(self) -> Iterator[Entry]:
        return iter(self._in_flight.values())

    def waive_tpot(self, entry: Entry) -> None:
        """Stop counting a running request's TPOT target in the TPOT gate (it keeps running): the gate
        would otherwise hold every later request to a target that request alone needs."""
        if entry.request_id not in self._in_flight:
            raise ValueError(f"request {entry.request_id!r} is not in flight")
        if not entry.tpot_waived:
            entry.tpot_waived = True
            self._tpot.remove(entry.spec.tpot_s)

    def demote(self, entry: Entry) -> None:
        """Move a queued request to best effort (subclasses re-push it into their best-effort order)."""
        if not entry.demoted:
            entry.demoted = True
            self._demoted_queued += 1

    def give_up(self, entry: Entry, reason: RejectionReason, now_s: float) -> Rejected:
        return self._give_up(entry, reason, now_s)

    # --- internals ----------------------------------------------------------------------------------

    def _check_not_open(self, spec: RequestSpec) -> None:
        if not isinstance(spec, RequestSpec):
            raise TypeError(f"expected a RequestSpec, got {type(spec).__name__}")
        if self.ledger.is_open(spec.request_id):
            raise ValueError(f"request {spec.request_id!r} is already open; request ids must be unique")

    def _decide(self, spec: RequestSpec, now_s: float) -> tuple[Decision, Entry | None]:
        if spec.slo_class not in self.classes:
            known = ", ".join(sorted(self.classes))
            return Rejected(
                spec.request_id,
                RejectionReason.UNKNOWN_CLASS,
                detail=f"SLO class {spec.slo_class!r} is not served here (known: {known})",
            ), None
        if spec.prompt_tokens > self.limits.max_prompt_tokens:
            return Rejected(
                spec.request_id,
                RejectionReason.INVALID_REQUEST,
                detail=f"prompt of {spec.prompt_tokens} tokens exceeds {self.limits.max_prompt_tokens}",
            ), None
        if spec.max_tokens > self.limits.max_output_tokens:
            return Rejected(
                spec.request_id,
                RejectionReason.INVALID_REQUEST,
                detail=f"max_tokens {spec.max_tokens} exceeds {self.limits.max_output_tokens}",
            ), None
        if len(self._queued) >= self.limits.max_queue_depth:
            return Rejected(
                spec.request_id,
                RejectionReason.QUEUE_FULL,
                retry_after_s=1.0,
                detail=f"{len(self._queued)} requests already wait (max {self.limits.max_queue_depth})",
            ), None
        try:
            prediction = self._predict(spec)
        except InvalidRequestError as exc:
            return Rejected(spec.request_id, exc.reason, detail=str(exc)), None
        mean = min(float(spec.max_tokens), prediction.mean_tokens)
        entry = Entry(spec=spec, prediction=prediction, predicted_output_tokens=mean)
        return self._arrival_check(entry, now_s), entry

    def _predict(self, spec: RequestSpec) -> LengthPrediction:
        if self.oracle:
            if spec.true_output_tokens is None:
                raise InvalidRequestError("an oracle policy needs true_output_tokens on every request")
            true = float(min(spec.true_output_tokens, spec.max_tokens))
            return LengthPrediction(mean_tokens=true, quantiles={0.1: true, 0.5: true, 0.9: true})
        return self.predictor.predict(
            prompt_text=spec.prompt_text,
            prompt_tokens=spec.prompt_tokens,
            slo_class=spec.slo_class,
            max_tokens=spec.max_tokens,
        )

    def _dequeue(self, entry: Entry) -> None:
        del self._queued[entry.request_id]
        self._queued_by_class[entry.spec.slo_class] -= 1
        self._demoted_queued -= entry.demoted
        self._remove(entry)

    def _give_up(self, entry: Entry, reason: RejectionReason, now_s: float) -> Rejected:
        self._dequeue(entry)
        self.ledger.end(entry.request_id, Outcome.REJECTED, reason=reason)
        return Rejected(
            entry.request_id,
            reason,
            retry_after_s=self._retry_after_s(),
            detail="gave up while queued",
            gate_holds=entry.gate_holds,
        )

    def _retry_after_s(self) -> float:
        """A rough time for the queue ahead to drain: prefill of everything that waits."""
        return round(self.latency.prefill_s(self._pending_prefill_tokens + self._queued_tokens()), 3)

    def _queued_tokens(self) -> float:
        return 0.0

    def _start(self, entry: Entry, now_s: float) -> None:
        spec = entry.spec
        del self._queued[spec.request_id]
        self._queued_by_class[spec.slo_class] -= 1
        self._demoted_queued -= entry.demoted
        self._in_flight[spec.request_id] = entry
        self._in_flight_by_class[spec.slo_class] += 1
        entry.released_s = now_s
        self._pending_prefill_tokens += spec.prompt_tokens
        entry.tokens_ahead_at_release = self._pending_prefill_tokens
        self._running_len_tokens += spec.prompt_tokens
        self._kv_reserved_tokens += entry.kv_need_tokens
        self._predicted_out_in_flight += entry.predicted_output_tokens
        self._tpot.add(spec.tpot_s)

    def _stop(self, entry: Entry) -> None:
        spec = entry.spec
        del self._in_flight[spec.request_id]
        self._in_flight_by_class[spec.slo_class] -= 1
        if entry.first_token_s is None:
            self._pending_prefill_tokens -= spec.prompt_tokens
        self._running_len_tokens -= spec.prompt_tokens + entry.output_tokens
        self._kv_reserved_tokens -= entry.kv_need_tokens
        self._predicted_out_in_flight -= entry.predicted_output_tokens
        self._generated_in_flight -= entry.output_tokens
        if not entry.tpot_waived:
            self._tpot.remove(spec.tpot_s)
        if not self._in_flight:  # drop accumulated float error
            self._running_len_tokens = 0.0
            self._pending_prefill_tokens = 0.0
            self._predicted_out_in_flight = 0.0

    def _flight(self, request_id: str) -> Entry:
        entry = self._in_flight.get(request_id)
        if entry is None:
            raise LedgerError(f"request {request_id!r} is not in flight (never released, or ended twice?)")
        return entry

    @staticmethod
    def _met_slo(entry: Entry, now_s: float, output_tokens: int) -> bool:
        spec = entry.spec
        first = entry.first_token_s if entry.first_token_s is not None else now_s
        if first - spec.arrival_s > spec.ttft_s:
            return False
        if output_tokens > 1 and (now_s - first) / (output_tokens - 1) > spec.tpot_s:
            return False
        deadline = spec.e2e_deadline_s
        return deadline is None or now_s <= deadline

    def demotable(self, entry: Entry) -> bool:
        return entry.spec.on_unattainable is OnUnattainable.BEST_EFFORT
