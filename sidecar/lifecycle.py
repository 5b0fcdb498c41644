"""The request lifecycle: the one place a request goes admit → queue → release → stream → finish.

Both fronts (sidecar/grpc_server.py, sidecar/http_front.py) hand a `ServeRequest` to
`Lifecycle.generate` and relay what it yields. Here the configured policy (through the port in
sidecar/policy_port.py) admits or rejects, the release loop starts queued requests within the adaptive
in-flight cap (sidecar/backpressure.py), the engine client streams (past the first token, a stream with TPOT
slack is read in bursts: sidecar/core/relay_hold.py, and the engine is asked to send tokens several at a
time, none waiting more than 25 ms: sidecar/core/stream_interval.py), per-token timing feeds metrics, the
policy, the cap and the token pace, and every request's outcome is counted exactly once (`_Tracked.end`).
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from sloguard.api.errors import RejectionReason
from sloguard.api.sidecar_config import SidecarConfig, SLOClassConfig
from sloguard.sidecar.backpressure import AimdCap, AimdSettings
from sloguard.sidecar.core.relay_hold import RelayHold
from sloguard.sidecar.core.stream_interval import StreamInterval, TokenPace
from sloguard.sidecar.engine_client import Endpoint, EngineChunk, EngineClient, EngineError
from sloguard.sidecar.engine_health import EngineHealth
from sloguard.sidecar.errors import RequestFailed, RequestRejected, gave_up_queued_detail
from sloguard.sidecar.hop_timing import Hop, HopTimer
from sloguard.sidecar.metrics import SidecarMetrics
from sloguard.sidecar.policy_adapter import BuiltPolicy, build_policy, new_predictor
from sloguard.sidecar.policy_port import Admission, AdmissionPolicy, EngineView, FinishOutcome, PolicyRequest

log = logging.getLogger(__name__)

UNRESOLVED_CLASS_LABEL = "_unresolved"  # slo_class label of requests refused before a class was known
TICK_INTERVAL_S = 0.02  # release rounds for time-driven policy decisions, besides arrivals and finishes
MAX_REQUEST_ID_CHARS = 256  # a request id goes upstream as the X-Request-Id header
FRONT_GRACE_S = 5.0  # past the drain grace: how long a front relaying a batch has to come back for more


@dataclass
class ServeRequest:
    """A request as both fronts hand it over; targets in seconds override the class's where set."""

    endpoint: Endpoint
    body: dict[str, Any]
    slo_class: str | None = None
    request_id: str = ""
    ttft_s: float | None = None
    tpot_s: float | None = None
    deadline_s: float | None = None
    prompt_text: str | None = None
    prompt_tokens: int = 0
    max_tokens: int = 16
    timeout_s: float | None = None  # the client's deadline (gRPC deadline), bounds the engine call
    hops: HopTimer | None = None  # per-hop timing (sidecar/hop_timing.py), marked here when given


@dataclass(frozen=True, slots=True)
class TokenEvent:
    chunk: EngineChunk
    first: bool  # carries the first token
    since_arrival_s: float


@dataclass
class _Tracked:
    request: PolicyRequest
    slo_class: SLOClassConfig
    endpoint: Endpoint
    body: dict[str, Any]
    admission: Admission | None = None
    start: asyncio.Future[None] | None = None
    policy: AdmissionPolicy | None = None
    task: asyncio.Task[Any] | None = None
    engine_priority: int | None = None  # ours (higher = more important); None: stamp none
    released_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    output_tokens: int = 0
    finish_reason: str | None = None
    drain_killed: bool = False
    at_front: bool = False  # suspended at a yield: the front is relaying a batch (not cancellable here)
    outcome: str | None = None  # set once, by _end
    hops: HopTimer | None = None


def _stream_interval(config: SidecarConfig) -> StreamInterval:
    return StreamInterval(wait_max_s=config.relay.stream_interval_max_s)


def _relay_hold(config: SidecarConfig) -> RelayHold:
    relay = config.relay
    return RelayHold(
        hold_max_s=relay.hold_max_s, tpot_share=relay.tpot_share, only_while_queued=relay.only_while_queued
    )


class Lifecycle:
    def __init__(
        self,
        config: SidecarConfig,
        engine: EngineClient,
        metrics: SidecarMetrics,
        clock: Callable[[], float] = time.monotonic,
        clock_scale: float = 1.0,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self.clock_scale = clock_scale  # clock seconds per wall second (`sloguard demo` runs faster)
        self.config = config
        self.relay_hold = _relay_hold(config)
        self.stream_interval = _stream_interval(config)
        self.token_pace = TokenPace()  # the engine's time per token, from every stream's reads
        self.predictor = new_predictor()  # one per event loop; every policy built here learns into it
        built = build_policy(config, self.predictor)
        self.policy: AdmissionPolicy = built.policy
        self.policy_name = built.effective
        self.predictor_name = built.predictor
        metrics.set_policy(built.requested, built.effective)
        metrics.set_classes(c.name for c in config.classes)
        self.aimd = AimdCap(AimdSettings(config.limits.min_in_flight, config.limits.max_in_flight))
        self.health = EngineHealth()  # fed by the service's probe loop and by what requests see
        self.draining = False
        self._waiting: dict[str, _Tracked] = {}
        self._running: dict[str, _Tracked] = {}
        self._running_by_class: dict[str, int] = {}  # kept with _running: views cost O(classes)
        self._idle = asyncio.Event()
        self._idle.set()
        self._pump_pending = False  # `_request_pump`: a release round is scheduled
        self._left_queued = 0  # requests the last release round left waiting (`_read_hold_s`)
        self._refresh_gauges()

    @property
    def engine_up(self) -> bool:
        return self.health.up

    @engine_up.setter
    def engine_up(self, up: bool) -> None:
        """Set outright (the service's first probe at start); later probes go through `health.on_probe`."""
        self.health.up = up
        self.health.probe_failures = 0 if up else self.health.probe_failures_to_down

    # ---- configuration and limits -------------------------------------------------------------

    def apply_config(self, config: SidecarConfig) -> None:
        """Swap in a validated configuration without dropping traffic."""
        old, limits = self.config, config.limits
        rebuild = config.policy != old.policy or config.limits != old.limits or config.classes != old.classes
        # may raise: then nothing has changed
        built = build_policy(config, self.predictor) if rebuild else None
        self.config = config
        self.relay_hold = _relay_hold(config)
        self.stream_interval = _stream_interval(config)
        self.metrics.set_classes(c.name for c in config.classes)
        self.aimd.set_bounds(limits.min_in_flight, limits.max_in_flight)
        if built is not None:
            self._swap_policy(built)
        self._pump()

    def _swap_policy(self, built: BuiltPolicy) -> None:
        """Serve new arrivals with `built`; queued requests re-arrive there in arrival order."""
        self.policy, self.policy_name, self.predictor_name = built.policy, built.effective, built.predictor
        self.metrics.set_policy(built.requested, built.effective)
        now_s = self.clock()
        for tracked in sorted(self._waiting.values(), key=lambda t: t.request.arrival_s):
            tracked.policy = self.policy
            admission = self.policy.on_arrival(tracked.request, now_s, self._view())
            if not admission.admitted and tracked.start is not None and not tracked.start.done():
                reason = admission.reason or RejectionReason.QUEUE_FULL
                tracked.start.set_exception(RequestRejected(reason, "re-queued after a policy change"))

    def set_limits(
        self,
        *,
        in_flight_cap: int = 0,
        min_in_flight: int = 0,
        max_in_flight: int = 0,
        clear_override: bool = False,
    ) -> None:
        if min_in_flight or max_in_flight:
            self.aimd.set_bounds(
                min_in_flight or self.aimd.settings.min_cap, max_in_flight or self.aimd.settings.max_cap
            )
        if clear_override:
            self.aimd.unpin()
        if in_flight_cap:
            self.aimd.pin(in_flight_cap)
        self._pump()

    def count_unparsed(self, reason: RejectionReason) -> None:
        """Count a request a front refused before it could be parsed (malformed JSON, garbage protobuf)."""
        self.metrics.record_end(
            UNRESOLVED_CLASS_LABEL,
            outcome="rejected",
            reason=reason.value,
            met_slo=False,
            now_s=self.clock(),
            window_s=300.0,
        )

    # ---- resolution ---------------------------------------------------------------------------

    def resolve(self, serve: ServeRequest, now_s: float) -> tuple[PolicyRequest, SLOClassConfig]:
        limits = self.config.limits
        if serve.request_id and (
            len(serve.request_id) > MAX_REQUEST_ID_CHARS or not serve.request_id.isprintable()
        ):  # CR, LF, NUL and other control characters cannot go into the engine's X-Request-Id header
            raise RequestRejected(
                RejectionReason.INVALID_REQUEST,
                f"request_id must be at most {MAX_REQUEST_ID_CHARS} printable characters "
                "(no control characters such as CR, LF or NUL)",
            )
        if serve.slo_class:
            slo_class = self.config.class_named(serve.slo_class)
            if slo_class is None:
                known = ", ".join(c.name for c in self.config.classes)
                raise RequestRejected(
                    RejectionReason.UNKNOWN_CLASS, f"unknown SLO class {serve.slo_class!r} (known: {known})"
                )
        else:
            slo_class = self.config.default_class or self.config.classes[0]
        if not 1 <= serve.max_tokens <= limits.max_output_tokens:
            raise RequestRejected(
                RejectionReason.INVALID_REQUEST,
                f"max_tokens must be between 1 and {limits.max_output_tokens}, got {serve.max_tokens}",
            )
        if serve.prompt_tokens > limits.max_prompt_tokens:
            raise RequestRejected(
                RejectionReason.INVALID_REQUEST,
                f"prompt of about {serve.prompt_tokens} tokens exceeds the limit {limits.max_prompt_tokens}",
            )
        for name, value in (("ttft", serve.ttft_s), ("tpot", serve.tpot_s), ("deadline", serve.deadline_s)):
            if value is not None and not 0.0 < value <= 86400.0:
                raise RequestRejected(RejectionReason.INVALID_REQUEST, f"{name} target must be in (0, 1 day]")
        request = PolicyRequest(
            request_id=serve.request_id or uuid.uuid4().hex,
            slo_class=slo_class.name,
            ttft_s=serve.ttft_s or slo_class.ttft_s,
            tpot_s=serve.tpot_s or slo_class.tpot_s,
            deadline_s=serve.deadline_s or slo_class.deadline_s,
            priority=slo_class.priority,
            on_unattainable=slo_class.on_unattainable,
            prompt_tokens=serve.prompt_tokens,
            max_tokens=serve.max_tokens,
            prompt_text=serve.prompt_text,
            arrival_s=now_s,
        )
        return request, slo_class

    def _gate(self) -> None:
        if self.draining:
            raise RequestRejected(RejectionReason.DRAINING, "this replica is draining; retry elsewhere")
        if not self.engine_up:
            raise RequestRejected(RejectionReason.ENGINE_UNAVAILABLE, "the engine is not healthy", 1.0)

    def estimate(self, serve: ServeRequest) -> Admission:
        now_s = self.clock()
        request, _ = self.resolve(serve, now_s)
        self._gate()
        return self.policy.estimate(request, now_s, self._view())

    # ---- the lifecycle ------------------------------------------------------------------------

    async def generate(self, serve: ServeRequest) -> AsyncGenerator[TokenEvent, None]:
        """Admit, queue, stream, one event per chunk (`generate_batches`, flattened; the gRPC front)."""
        batches = self.generate_batches(serve)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for event in batch:
                    yield event

    async def generate_batches(self, serve: ServeRequest) -> AsyncGenerator[list[TokenEvent], None]:
        """Admit, queue, stream. Raises RequestRejected before the first batch, RequestFailed after.

        Each batch holds the events of the chunks one engine read delivered (never empty), so a front
        can relay them with one write; the per-token bookkeeping runs once per batch.
        """
        now_s = self.clock()
        deadline_s = None if serve.timeout_s is None else now_s + serve.timeout_s
        tracked = self._admit(serve, now_s)
        try:
            await self._wait_for_release(tracked, deadline_s)
            if serve.hops is not None:
                serve.hops.mark(Hop.ADMIT_QUEUE)  # released, and this task has run again
            streamed = self._stream(tracked, deadline_s)
            async with contextlib.aclosing(streamed):
                async for batch in streamed:
                    tracked.at_front = True
                    yield batch
                    tracked.at_front = False
                    if tracked.drain_killed:  # the grace ran out while the front relayed this batch
                        raise self._drain_failure(tracked)
        except RequestRejected as rejected:
            self._end(tracked, "rejected", rejected.reason.value)
            raise
        except asyncio.CancelledError:
            if not tracked.drain_killed:
                self._end(tracked, "cancelled", "client")
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise self._drain_failure(tracked) from None
        except GeneratorExit:  # the front stopped reading: its client left (or the drain cut it)
            self._end(
                tracked,
                "failed" if tracked.drain_killed else "cancelled",
                "drain_timeout" if tracked.drain_killed else "client",
            )
            raise
        except TimeoutError:
            self._end(tracked, "cancelled", "deadline_exceeded")
            raise
        finally:
            self._leave(tracked)

    def _drain_failure(self, tracked: _Tracked) -> RequestFailed:
        """Count a request the drain cut (the grace ran out) and the error its front reports: `draining`."""
        self._end(tracked, "failed", "drain_timeout")
        return RequestFailed("the replica drained before the request finished", reason="draining")

    def _admit(self, serve: ServeRequest, now_s: float) -> _Tracked:
        """Resolve and admit, or count the rejection and raise it."""
        try:
            request, slo_class = self.resolve(serve, now_s)
        except RequestRejected as rejected:
            named = self.config.class_named(serve.slo_class) if serve.slo_class else self.config.default_class
            label = named.name if named is not None else UNRESOLVED_CLASS_LABEL  # no client strings as labels
            self.metrics.record_end(
                label,
                outcome="rejected",
                reason=rejected.reason.value,
                met_slo=False,
                now_s=now_s,
                window_s=300.0,
            )
            raise
        tracked = _Tracked(
            request=request, slo_class=slo_class, endpoint=serve.endpoint, body=serve.body, hops=serve.hops
        )
        try:
            self._gate()
            if request.request_id in self._waiting or request.request_id in self._running:
                raise RequestRejected(
                    RejectionReason.INVALID_REQUEST,
                    f"request id {request.request_id!r} is already in progress",
                )
            tracked.admission = admission = self.policy.on_arrival(request, now_s, self._view())
            if not admission.admitted:
                reason = admission.reason or RejectionReason.QUEUE_FULL
                raise RequestRejected(
                    reason, admission.explanation or "not admitted", admission.retry_after_s
                )
        except RequestRejected as rejected:
            self._end(tracked, "rejected", rejected.reason.value)
            raise
        tracked.policy = self.policy
        tracked.task = asyncio.current_task()
        tracked.start = asyncio.get_running_loop().create_future()
        self._waiting[request.request_id] = tracked
        self._idle.clear()
        if len(self._waiting) == 1 and not self._pump_pending:
            self._pump()  # alone in the queue: released (or not) in its own turn, see `_request_pump`
        else:
            self._request_pump()
        return tracked

    async def _wait_for_release(self, tracked: _Tracked, deadline_s: float | None) -> None:
        assert tracked.start is not None
        timeout = None if deadline_s is None else max(0.0, deadline_s - self.clock())
        async with asyncio.timeout(timeout):
            await asyncio.shield(tracked.start)

    async def _stream(
        self, tracked: _Tracked, deadline_s: float | None
    ) -> AsyncGenerator[list[TokenEvent], None]:
        request = tracked.request
        per_chunk = self.engine.stream_interval_for(
            self.stream_interval.tokens_per_chunk(self.token_pace.itl_s)
        )
        # Where the engine packs the tokens itself, the relay does not hold the stream on top: measured in
        # front of real vLLM with packing on (3 paired rounds at 1x and 2x the knee), holds cost more CPU
        # than they saved and goodput was level or lower (docs/benchmarks.md).
        packed = per_chunk > 1
        self.metrics.observe_stream_interval(per_chunk)
        stream = self.engine.stream(
            tracked.endpoint,
            tracked.body,
            request_id=request.request_id,
            priority=tracked.engine_priority,
            hops=tracked.hops,
            read_hold_s=(
                (lambda: self._read_hold_s(tracked)) if self.relay_hold.enabled and not packed else None
            ),
            stream_interval=per_chunk,
        )
        answered = False
        try:
            while True:
                try:
                    if deadline_s is None:
                        chunks = await anext(stream)
                    else:
                        remaining = max(0.0, deadline_s - self.clock())
                        chunks = await asyncio.wait_for(anext(stream), remaining)
                except StopAsyncIteration:
                    break
                if not answered:
                    answered = True
                    self.health.on_answered()  # the engine is streaming to us: whatever a probe said
                yield self._on_chunks(tracked, chunks)
        except EngineError as error:
            if error.is_client_error:
                raise RequestRejected(RejectionReason.INVALID_REQUEST, str(error)) from error
            if error.status is None and not error.started:
                self.health.on_unreachable()  # even on a fresh connection: probe now (down takes probes)
            else:
                self.health.on_answered()
            reason = "engine_error" if error.status is not None or error.started else "engine_unavailable"
            self._end(tracked, "failed", reason)
            log.warning("request %s failed: %s", request.request_id, error)
            raise RequestFailed(str(error), engine_status=error.status, reason=reason) from error
        finally:
            await stream.aclose()
        self._complete(tracked)

    def _read_hold_s(self, tracked: _Tracked) -> float:
        """Wall seconds the engine client may leave this stream unread (sidecar/core/relay_hold.py)."""
        hold = self.relay_hold  # a reload that switched it off: `hold_s` answers 0
        if tracked.first_token_s is None:
            return 0.0
        request, now_s = tracked.request, self.clock()
        deadline = request.deadline_s
        return (
            hold.hold_s(
                tpot_s=request.tpot_s,
                output_tokens=tracked.output_tokens,
                since_first_token_s=now_s - tracked.first_token_s,
                until_deadline_s=None if deadline is None else request.arrival_s + deadline - now_s,
                queued=self._left_queued,  # held back by the policy, not arrivals awaiting their round
            )
            / self.clock_scale
        )

    def _on_chunks(self, tracked: _Tracked, chunks: list[EngineChunk]) -> list[TokenEvent]:
        """The events of one engine read; timing, the cap and the policy are fed once per read."""
        request = tracked.request
        events = []
        tokens = 0
        first = False
        for chunk in chunks:
            if chunk.prompt_tokens is not None:
                request = tracked.request = _with_prompt_tokens(request, chunk.prompt_tokens)
            if chunk.finish_reason:
                tracked.finish_reason = chunk.finish_reason
            if chunk.tokens > 0 or chunk.usage_only:
                tracked.output_tokens = chunk.completion_tokens
            is_first = chunk.tokens > 0 and tracked.first_token_s is None and not first
            first = first or is_first
            if chunk.tokens > 0 and not is_first:
                tokens += chunk.tokens
            events.append(
                TokenEvent(chunk=chunk, first=is_first, since_arrival_s=chunk.received_s - request.arrival_s)
            )
        if first or tokens:
            self._on_tokens(tracked, chunks[-1].received_s, first, tokens)
        return events

    def _on_tokens(self, tracked: _Tracked, now_s: float, first: bool, later_tokens: int) -> None:
        """One read brought the first token (`first`) and/or `later_tokens` more, all seen at `now_s`."""
        request = tracked.request
        policy = tracked.policy or self.policy
        if first:
            tracked.first_token_s = now_s
            self.metrics.ttft.labels(self.metrics.pool, request.slo_class).observe(now_s - request.arrival_s)
            policy.on_first_token(request.request_id, now_s)
        elif tracked.last_token_s is not None and later_tokens:
            interval_s = now_s - tracked.last_token_s
            self.aimd.observe_itl(interval_s / later_tokens, request.tpot_s, now_s)
            self.token_pace.observe(interval_s, later_tokens)
        tracked.last_token_s = now_s
        policy.on_tokens(request.request_id, now_s, tracked.output_tokens)

    def _complete(self, tracked: _Tracked) -> None:
        request, pool = tracked.request, self.metrics.pool
        if tracked.finish_reason == "abort":  # the engine gave up on it (vllm-behaviour.md §3.6)
            self._end(tracked, "failed", "engine_abort")
            raise RequestFailed("the engine aborted the request", reason="engine_abort")
        met = self._met_slo(tracked)
        if (
            tracked.first_token_s is not None
            and tracked.last_token_s is not None
            and tracked.output_tokens > 1
        ):
            tpot_s = (tracked.last_token_s - tracked.first_token_s) / (tracked.output_tokens - 1)
            self.metrics.tpot.labels(pool, request.slo_class).observe(tpot_s)
        self.metrics.actual_tokens.labels(pool, request.slo_class).observe(tracked.output_tokens)
        predicted = tracked.admission.predicted_output_tokens if tracked.admission else None
        if predicted is not None:
            self.metrics.predicted_tokens.labels(pool, request.slo_class).observe(predicted)
        self._end(tracked, "completed", "", met_slo=met)  # reason: only for rejected, cancelled and failed

    def _met_slo(self, tracked: _Tracked) -> bool:
        request = tracked.request
        if tracked.first_token_s is None or tracked.last_token_s is None:
            return False
        if tracked.first_token_s - request.arrival_s > request.ttft_s:
            return False
        if tracked.output_tokens > 1:
            tpot_s = (tracked.last_token_s - tracked.first_token_s) / (tracked.output_tokens - 1)
            if tpot_s > request.tpot_s:
                return False
        return request.deadline_s is None or tracked.last_token_s - request.arrival_s <= request.deadline_s

    def _end(self, tracked: _Tracked, outcome: str, reason: str, met_slo: bool = False) -> None:
        """Count the request's outcome; the first call wins, so every request ends exactly once."""
        if tracked.outcome is not None:
            return
        tracked.outcome = outcome
        self.metrics.record_end(
            tracked.request.slo_class,
            outcome=outcome,
            reason=reason,
            met_slo=met_slo,
            now_s=self.clock(),
            window_s=tracked.slo_class.attainment_window_s,
        )

    def _leave(self, tracked: _Tracked) -> None:
        request = tracked.request
        request_id = request.request_id
        now_s = self.clock()
        policy = tracked.policy or self.policy
        if self._waiting.pop(request_id, None) is not None:
            policy.on_cancel(request_id, now_s)
        if self._running.pop(request_id, None) is not None:
            self._running_by_class[request.slo_class] -= 1
            policy.on_finish(request_id, now_s, _finish_outcome(tracked.outcome), tracked.output_tokens)
        if not self._waiting and not self._running:
            self._idle.set()
        self._request_pump()

    # ---- the release loop ---------------------------------------------------------------------

    def _request_pump(self) -> None:
        """A release round at the next turn of the event loop, one for every arrival and end of this turn.

        Each round walks the policy's queue (its expiry sweep) and the waiting requests (the gauges); run
        once per arrival and per end, at 2x the knee in front of real vLLM that was a third of the
        sidecar's CPU and event-loop stalls of 350 ms at p99 (py-spy; `GET /debug/hops`). A burst's
        arrivals and ends now share one round, which sees them all. Outside an event loop (a
        synchronous caller), the round runs at once.

        An arrival that finds the queue empty and no round pending has its round at once (`_admit`): the
        round sees one request, so it costs little, and the request goes upstream in the turn it arrived
        in rather than two turns later (the round's turn, then its task's). Below saturation that is
        almost every request; a turn of a busy sidecar's loop is milliseconds, against first-token
        targets of tens."""
        if self._pump_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._pump()
            return
        self._pump_pending = True
        loop.call_soon(self._deferred_pump)

    def _deferred_pump(self) -> None:
        self._pump_pending = False
        self._pump()

    def _view(self) -> EngineView:
        by_class = {name: n for name, n in self._running_by_class.items() if n}
        return EngineView(
            in_flight=len(self._running), in_flight_cap=self.aimd.cap, in_flight_by_class=by_class
        )

    def _pump(self) -> None:
        """One release round: start what the policy releases, within the cap; drop what it gives up."""
        if self._waiting:
            now_s = self.clock()
            release = self.policy.release(now_s, self._view())
            for request_id, reason in release.reject:
                tracked = self._waiting.pop(request_id, None)
                if tracked is not None and tracked.start is not None and not tracked.start.done():
                    holds = release.gate_holds.get(request_id, 0)
                    if holds > 0:
                        slo_class = tracked.request.slo_class
                        self.metrics.tpot_gate_giveups.labels(self.metrics.pool, slo_class).inc()
                    tracked.start.set_exception(RequestRejected(reason, gave_up_queued_detail(holds)))
            for request_id in release.start:
                tracked = self._waiting.pop(request_id, None)
                if tracked is None or tracked.start is None or tracked.start.done():
                    continue
                if len(self._running) >= self.aimd.cap:  # a policy must not exceed the cap: requeue in front
                    self._waiting[request_id] = tracked
                    continue
                priority = release.engine_priority.get(request_id, tracked.request.priority)
                tracked.engine_priority = priority
                tracked.released_s = now_s
                self._running[request_id] = tracked
                slo_class = tracked.request.slo_class
                self._running_by_class[slo_class] = self._running_by_class.get(slo_class, 0) + 1
                self.metrics.queue_wait.labels(self.metrics.pool, slo_class).observe(
                    now_s - tracked.request.arrival_s
                )
                tracked.start.set_result(None)
            if self._waiting and len(self._running) >= self.aimd.cap:
                self.aimd.note_saturated()
        self._left_queued = len(self._waiting)
        self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        m = self.metrics
        depth = self.policy.queue_depth_by_class()
        running = self._running_by_class
        now_s = self.clock()
        predicted: dict[str, float] = {}
        oldest_s: dict[str, float] = {}
        for tracked in self._waiting.values():
            request = tracked.request
            admission = tracked.admission
            tokens = admission.predicted_output_tokens if admission is not None else None
            predicted[request.slo_class] = predicted.get(request.slo_class, 0.0) + (tokens or 0.0)
            oldest_s[request.slo_class] = min(oldest_s.get(request.slo_class, now_s), request.arrival_s)
        for slo_class in self.config.classes:
            name = slo_class.name
            gauges = m.class_gauges_of(name)
            gauges.queue_depth.set(depth.get(name, 0))
            gauges.queue_predicted_tokens.set(predicted.get(name, 0.0))
            gauges.queue_oldest_age.set(max(0.0, now_s - oldest_s.get(name, now_s)))
            gauges.in_flight.set(running.get(name, 0))
        m.pool_gauges.in_flight_cap.set(self.aimd.cap)
        m.pool_gauges.cap_overridden.set(1 if self.aimd.pinned else 0)

    async def run_ticks(self) -> None:
        """Periodic release rounds (policies that hold requests for time-driven reasons)."""
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            self._pump()

    async def run_health_probe(self, interval_s: float = 1.0) -> None:
        while True:
            up = self.health.on_probe(await self.engine.healthy())
            self.metrics.engine_up.labels(self.metrics.pool).set(1 if up else 0)
            await asyncio.sleep(interval_s)

    # ---- state and drain ----------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def in_flight_by_class(self) -> dict[str, int]:
        return dict(self._view().in_flight_by_class)

    def start_draining(self) -> None:
        self.draining = True
        self.metrics.draining.labels(self.metrics.pool).set(1)

    async def drain(self, grace_s: float) -> bool:
        """Stop admitting; wait up to `grace_s` for queued and in-flight requests; end the rest as failed.

        Each of the rest ends with RequestFailed(reason="draining"), which its front reports (gRPC status
        with `sloguard-reason`, an HTTP error event): a request waiting in here (queue, engine) is
        cancelled and converts the cancellation; one whose front is relaying a batch is not cancelled
        (that would land in the front's or gRPC's own code and end the call without a reason) but fails
        when the front comes back for the next batch. A front that never does (a client that stopped
        reading) is cancelled after FRONT_GRACE_S."""
        self.start_draining()
        if await self._idle_within(grace_s):
            return True
        for tracked in [*self._waiting.values(), *self._running.values()]:
            tracked.drain_killed = True
            if tracked.task is not None and not tracked.at_front:
                tracked.task.cancel()
        if not await self._idle_within(FRONT_GRACE_S):
            for tracked in [*self._waiting.values(), *self._running.values()]:
                if tracked.task is not None:  # a front stuck relaying (its client stopped reading)
                    tracked.task.cancel()
            await self._idle_within(FRONT_GRACE_S)
        return False

    async def _idle_within(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        return self._idle.is_set()


def _with_prompt_tokens(request: PolicyRequest, prompt_tokens: int) -> PolicyRequest:
    if request.prompt_tokens == prompt_tokens:
        return request
    return replace(request, prompt_tokens=prompt_tokens)


def _finish_outcome(outcome: str | None) -> FinishOutcome:
    """What a started request's end means to its policy (an engine 4xx after release counts as failed)."""
    if outcome == "completed":
        return "completed"
    if outcome == "cancelled":
        return "cancelled"
    return "failed"
