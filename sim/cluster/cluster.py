"""The cluster simulation: N simulated pods, a router, cold starts, drains and the real autoscaler.

Called by `sloguard bench autoscale` (`sloguard.bench.autoscale`) and the cluster tests. In virtual time:

* each pod is a `ClusterReplica` (`sloguard.sim.cosim.SimulatedReplica`: the sidecar policy in front of
  the simulated vLLM engine); a pod asked for at t takes traffic only from t + the spec's start-up time,
  and holds its GPU from t;
* the router sends each interactive request to the ready pod with the fewest open interactive requests
  (then fewest open requests: join-shortest-queue); batch requests wait in a gateway queue (earliest
  deadline first) and spill into a ready pod only while that pod's sidecar queue is short
  (`batch_queue_per_pod`) and its batch requests leave `interactive_reserve` of its in-flight cap free,
  so batch fills spare capacity, as Chiron's mixed instances do;
* every `spec.autoscaling.interval` the autoscaling decision core (`sloguard.operator.core.autoscaling`,
  the operator's own code) gets a `PoolSnapshot` of the simulated state and its decision is applied:
  new pods start; a scale-down first cancels pods still starting, then drains the least-loaded ready
  pods (no new requests; they finish what they hold, then go; their GPU time counts until then); the
  decision's cap bounds clamp each sidecar's in-flight cap;
* with no autoscaler, the pool is static: `initial_replicas` pods, ready from t = 0.

Order at one instant: pod events (first tokens, finishes, policy wake-ups), pods becoming ready, batch
spill-over, arrivals, then the autoscaler tick. Deterministic for a seed: no clock, no unordered
iteration.
"""

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sloguard.api.inferencepool import InferencePoolSpec
from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.sidecar_config import PolicyConfig, SidecarConfig, SLOClassConfig
from sloguard.operator.core.autoscaling import (
    AutoscalerLoop,
    PoolSnapshot,
    ReplicaCounts,
    ScalingContext,
    ScalingDecision,
)
from sloguard.predictor import OutputLengthPredictor, load_default_predictor
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import RequestSpec
from sloguard.sim.cluster.observe import (
    CounterSeries,
    EndedWindow,
    GatewayQueue,
    PodState,
    build_snapshot,
    ended_request,
)
from sloguard.sim.cluster.replica import ClusterReplica, Phase
from sloguard.sim.cosim import RequestRecord, latency_model_from_profile
from sloguard.sim.engine import Engine, EngineConfig
from sloguard.sim.profiles import load_profile


@dataclass(frozen=True)
class ClusterConfig:
    """One scenario: the pool's spec and classes, the workload, and the simulation's own knobs."""

    spec: InferencePoolSpec
    classes: tuple[SLOClassConfig, ...]
    interactive: tuple[RequestSpec, ...]  # routed on arrival
    batch: tuple[RequestSpec, ...]  # held in the gateway queue, spilled into pods with room
    horizon_s: float  # simulate at least this long (GPU time is counted to max(horizon, last end))
    initial_replicas: int  # ready at t = 0
    profile: str = "llama-3-8b-h100"
    sidecar_policy: SchedulingPolicyName = SchedulingPolicyName.SLOGUARD
    seed: int = 0
    batch_queue_per_pod: int = 4  # batch requests a pod's sidecar may hold queued
    interactive_reserve: float = 0.25  # share of each pod's in-flight cap batch may not take
    progress_interval_s: float = 1.0
    pool: str = "sim"

    def sidecar_config(self) -> SidecarConfig:
        limits = self.spec.sidecar.limits
        return SidecarConfig(
            classes=list(self.classes),
            policy=PolicyConfig(name=self.sidecar_policy, parameters=dict(self.spec.scheduling.parameters)),
            limits=limits,
        )


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """The pool at one autoscaler tick, for the plot."""

    time_s: float
    ready: int
    starting: int
    draining: int
    desired: int
    interactive_attainment: float | None  # over the last rate window
    batch_done: int  # batch requests ended so far


@dataclass
class ClusterResult:
    records: dict[str, RequestRecord]  # every request, exactly once
    specs: dict[str, RequestSpec]
    gpu_seconds: float
    end_s: float
    decisions: list[ScalingDecision]
    timeline: list[TimelinePoint]
    replicas_created: int
    snapshots: list[PoolSnapshot] = field(default_factory=list)

    def attainment(self, slo_class: str) -> float:
        mine = [r for r in self.records.values() if r.slo_class == slo_class]
        return sum(r.met(self.specs[r.request_id]) for r in mine) / len(mine) if mine else 1.0

    @property
    def scale_events(self) -> int:
        return sum(d.changed for d in self.decisions)

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0


MAX_OVERRUN_S = 48 * 3600.0
"""A run still going this long after its horizon has requests nothing will end: a bug, not a result."""


class ClusterSimulation:
    """Run once with `run()`; `autoscaler` None means a static pool of `config.initial_replicas`."""

    def __init__(
        self,
        config: ClusterConfig,
        autoscaler: AutoscalerLoop | None,
        *,
        keep_snapshots: bool = False,
        on_tick: Callable[["ClusterSimulation", PoolSnapshot, ScalingDecision | None], None] | None = None,
    ) -> None:
        self.config = config
        self.autoscaler = autoscaler
        self.keep_snapshots = keep_snapshots
        self.on_tick = on_tick
        profile = load_profile(config.profile)
        self._profile = profile
        self._latency: LatencyModel = latency_model_from_profile(
            profile.step_time(), max_prompt_tokens=profile.max_model_len, max_len_tokens=profile.max_model_len
        )
        self._sidecar_config = config.sidecar_config()
        self.context = (
            autoscaler.context
            if autoscaler is not None
            else ScalingContext.from_spec(config.spec, list(config.classes))
        )
        self.interval_s = self.context.interval_s
        self.startup_s = self.context.startup_time_s
        self.cap = self.context.max_in_flight
        self.pods: list[ClusterReplica] = []
        self._heap: list[tuple[float, int, int]] = []  # (time, pod index, version)
        self._version: list[int] = []
        self.now_s = 0.0
        self.specs: dict[str, RequestSpec] = {}
        self.records: dict[str, RequestRecord] = {}
        self.ended = EndedWindow()
        self.decisions: list[ScalingDecision] = []
        self.timeline: list[TimelinePoint] = []
        self.snapshots: list[PoolSnapshot] = []
        self._preemptions = CounterSeries()
        self._generated = CounterSeries()
        self._removed_preemptions = 0
        self._removed_tokens = 0
        self._gateway_predictor: OutputLengthPredictor = load_default_predictor()
        self._batch_queue: deque[RequestSpec] = deque()
        self._batch_predicted: dict[str, float] = {}
        self._batch_predicted_sum = 0.0
        self._waiting_interactive: deque[RequestSpec] = deque()  # only while no pod is ready
        self._open_arrivals: dict[str, float] = {}  # open request -> arrival, for the oldest age
        self.routed_to: dict[str, int] = {}  # request -> index of the pod it was sent to
        self.routed_at_s: dict[str, float] = {}  # request -> when it was sent there
        self._arrivals: deque[RequestSpec] = deque()
        self._batch_arrivals: deque[RequestSpec] = deque()
        self._total = 0
        self._next_tick = 0.0
        self._batch_done = 0

    # --- pods ---------------------------------------------------------------------------------------

    def _new_pod(self, now_s: float, ready_s: float) -> ClusterReplica:
        index = len(self.pods)
        seed = self.config.seed * 1000 + index
        policy = create_policy(
            self._sidecar_config, predictor=load_default_predictor(), latency=self._latency, seed=seed
        )
        engine = Engine(
            EngineConfig(
                num_gpu_blocks=self._profile.default_num_gpu_blocks,
                block_size=self._profile.block_size,
                max_model_len=self._profile.max_model_len,
                scheduling_policy=(
                    "priority" if self.config.sidecar_policy.stamps_engine_priority else "fcfs"
                ),
                seed=seed,
            ),
            self._profile.step_time(),
        )
        pod = ClusterReplica(
            f"pod-{index}",
            policy,
            engine,
            block_size=self._profile.block_size,
            in_flight_cap=self.cap,
            created_s=now_s,
            ready_s=ready_s,
            progress_interval_s=self.config.progress_interval_s,
        )
        self.pods.append(pod)
        self._version.append(0)
        return pod

    def _schedule(self, index: int) -> None:
        """Re-arm pod `index` in the event heap after anything touched it."""
        self._version[index] += 1
        pod = self.pods[index]
        if pod.phase in (Phase.STARTING, Phase.REMOVED):
            return
        t = pod.next_time_s()
        if t is not None:
            heapq.heappush(self._heap, (t, index, self._version[index]))

    def _collect(self, index: int) -> None:
        """Take the pod's newly ended requests into the cluster's records and metrics."""
        pod = self.pods[index]
        for record in pod.ended:
            if record.request_id in self.records:
                raise RuntimeError(f"request {record.request_id} ended twice")
            self.records[record.request_id] = record
            spec = self.specs[record.request_id]
            predicted = self._batch_predicted.get(spec.request_id, pod.predicted_tokens.get(spec.request_id))
            self.ended.add(ended_request(record, spec, predicted))
            self._open_arrivals.pop(record.request_id, None)
            if spec.request_id in self._batch_predicted:
                self._batch_done += 1
                self._gateway_predictor_observe(spec, record.output_tokens)
        pod.ended.clear()
        if pod.phase is Phase.DRAINING and pod.open_requests == 0:
            self._remove(index)

    def _gateway_predictor_observe(self, spec: RequestSpec, output_tokens: int) -> None:
        observe = getattr(self._gateway_predictor, "observe", None)
        if observe is not None and output_tokens > 0:
            observe(
                prompt_text=spec.prompt_text,
                prompt_tokens=spec.prompt_tokens,
                slo_class=spec.slo_class,
                max_tokens=spec.max_tokens,
                output_tokens=output_tokens,
            )

    def _remove(self, index: int) -> None:
        pod = self.pods[index]
        self._removed_preemptions += pod.engine.snapshot().num_preemptions_total
        self._removed_tokens += pod.generated_tokens()
        pod.phase = Phase.REMOVED
        pod.removed_s = self.now_s
        self._version[index] += 1

    def serving(self) -> list[int]:
        return [i for i, p in enumerate(self.pods) if p.phase is Phase.READY]

    def count(self, phase: Phase) -> int:
        return sum(p.phase is phase for p in self.pods)

    # --- routing ------------------------------------------------------------------------------------

    def _route(self, spec: RequestSpec, index: int) -> None:
        pod = self.pods[index]
        pod.note_routed(spec.slo_class)
        self.routed_to[spec.request_id] = index
        self.routed_at_s[spec.request_id] = self.now_s
        pod.arrive(spec, self.now_s)

    def _route_interactive(self, spec: RequestSpec) -> None:
        self.specs[spec.request_id] = spec
        self._open_arrivals[spec.request_id] = spec.arrival_s
        ready = self.serving()
        if not ready:
            self._waiting_interactive.append(spec)
            return
        name = spec.slo_class
        index = min(
            ready, key=lambda i: (self.pods[i].open_by_class.get(name, 0), self.pods[i].open_requests, i)
        )
        self._route(spec, index)
        self.pods[index].release(self.now_s)
        self._collect(index)
        self._schedule(index)

    def _spill_batch(self, indices: Sequence[int]) -> None:
        """Move batch requests from the gateway queue into ready pods whose sidecar queue is short."""
        for index in indices:
            pod = self.pods[index]
            if pod.phase is not Phase.READY:
                continue
            moved = False
            cap = pod.in_flight_cap if pod.in_flight_cap is not None else self.cap
            room = math.floor(cap * (1.0 - self.config.interactive_reserve))
            while (
                self._batch_queue
                and pod.queued < self.config.batch_queue_per_pod
                and pod.open_by_class.get(self._batch_queue[0].slo_class, 0) < room
            ):
                spec = self._batch_queue.popleft()
                self._batch_predicted_sum -= self._batch_predicted[spec.request_id]
                self._route(spec, index)
                moved = True
            if moved:
                pod.release(self.now_s)
                self._collect(index)
                self._schedule(index)

    # --- scaling ------------------------------------------------------------------------------------

    def _scale_to(self, desired: int) -> None:
        ready = self.serving()
        starting = [i for i, p in enumerate(self.pods) if p.phase is Phase.STARTING]
        current = len(ready) + len(starting)
        for _ in range(desired - current):
            self._new_pod(self.now_s, self.now_s + self.startup_s)
        surplus = current - desired
        for index in sorted(starting, key=lambda i: (-self.pods[i].ready_s, -i)):
            if surplus <= 0:
                break
            self._remove(index)  # never served: cancelled while loading
            surplus -= 1
        for index in sorted(ready, key=lambda i: (self.pods[i].open_requests, self.pods[i].in_flight, i)):
            if surplus <= 0:
                break
            self.pods[index].phase = Phase.DRAINING
            self.pods[index].drain_started_s = self.now_s
            self._collect(index)  # removes it at once when it holds nothing
            surplus -= 1

    def _apply_caps(self, decision: ScalingDecision) -> None:
        low, high = decision.cap_bounds.min_in_flight, decision.cap_bounds.max_in_flight
        cap = max(low, min(high, self.context.max_in_flight))
        if cap != self.cap:
            self.cap = cap
            for index, pod in enumerate(self.pods):
                if pod.phase in (Phase.READY, Phase.DRAINING):
                    pod.in_flight_cap = cap
                    pod.release(self.now_s)
                    self._collect(index)
                    self._schedule(index)
                else:
                    pod.in_flight_cap = cap

    # --- observation --------------------------------------------------------------------------------

    def snapshot(self) -> PoolSnapshot:
        """The pool as the autoscaler sees it now (see `sloguard.sim.cluster.observe`)."""
        now = self.now_s
        scraped = [p for p in self.pods if p.phase in (Phase.READY, Phase.DRAINING)]
        pods = []
        for pod in scraped:
            policy_snap = pod.policy.snapshot()
            engine_snap = pod.engine.snapshot()
            pods.append(
                PodState(
                    queued_by_class=dict(policy_snap.queued_by_class),
                    in_flight_by_class=dict(policy_snap.in_flight_by_class),
                    in_flight_cap=pod.in_flight_cap if pod.in_flight_cap is not None else self.cap,
                    kv_usage=engine_snap.kv_cache_usage,
                    engine_waiting=engine_snap.waiting,
                    engine_running=engine_snap.running,
                )
            )
        sidecar_predicted: dict[str, float] = {}
        mean_batch = (
            self._batch_predicted_sum / len(self._batch_queue)
            if self._batch_queue
            else (
                sum(self._batch_predicted.values()) / len(self._batch_predicted)
                if self._batch_predicted
                else 0.0
            )
        )
        gateway = []
        oldest: dict[str, float] = {}
        for cls in self.config.classes:
            queued_in_pods = sum(p.queued_by_class.get(cls.name, 0) for p in pods)
            if cls.deadline_s is not None:
                sidecar_predicted[cls.name] = queued_in_pods * mean_batch
        batch_names = {s.slo_class for s in self._batch_queue}
        for name in sorted(batch_names):
            mine = [s for s in self._batch_queue if s.slo_class == name]
            gateway.append(
                GatewayQueue(
                    name,
                    len(mine),
                    sum(self._batch_predicted[s.request_id] for s in mine),
                    now - min(s.arrival_s for s in mine),
                )
            )
        for request_id, arrival in self._open_arrivals.items():
            name = self.specs[request_id].slo_class
            oldest[name] = max(oldest.get(name, 0.0), now - arrival)
        preempt = self._removed_preemptions + sum(
            p.engine.snapshot().num_preemptions_total for p in self.pods if p.phase is not Phase.REMOVED
        )
        tokens = self._removed_tokens + sum(
            p.generated_tokens() for p in self.pods if p.phase is not Phase.REMOVED
        )
        self._preemptions.add(now, float(preempt))
        self._generated.add(now, float(tokens))
        self.ended.prune(now)
        return build_snapshot(
            pool=self.config.pool,
            now_s=now,
            classes=self.config.classes,
            replicas=ReplicaCounts(
                current=self.count(Phase.READY) + self.count(Phase.STARTING),
                ready=self.count(Phase.READY),
                starting=self.count(Phase.STARTING),
            ),
            pods=pods,
            ended=self.ended,
            gateway=gateway,
            sidecar_queue_predicted_tokens=sidecar_predicted,
            oldest_open_age_s=oldest,
            preemptions=self._preemptions,
            generated_tokens=self._generated,
        )

    def _tick(self) -> None:
        snap = self.snapshot()
        decision = None
        if self.autoscaler is not None:
            decision = self.autoscaler.step(snap, self.now_s)
            self.decisions.append(decision)
            self._scale_to(decision.desired_replicas)
            self._apply_caps(decision)
        if self.keep_snapshots:
            self.snapshots.append(snap)
        interactive = [c for c in snap.classes if self.context.kind_of(self._class(c.name)) == "interactive"]
        attained = [c.attainment for c in interactive if c.attainment is not None]
        self.timeline.append(
            TimelinePoint(
                time_s=self.now_s,
                ready=self.count(Phase.READY),
                starting=self.count(Phase.STARTING),
                draining=self.count(Phase.DRAINING),
                desired=decision.desired_replicas if decision else self.count(Phase.READY),
                interactive_attainment=min(attained) if attained else None,
                batch_done=self._batch_done,
            )
        )
        if self.on_tick is not None:
            self.on_tick(self, snap, decision)

    def _class(self, name: str) -> SLOClassConfig:
        return next(c for c in self.config.classes if c.name == name)

    # --- the loop -----------------------------------------------------------------------------------

    def run(self) -> ClusterResult:
        """Simulate until every request has ended and the horizon has passed."""
        config = self.config
        for _ in range(config.initial_replicas):
            self._new_pod(0.0, 0.0)
        for index in range(len(self.pods)):
            self._schedule(index)
        self._batch_arrivals = deque(
            sorted(
                config.batch,
                key=lambda s: (s.arrival_s + (s.deadline_s or math.inf), s.arrival_s, s.request_id),
            )
        )
        self._arrivals = deque(sorted(config.interactive, key=lambda s: (s.arrival_s, s.request_id)))
        self._total = len(config.interactive) + len(config.batch)
        self._next_tick = self.interval_s
        while (t := self._next_time()) is not None:
            if t > config.horizon_s + MAX_OVERRUN_S:
                raise RuntimeError(
                    f"{self._total - len(self.records)} requests still open long after the horizon"
                )
            self._step(max(self.now_s, t))
        return self._finish()

    def _next_time(self) -> float | None:
        open_work = len(self.records) < self._total
        candidates = [p.ready_s for p in self.pods if p.phase is Phase.STARTING]
        if self._heap:
            candidates.append(self._heap[0][0])
        if self._arrivals:
            candidates.append(self._arrivals[0].arrival_s)
        if self._batch_arrivals:
            candidates.append(self._batch_arrivals[0].arrival_s)
        if open_work or self._next_tick <= self.config.horizon_s:
            candidates.append(self._next_tick)
        if not candidates or (not open_work and min(candidates) > self.config.horizon_s):
            return None
        return min(candidates)

    def _step(self, t: float) -> None:
        self.now_s = t
        touched: set[int] = set()
        while self._heap and self._heap[0][0] <= t:
            _, index, version = heapq.heappop(self._heap)
            if version != self._version[index]:
                continue
            self.pods[index].advance_to(t)
            self._collect(index)
            self._schedule(index)
            touched.add(index)
        for index, pod in enumerate(self.pods):
            if pod.phase is Phase.STARTING and pod.ready_s <= t:
                pod.phase = Phase.READY
                touched.add(index)
                self._schedule(index)
        while self._waiting_interactive and self.serving():
            self._route_interactive(self._waiting_interactive.popleft())
        while self._batch_arrivals and self._batch_arrivals[0].arrival_s <= t:
            self._enqueue_batch(self._batch_arrivals.popleft())
            touched.update(self.serving())
        if self._batch_queue and touched:
            self._spill_batch(sorted(touched))
        while self._arrivals and self._arrivals[0].arrival_s <= t:
            self._route_interactive(self._arrivals.popleft())
        if t >= self._next_tick:
            self._tick()
            if self._batch_queue:
                self._spill_batch(self.serving())
            self._next_tick += self.interval_s

    def _enqueue_batch(self, spec: RequestSpec) -> None:
        self.specs[spec.request_id] = spec
        self._open_arrivals[spec.request_id] = spec.arrival_s
        predicted = self._gateway_predictor.predict(
            prompt_text=spec.prompt_text,
            prompt_tokens=spec.prompt_tokens,
            slo_class=spec.slo_class,
            max_tokens=spec.max_tokens,
        ).mean_tokens
        self._batch_predicted[spec.request_id] = predicted
        self._batch_predicted_sum += predicted
        self._batch_queue.append(spec)

    def _finish(self) -> ClusterResult:
        end = max(self.config.horizon_s, self.now_s)
        self.now_s = end
        for index, pod in enumerate(self.pods):
            if pod.phase is not Phase.REMOVED:
                self._remove(index)
        every = (*self.config.interactive, *self.config.batch)
        missing = [s.request_id for s in every if s.request_id not in self.records]
        if missing:
            raise RuntimeError(f"{len(missing)} requests never ended, e.g. {missing[:3]}")
        return ClusterResult(
            records=self.records,
            specs=self.specs,
            gpu_seconds=sum(p.gpu_seconds(end) for p in self.pods),
            end_s=end,
            decisions=self.decisions,
            timeline=self.timeline,
            replicas_created=len(self.pods),
            snapshots=self.snapshots,
        )
