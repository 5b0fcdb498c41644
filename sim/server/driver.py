"""Runs the virtual-time engine against the wall clock for the HTTP server, and feeds /metrics.

`EngineDriver` owns the engine: handlers submit and abort through it, and a background task advances
the engine to `virtual_now()` whenever an iteration ends (engine time runs `time_scale` times faster
than wall time). After every advance it tells each open request how many tokens it has, so streams
send what exists (several tokens per chunk when the server falls behind, as vLLM does).

A stalled process is a stalled engine: when the wall clock jumps by more than `max_stall_wall_s` between
two looks (the machine froze this process), engine time advances by that much only, as a real engine
that got no CPU would. Otherwise one catch-up advance would finish whole generations at once and the
streams would flush them in arbitrary task order, which no real engine does.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sloguard.sim.engine import Engine, Finished, FirstToken, Preempted, SimRequest
from sloguard.sim.server.metrics import VllmMetrics

_MIN_WAKE_S = 0.0005
MAX_STALL_WALL_S = 0.05
log = logging.getLogger(__name__)


@dataclass
class RequestHandle:
    """What a handler sees of its request: tokens so far, and the Finished event at the end."""

    request: SimRequest
    max_tokens: int
    arrival_s: float
    generated: int = 0
    finished: Finished | None = None
    pending_preemptions: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class EngineDriver:
    def __init__(
        self,
        engine: Engine,
        metrics: VllmMetrics,
        *,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_stall_wall_s: float = MAX_STALL_WALL_S,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if max_stall_wall_s <= 0:
            raise ValueError("max_stall_wall_s must be > 0")
        self.engine = engine
        self.metrics = metrics
        self.time_scale = time_scale
        self._clock = clock
        self._max_stall_wall_s = max_stall_wall_s
        self._virtual_s = engine.now_s
        self._wall_s = clock()
        self._handles: dict[str, RequestHandle] = {}
        self._wake = asyncio.Event()
        self._iter_seen: dict[int, int] = {}
        self._prefix_seen = (0, 0)  # the engine's prefix-cache (queries, hits) already exported
        self._lv = metrics.labels()

    def virtual_now(self) -> float:
        """Engine time now: wall time since the last look, scaled, with stalls cut to max_stall_wall_s."""
        wall_s = self._clock()
        elapsed_s = min(max(wall_s - self._wall_s, 0.0), self._max_stall_wall_s)
        self._wall_s = wall_s
        self._virtual_s = max(self.engine.now_s, self._virtual_s + elapsed_s * self.time_scale)
        return self._virtual_s

    def submit(self, request: SimRequest, max_tokens: int) -> RequestHandle:
        now = self.virtual_now()
        self._advance(now)
        self.engine.submit(request, now)  # raises ValueError on a duplicate id
        handle = RequestHandle(request, max_tokens, now)
        self._handles[request.request_id] = handle
        self._wake.set()
        return handle

    def abort(self, request_id: str) -> None:
        """The client went away: drop the request from the engine (no success metrics, like vLLM)."""
        if request_id not in self._handles:
            return
        now = self.virtual_now()
        self._advance(now)
        handle = self._handles.pop(request_id, None)
        if handle is not None and self.engine.has_request(request_id):
            self.engine.abort(request_id, now)
        self._wake.set()

    def refresh_gauges(self) -> None:
        self._advance(self.virtual_now())
        snap = self.engine.snapshot()
        self.metrics.set_state(running=snap.running, waiting=snap.waiting, kv_usage=snap.kv_cache_usage)

    async def run(self) -> None:
        try:
            await self._loop()
        except Exception:
            log.exception("the simulated engine failed; the server can no longer make progress")
            raise

    async def _loop(self) -> None:
        while True:
            self._advance(self.virtual_now())
            t_next = self.engine.next_event_time_s()
            timeout = (
                None if t_next is None else max((t_next - self.virtual_now()) / self.time_scale, _MIN_WAKE_S)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    # ------------------------------------------------------------------------------------------------
    def _advance(self, t_s: float) -> None:
        m, lv = self.metrics, self._lv
        events = self.engine.advance_to(max(t_s, self.engine.now_s))
        # tokens first: those made before a preemption in this advance must not flush its count
        for rid, open_handle in self._handles.items():
            if not self.engine.has_request(rid):
                continue
            n = self.engine.output_tokens(rid)
            if n > open_handle.generated:
                self._progress(open_handle, self.engine.token_times_s(rid), n)
                open_handle.changed.set()
        for event in events:
            handle = self._handles.get(event.request_id)
            if handle is None:
                continue
            if isinstance(event, FirstToken):
                m.prompt_tokens.labels(**lv).inc(handle.request.prompt_tokens)
                m.prompt_local.inc(handle.request.prompt_tokens - event.cached_tokens)
                if event.cached_tokens:
                    m.prompt_cache_hit.inc(event.cached_tokens)
                    m.prompt_cached.inc(event.cached_tokens)
                m.ttft.labels(**lv).observe(event.time_s - handle.arrival_s)
            elif isinstance(event, Preempted):
                handle.pending_preemptions += 1
            elif isinstance(event, Finished):
                self._progress(handle, event.token_times_s, event.output_tokens)
                self._finished_metrics(handle, event)
                handle.finished = event
                handle.changed.set()
                del self._handles[event.request_id]
        self._export_prefix_counters()
        counts = self.engine.iteration_token_counts
        if counts != self._iter_seen:
            hist = m.iteration_tokens.labels(**lv)
            for tokens, count in counts.items():
                for _ in range(count - self._iter_seen.get(tokens, 0)):
                    hist.observe(tokens)
            self._iter_seen = dict(counts)

    def _export_prefix_counters(self) -> None:
        """vLLM's prefix-cache counters follow the engine's (tokens, counted at admission)."""
        m = self.metrics
        snap = self.engine.snapshot()
        queries, hits = snap.prefix_cache_queries_tokens, snap.prefix_cache_hits_tokens
        seen_queries, seen_hits = self._prefix_seen
        if (queries, hits) != (seen_queries, seen_hits):
            m.prefix_queries.inc(queries - seen_queries)
            m.prefix_hits.inc(hits - seen_hits)
            m.prompt_cached_device.inc(hits - seen_hits)
            self._prefix_seen = (queries, hits)

    def _progress(self, handle: RequestHandle, times: npt.NDArray[np.float64], n: int) -> None:
        m, lv = self.metrics, self._lv
        new = n - handle.generated
        if new <= 0:
            return
        m.generation_tokens.labels(**lv).inc(new)
        start = max(handle.generated, 1)
        itl = m.itl.labels(**lv)
        for gap in np.diff(times[start - 1 : n]):
            itl.observe(float(gap))
        if handle.pending_preemptions:
            m.preemptions.labels(**lv).inc(handle.pending_preemptions)
            handle.pending_preemptions = 0
        handle.generated = n

    def _finished_metrics(self, handle: RequestHandle, done: Finished) -> None:
        m, lv = self.metrics, self._lv
        m.success.labels(**lv, finished_reason=done.finish_reason).inc()
        m.e2e.labels(**lv).observe(done.time_s - done.arrival_s)
        scheduled = done.first_scheduled_s if done.first_scheduled_s is not None else done.arrival_s
        first = float(done.token_times_s[0]) if done.output_tokens else done.time_s
        m.queue.labels(**lv).observe(scheduled - done.arrival_s)
        m.inference.labels(**lv).observe(done.time_s - scheduled)
        m.prefill.labels(**lv).observe(first - scheduled)
        m.decode.labels(**lv).observe(done.time_s - first)
        if done.output_tokens > 1:
            m.tpot.labels(**lv).observe((done.time_s - first) / (done.output_tokens - 1))
        m.req_prompt_tokens.labels(**lv).observe(done.prompt_tokens)
        m.req_generation_tokens.labels(**lv).observe(done.output_tokens)
        m.params_max_tokens.labels(**lv).observe(handle.max_tokens)
        m.max_gen_tokens.labels(**lv).observe(handle.max_tokens)
        m.params_n.labels(**lv).observe(1)
        m.req_preemptions.labels(**lv).observe(done.num_preemptions)
        m.prefill_kv.labels(**lv).observe(done.prompt_tokens)
