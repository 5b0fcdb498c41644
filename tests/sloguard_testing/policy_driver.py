"""A small pure driver for policies: a toy continuous-batching engine in virtual time.

Used by the conformance suite (tests/conformance/) and the decision-cost benchmark. It drives a policy
exactly as the contract in sloguard.sidecar.core.policy says (submit, release after every event and at
the wake-up time, first token, tokens, finish, cancel, shed) and checks the contract's invariants on
the way: in-flight cap, KV room per release step, priorities only from stamping policies, every request
ending exactly once. The engine prefills released requests one step each (in engine-priority order when
stamped), then decodes one token for every running request per step, with step times from a
`LatencyModel` (the "true" engine, independent of the policy's own model).
"""

import heapq
from dataclasses import dataclass, field

from sloguard.api.errors import RejectionReason
from sloguard.api.policies import SchedulingPolicyName
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.policy import Admitted, EngineView, Policy, Rejected
from sloguard.sidecar.core.requests import Outcome, RequestSpec


@dataclass(frozen=True)
class Workload:
    """Requests (with true output lengths) and, per request id, an optional client cancel time."""

    requests: list[RequestSpec]
    cancel_at_s: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    ends: dict[str, str] = field(default_factory=dict)  # request id -> how it ended
    decisions: list[tuple[str, str, int | None]] = field(default_factory=list)  # (event, id, priority)
    max_in_flight: int = 0
    slo_met: int = 0


class ContractViolationError(AssertionError):
    pass


@dataclass
class _Running:
    spec: RequestSpec
    priority: int | None
    order: int
    generated: int = 0
    started: bool = False


class ToyEngine:
    """In-flight requests: waiting for prefill (by priority, then release order) and decoding."""

    def __init__(self, kv_capacity_tokens: int | None, truth: LatencyModel) -> None:
        self.kv_capacity_tokens = kv_capacity_tokens
        self.truth = truth
        self.waiting: list[tuple[int, int, str]] = []
        self.running: dict[str, _Running] = {}
        self._order = 0

    def kv_used(self) -> int:
        return sum(r.spec.prompt_tokens + r.generated for r in self.running.values())

    def kv_free(self) -> int | None:
        if self.kv_capacity_tokens is None:
            return None
        return max(0, self.kv_capacity_tokens - self.kv_used())

    def add(self, spec: RequestSpec, priority: int | None) -> None:
        self._order += 1
        self.running[spec.request_id] = _Running(spec, priority, self._order)
        heapq.heappush(self.waiting, (priority or 0, self._order, spec.request_id))

    def drop(self, request_id: str) -> None:
        self.running.pop(request_id, None)

    def busy(self) -> bool:
        return bool(self.running)

    def step(self) -> tuple[float, list[str], list[str]]:
        """(duration, ids that got their first token, ids that decoded a token)."""
        while self.waiting:
            _, _, request_id = heapq.heappop(self.waiting)
            r = self.running.get(request_id)
            if r is None or r.started:
                continue
            r.started = True
            r.generated = 1
            return self.truth.prefill_s(r.spec.prompt_tokens), [request_id], []
        decoding = [r for r in self.running.values() if r.started]
        if not decoding:
            return 0.0, [], []
        mean_len = sum(r.spec.prompt_tokens + r.generated for r in decoding) / len(decoding)
        for r in decoding:
            r.generated += 1
        return self.truth.itl_s(len(decoding), mean_len), [], [r.spec.request_id for r in decoding]

    def done(self, request_id: str) -> bool:
        r = self.running[request_id]
        target = r.spec.true_output_tokens if r.spec.true_output_tokens is not None else r.spec.max_tokens
        return r.generated >= max(1, min(target, r.spec.max_tokens))


def run(  # noqa: PLR0912 (one event loop; each branch is one event kind)
    policy: Policy,
    workload: Workload,
    *,
    in_flight_cap: int,
    kv_capacity_tokens: int | None,
    truth: LatencyModel | None = None,
    horizon_s: float = 3600.0,
    max_steps: int = 200_000,
) -> RunResult:
    """Drive `policy` through `workload`; raise ContractViolationError on any broken invariant."""
    engine = ToyEngine(kv_capacity_tokens, truth or LatencyModel())
    result = RunResult()
    stamps = SchedulingPolicyName(policy.name).stamps_engine_priority
    admitted: set[str] = set()
    specs = {s.request_id: s for s in workload.requests}
    arrivals = sorted(workload.requests, key=lambda s: (s.arrival_s, s.request_id))
    cancels = sorted((t, rid) for rid, t in workload.cancel_at_s.items())
    in_flight: set[str] = set()
    now = 0.0
    next_arrival = 0
    next_cancel = 0
    engine_free_at = 0.0
    steps = 0

    def end(request_id: str, how: str) -> None:
        if request_id in result.ends:
            raise ContractViolationError(f"{request_id} ended twice: {result.ends[request_id]} then {how}")
        result.ends[request_id] = how
        in_flight.discard(request_id)

    def do_release() -> None:
        kv_free = engine.kv_free()
        step = policy.release(now, EngineView(in_flight_cap=in_flight_cap, kv_free_tokens=kv_free))
        for rejected in step.rejections:
            if rejected.request_id not in admitted:
                raise ContractViolationError(f"rejected {rejected.request_id} that was never admitted")
            result.decisions.append(("expire", rejected.request_id, None))
            end(rejected.request_id, f"rejected:{rejected.reason}")
        need = 0
        for release in step.releases:
            rid = release.request_id
            if rid not in admitted or rid in in_flight or rid in result.ends:
                raise ContractViolationError(f"released {rid} which is not queued")
            if release.engine_priority is not None and not stamps:
                raise ContractViolationError(f"{policy.name} stamped a priority but does not declare it")
            need += specs[rid].prompt_tokens + 1
            in_flight.add(rid)
            engine.add(specs[rid], release.engine_priority)
            result.decisions.append(("release", rid, release.engine_priority))
        if kv_free is not None and need > kv_free:
            raise ContractViolationError(f"released {need} prompt tokens into {kv_free} free KV tokens")
        if len(in_flight) > in_flight_cap:
            raise ContractViolationError(f"{len(in_flight)} in flight > cap {in_flight_cap}")
        result.max_in_flight = max(result.max_in_flight, len(in_flight))

    while True:
        steps += 1
        if steps > max_steps:
            raise ContractViolationError("the run did not finish within max_steps")
        # next event: arrival, cancel, engine step completion, policy wake-up
        candidates = []
        if next_arrival < len(arrivals):
            candidates.append(arrivals[next_arrival].arrival_s)
        if next_cancel < len(cancels):
            candidates.append(cancels[next_cancel][0])
        if engine.busy():
            candidates.append(engine_free_at)
        wake = policy.next_wakeup_s(now)
        if wake is not None:
            candidates.append(max(wake, now + 1e-6))
        if not candidates:
            break
        now = max(now, min(candidates))
        if now > horizon_s:
            break
        if next_arrival < len(arrivals) and arrivals[next_arrival].arrival_s <= now:
            spec = arrivals[next_arrival]
            next_arrival += 1
            decision = policy.submit(spec, now)
            if isinstance(decision, Admitted):
                admitted.add(spec.request_id)
                result.decisions.append(("admit", spec.request_id, None))
            else:
                assert isinstance(decision, Rejected)
                result.decisions.append(("reject", spec.request_id, None))
                end(spec.request_id, f"rejected:{decision.reason}")
        elif next_cancel < len(cancels) and cancels[next_cancel][0] <= now:
            _, rid = cancels[next_cancel]
            next_cancel += 1
            if rid in result.ends or rid not in admitted:
                continue
            if not policy.cancel(rid, now):
                raise ContractViolationError(f"cancel of open request {rid} returned False")
            engine.drop(rid)
            result.decisions.append(("cancel", rid, None))
            end(rid, "cancelled")
        elif engine.busy() and engine_free_at <= now:
            duration, firsts, decoded = engine.step()
            now += duration
            engine_free_at = now
            for rid in firsts:
                policy.on_first_token(rid, now)
            for rid in decoded:
                policy.on_tokens(rid, now, engine.running[rid].generated)
            for rid in firsts + decoded:
                if engine.done(rid):
                    tokens = engine.running[rid].generated
                    engine.drop(rid)
                    policy.on_finish(rid, now, outcome=Outcome.COMPLETED, output_tokens=tokens)
                    end(rid, "completed")
            if not engine.busy():
                engine_free_at = now
        do_release()
        if not engine.busy() and engine_free_at < now:
            engine_free_at = now
    # drain: whatever still waits is shed, in-flight requests fail
    for rejected in policy.shed(now, RejectionReason.DRAINING):
        end(rejected.request_id, f"rejected:{rejected.reason}")
    for rid in sorted(in_flight):
        policy.on_finish(rid, now, outcome=Outcome.FAILED, output_tokens=0)
        end(rid, "failed")
    missing = sorted(set(specs) - set(result.ends))
    if missing:
        raise ContractViolationError(f"requests never ended: {missing[:5]}")
    counts = policy.ledger.counts()
    if counts.open != 0:
        raise ContractViolationError(f"ledger still has {counts.open} open requests")
    for outcome in Outcome:
        tallied = sum(1 for how in result.ends.values() if how.split(":")[0] == outcome.value)
        if counts.total(outcome) != tallied:
            raise ContractViolationError(f"ledger: {counts.total(outcome)} {outcome}, driver: {tallied}")
    result.slo_met = sum(counts.slo_met.values())
    return result
