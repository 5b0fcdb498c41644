"""Co-simulation: a sidecar policy in front of a simulated engine, in virtual time.

The benchmarks (`bench/`) and the cluster simulation drive the *same* policy code the sidecar runs
(`sloguard.sidecar.core`) against the discrete-event engine (`sloguard.sim.engine`). `SimulatedReplica`
is one pod: its policy decides admission, order and release, its engine runs what was released, and
every request ends with a `RequestRecord`. `run_replica` replays a list of arrivals through one replica
until everything has ended. No clock is read: time is the engine's virtual time.

Order of work at one instant t: engine events up to t (first tokens, finishes) reach the policy first,
then arrivals at t are submitted, then the policy releases; a request released at t joins the engine
iteration formed at t.
"""

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sloguard.api.errors import RejectionReason
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.policy import Admitted, EngineView, Policy, Rejected
from sloguard.sidecar.core.requests import Outcome, RequestSpec
from sloguard.sim.engine import BatchShape, Engine, Finished, FirstToken, SimRequest, StepTimeModel

_UNBOUNDED_CAP = 1 << 30


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """How one request ended and whether it met its SLO (TTFT, mean TPOT and any deadline)."""

    request_id: str
    slo_class: str
    arrival_s: float
    outcome: Outcome
    reason: RejectionReason | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    output_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the engine's prefix cache held at first admission

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first (0 for one-token outputs)."""
        if self.first_token_s is None or self.finish_s is None:
            return None
        if self.output_tokens <= 1:
            return 0.0
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1)

    @property
    def latency_s(self) -> float | None:
        return None if self.finish_s is None else self.finish_s - self.arrival_s

    def met(self, spec: RequestSpec) -> bool:
        """Completed within every target of its class; rejections and failures count as misses."""
        if self.outcome is not Outcome.COMPLETED:
            return False
        ttft, tpot, latency = self.ttft_s, self.tpot_s, self.latency_s
        if ttft is None or tpot is None or latency is None:
            return False
        if spec.deadline_s is not None and latency > spec.deadline_s:
            return False
        return ttft <= spec.ttft_s and tpot <= spec.tpot_s


def latency_model_from_profile(
    step_time: StepTimeModel,
    *,
    max_num_batched_tokens: int = 8192,
    max_prompt_tokens: int = 8192,
    max_batch: int = 256,
    max_len_tokens: int = 4096,
) -> LatencyModel:
    """The sidecar's latency model, seeded from the engine's step-time profile.

    A real sidecar would start from the same profile file and calibrate online; here the samples are
    priced by the engine's own step-time model: prefill of a prompt alone (chunked at the token budget)
    and decode-only iterations over a grid of batch sizes and mean lengths.
    """
    prefill: list[tuple[float, float]] = []
    for tokens in (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192):
        if tokens > max_prompt_tokens:
            break
        seconds, done = 0.0, 0
        while done < tokens:
            chunk = min(max_num_batched_tokens, tokens - done)
            seconds += step_time.step_s(BatchShape(0, 0, ((chunk, done),)))
            done += chunk
        prefill.append((float(tokens), seconds))
    decode: list[tuple[float, float, float]] = []
    for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        if batch > max_batch:
            break
        for mean_len in (128, 512, 1024, 2048, 4096):
            if mean_len > max_len_tokens:
                break
            itl = step_time.step_s(BatchShape(batch, batch * mean_len))
            decode.append((float(batch), float(mean_len), itl))
    return LatencyModel.fit(prefill_samples=prefill, decode_samples=decode)


class SimulatedReplica:
    """One pod in virtual time: a policy (the sidecar) releasing requests into an engine (vLLM).

    `in_flight_cap`: the local concurrency cap handed to the policy (None: unbounded, so only the
    policy's own `limits.max_in_flight` applies). `kv_gating`: tell the policy the engine's free KV room.
    `progress_interval_s`: how often in-flight progress (`on_tokens`) is reported to the policy.
    """

    def __init__(
        self,
        policy: Policy,
        engine: Engine,
        *,
        block_size: int,
        in_flight_cap: int | None = None,
        kv_gating: bool = True,
        progress_interval_s: float = 0.25,
    ) -> None:
        self.policy = policy
        self.engine = engine
        self.block_size = block_size
        self.in_flight_cap = in_flight_cap
        self.kv_gating = kv_gating
        self.progress_interval_s = progress_interval_s
        self.now_s = 0.0
        self.specs: dict[str, RequestSpec] = {}
        self.records: dict[str, RequestRecord] = {}
        self._first_token_s: dict[str, float] = {}
        self._cached_tokens: dict[str, int] = {}
        self.predicted_tokens: dict[str, float] = {}  # output tokens the policy predicted at admission
        self._in_flight: set[str] = set()
        self._next_progress_s = math.inf
        self._released_at_s = -math.inf

    # --- inputs -----------------------------------------------------------------------------------

    def arrive(self, spec: RequestSpec, now_s: float) -> None:
        """A request reaches the sidecar at `now_s` (>= the replica's time)."""
        self._advance_engine(now_s)
        self.specs[spec.request_id] = spec
        decision = self.policy.submit(spec, now_s)
        if isinstance(decision, Admitted):
            self.predicted_tokens[spec.request_id] = decision.predicted_output_tokens
        if isinstance(decision, Rejected):
            self._end_rejected(decision, now_s)

    def next_time_s(self) -> float | None:
        """When this replica next needs attention (engine event, policy wake-up, progress report)."""
        times = [self.engine.next_event_time_s()]
        wakeup = self.policy.next_wakeup_s(self.now_s)
        # NOTE: a wake-up at or before the last release has been served already; honouring it again
        # would spin at one instant, so it waits for the next event instead.
        if wakeup is not None and wakeup > self._released_at_s:
            times.append(wakeup)
        if self._in_flight:
            times.append(self._next_progress_s)
        finite = [t for t in times if t is not None and math.isfinite(t)]
        return max(min(finite), self.now_s) if finite else None

    def advance_to(self, t_s: float) -> None:
        """Process everything up to `t_s`, then let the policy release."""
        self._advance_engine(t_s)
        if self._in_flight and t_s >= self._next_progress_s:
            for request_id in sorted(self._in_flight):
                self.policy.on_tokens(request_id, t_s, self.engine.output_tokens(request_id))
            self._next_progress_s = t_s + self.progress_interval_s
        self.release(t_s)

    def release(self, now_s: float) -> None:
        self._released_at_s = now_s
        step = self.policy.release(now_s, self._engine_view())
        for rejected in step.rejections:
            self._end_rejected(rejected, now_s)
        for released in step.releases:
            spec = self.specs[released.request_id]
            self.engine.submit(
                SimRequest(
                    released.request_id,
                    prompt_tokens=spec.prompt_tokens,
                    max_tokens=spec.max_tokens,
                    priority=released.engine_priority or 0,
                    eos_after_tokens=spec.true_output_tokens,
                    prefix_hashes=spec.prefix_hashes,
                    prefix_block_tokens=spec.prefix_block_tokens,
                ),
                now_s,
            )
            self._in_flight.add(released.request_id)
            if self._next_progress_s == math.inf:
                self._next_progress_s = now_s + self.progress_interval_s

    def cancel(self, request_id: str, now_s: float) -> None:
        """The client went away: abort in the engine if in flight, end the request as cancelled."""
        self._advance_engine(now_s)
        if request_id in self._in_flight:
            self.engine.abort(request_id, now_s)
            self._in_flight.discard(request_id)
        if self.policy.cancel(request_id, now_s):
            spec = self.specs[request_id]
            self.records[request_id] = RequestRecord(
                request_id,
                spec.slo_class,
                spec.arrival_s,
                Outcome.CANCELLED,
                first_token_s=self._first_token_s.get(request_id),
                finish_s=now_s,
                cached_tokens=self._cached_tokens.get(request_id, 0),
            )

    # --- state ------------------------------------------------------------------------------------

    @property
    def open_requests(self) -> int:
        return len(self.specs) - len(self.records)

    def _engine_view(self) -> EngineView:
        cap = _UNBOUNDED_CAP if self.in_flight_cap is None else self.in_flight_cap
        if not self.kv_gating:
            return EngineView(in_flight_cap=cap)
        snapshot = self.engine.snapshot()
        free_tokens = max(0, snapshot.kv_blocks_total - snapshot.kv_blocks_used) * self.block_size
        return EngineView(in_flight_cap=cap, kv_free_tokens=free_tokens)

    def _advance_engine(self, t_s: float) -> None:
        if t_s < self.now_s:
            raise ValueError(f"time went backwards: {t_s} < {self.now_s}")
        for event in self.engine.advance_to(t_s):
            if isinstance(event, FirstToken):
                self._first_token_s[event.request_id] = event.time_s
                self._cached_tokens[event.request_id] = event.cached_tokens
                self.policy.on_first_token(event.request_id, event.time_s)
            elif isinstance(event, Finished):
                self._on_finished(event)
        self.now_s = t_s

    def _on_finished(self, event: Finished) -> None:
        request_id = event.request_id
        self._in_flight.discard(request_id)
        if not self._in_flight:
            self._next_progress_s = math.inf
        # "reject": an engine-integrated scheduler (SCORPIO in the engine) refused it; the sidecar in
        # front only sees its stream end, the record says what happened
        engine_rejected = event.finish_reason == "reject"
        outcome = Outcome.CANCELLED if event.finish_reason in ("abort", "reject") else Outcome.COMPLETED
        self.policy.on_tokens(request_id, event.time_s, event.output_tokens)
        self.policy.on_finish(request_id, event.time_s, outcome=outcome, output_tokens=event.output_tokens)
        spec = self.specs[request_id]
        first = self._first_token_s.get(request_id)
        if first is None and event.output_tokens > 0:
            first = float(event.token_times_s[0])
        self.records[request_id] = RequestRecord(
            request_id,
            spec.slo_class,
            spec.arrival_s,
            Outcome.REJECTED if engine_rejected else outcome,
            reason=RejectionReason.TTFT_UNATTAINABLE if engine_rejected else None,
            first_token_s=first,
            finish_s=event.time_s,
            output_tokens=event.output_tokens,
            cached_tokens=self._cached_tokens.get(request_id, 0),
        )

    def _end_rejected(self, rejected: Rejected, now_s: float) -> None:
        spec = self.specs[rejected.request_id]
        self.records[rejected.request_id] = RequestRecord(
            rejected.request_id,
            spec.slo_class,
            spec.arrival_s,
            Outcome.REJECTED,
            reason=rejected.reason,
            finish_s=now_s,
        )


def run_replica(replica: SimulatedReplica, arrivals: Iterable[RequestSpec]) -> list[RequestRecord]:
    """Replay `arrivals` (by `arrival_s`) through one replica until every request has ended.

    Returns one record per request, in arrival order. Raises RuntimeError if requests stay open with
    nothing left to happen (a policy that never releases what it admitted).
    """
    queue = [(spec.arrival_s, index, spec) for index, spec in enumerate(arrivals)]
    heapq.heapify(queue)
    order = [spec.request_id for _, _, spec in sorted(queue)]
    while queue or replica.open_requests:
        next_arrival = queue[0][0] if queue else None
        next_event = replica.next_time_s()
        if next_arrival is None and next_event is None:
            raise RuntimeError(f"{replica.open_requests} requests still open and nothing left to happen")
        if next_event is None or (next_arrival is not None and next_arrival <= next_event):
            assert next_arrival is not None
            while queue and queue[0][0] == next_arrival:
                _, _, spec = heapq.heappop(queue)
                replica.arrive(spec, next_arrival)
            replica.release(next_arrival)
        else:
            replica.advance_to(next_event)
    return [replica.records[request_id] for request_id in order]


@dataclass(frozen=True, slots=True)
class ClassSummary:
    requests: int
    met: int
    completed: int
    rejected: int

    @property
    def adherence(self) -> float:
        return self.met / self.requests if self.requests else 0.0


def summarise(records: Sequence[RequestRecord], specs: dict[str, RequestSpec]) -> dict[str, ClassSummary]:
    """Per-class counts (and "all"): requests, SLO met, completed, rejected."""
    groups: dict[str, list[RequestRecord]] = {"all": list(records)}
    for record in records:
        groups.setdefault(record.slo_class, []).append(record)
    return {
        name: ClassSummary(
            requests=len(group),
            met=sum(record.met(specs[record.request_id]) for record in group),
            completed=sum(record.outcome is Outcome.COMPLETED for record in group),
            rejected=sum(record.outcome is Outcome.REJECTED for record in group),
        )
        for name, group in groups.items()
    }
