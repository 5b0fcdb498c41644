"""decision-cost: microseconds per arrival and per release decision of every policy, 1,000 requests queued.

`sloguard bench decision-cost [--quick] --json FILE` writes
{"queued": 1000, "policies": {"<name>": {"arrival_us", "release_us"}}}. Each policy is filled with
1,000 queued requests (a mix of SLO classes, prompt and output lengths, all admitted), then:
- arrival: time one `submit` of a fresh request of a random class (then cancel it, untimed), so the
  queue stays at 1,000;
- release: time one `release` that starts exactly one request (the cap is opened by one), then finish
  it and submit a replacement (untimed). For sa every such release recomputes its annealed sequence
  (the queue changed), so its figure is the cost per sequence: at full strength (the whole queue of 1,000,
  its default iteration budget) that is seconds, so sa's releases are timed `SA_RELEASES` times only.
Figures are medians over the repetitions (the machine is shared; medians resist neighbours' bursts),
with p90 in the Markdown table. Goal: <= 50 us per decision, sa <= 2,000 us per sequence.
"""

import random
import statistics
import time

from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.bench import BenchResult
from sloguard.predictor import ClassMeanLengths
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.policy import Admitted, EngineView
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import Outcome, RequestSpec

QUEUED = 1000
GOAL_US = 50.0
SA_GOAL_US = 2000.0
SA_RELEASES = (3, 10)  # (quick, full) timed releases of sa: each is one full-strength plan of 1,000 requests
CLASSES = [
    {"name": "interactive", "ttft_s": 2.0, "tpot_s": 0.05, "priority": 10},
    {"name": "standard", "ttft_s": 30.0, "tpot_s": 0.1},
    {"name": "batch", "ttft_s": 3600.0, "tpot_s": 0.2, "deadline_s": 7200.0, "on_unattainable": "BestEffort"},
]


def _spec(rng: random.Random, request_id: str, now_s: float, class_index: int) -> RequestSpec:
    cls = CLASSES[class_index]
    out = int(rng.expovariate(1 / 200)) + 1
    return RequestSpec(
        request_id=request_id,
        slo_class=str(cls["name"]),
        ttft_s=float(cls["ttft_s"]),  # type: ignore[arg-type]
        tpot_s=float(cls["tpot_s"]),  # type: ignore[arg-type]
        deadline_s=cls.get("deadline_s"),  # type: ignore[arg-type]
        prompt_tokens=rng.randint(16, 2048),
        max_tokens=2048,
        arrival_s=now_s,
        true_output_tokens=min(out, 2048),
    )


def measure(
    name: SchedulingPolicyName, *, repetitions: int, seed: int = 0, releases: int | None = None
) -> tuple[list[float], list[float]]:
    """Per-decision wall times (us) for arrivals and releases with QUEUED requests waiting."""
    config = SidecarConfig.model_validate(
        {
            "classes": CLASSES,
            "policy": {"name": name.value},
            "limits": {"max_queue_depth": QUEUED + 10, "max_in_flight": 4096},
        }
    )
    policy = create_policy(config, predictor=ClassMeanLengths(), latency=LatencyModel(), seed=seed)
    rng = random.Random(seed)
    now = 0.0
    counter = 0
    # fill: mostly long-deadline requests so that every policy admits them
    while policy.snapshot().queue_depth < QUEUED:
        counter += 1
        class_index = 2 if counter % 4 else 1
        policy.submit(_spec(rng, f"q{counter}", now, class_index), now)
    arrival_us: list[float] = []
    for i in range(repetitions):
        request = _spec(rng, f"a{i}", now, rng.randrange(len(CLASSES)))
        start = time.perf_counter_ns()
        decision = policy.submit(request, now)
        arrival_us.append((time.perf_counter_ns() - start) / 1000)
        if isinstance(decision, Admitted):
            policy.cancel(request.request_id, now)
    release_us: list[float] = []
    for i in range(repetitions if releases is None else releases):
        in_flight = policy.snapshot().in_flight
        view = EngineView(in_flight_cap=in_flight + 1)
        start = time.perf_counter_ns()
        step = policy.release(now, view)
        release_us.append((time.perf_counter_ns() - start) / 1000)
        for release in step.releases:
            policy.on_first_token(release.request_id, now)
            policy.on_finish(release.request_id, now, outcome=Outcome.COMPLETED, output_tokens=1)
        while policy.snapshot().queue_depth < QUEUED:
            counter += 1
            policy.submit(_spec(rng, f"r{i}-{counter}", now, 2), now)
    return arrival_us, release_us


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def run(quick: bool) -> BenchResult:
    repetitions = 200 if quick else 2000
    policies: dict[str, dict[str, float]] = {}
    lines = [
        f"Decision cost with {QUEUED} queued requests ({repetitions} repetitions; sa's releases "
        f"{SA_RELEASES[0 if quick else 1]}, each a full-strength plan of the whole queue; median [p90], us).",
        "",
        "| policy | arrival us | release us | goal us | within goal |",
        "|---|---|---|---|---|",
    ]
    for name in SchedulingPolicyName:
        sa_releases = SA_RELEASES[0 if quick else 1] if name is SchedulingPolicyName.SA else None
        arrivals, releases = measure(name, repetitions=repetitions, releases=sa_releases)
        arrival, release = statistics.median(arrivals), statistics.median(releases)
        policies[name.value] = {"arrival_us": round(arrival, 2), "release_us": round(release, 2)}
        goal = SA_GOAL_US if name is SchedulingPolicyName.SA else GOAL_US
        ok = arrival <= goal and release <= goal
        lines.append(
            f"| {name.value} | {arrival:.1f} [{_p90(arrivals):.1f}] | {release:.1f} [{_p90(releases):.1f}] "
            f"| {goal:.0f} | {'yes' if ok else 'NO'} |"
        )
    return BenchResult(data={"queued": QUEUED, "policies": policies}, markdown="\n".join(lines) + "\n")
