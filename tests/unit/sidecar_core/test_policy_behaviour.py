"""What makes each policy itself: order, rejection, demotion, gating and the priorities it stamps."""

import dataclasses
import random
from typing import Any

import pytest

from sloguard.api.errors import RejectionReason
from sloguard.api.policies import SchedulingPolicyName as Name
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.api.sloclass import OnUnattainable
from sloguard.predictor import ClassMeanLengths, FixedLength, LengthPrediction
from sloguard.sidecar.core.base_policy import PRIORITY_DEMOTED_OFFSET, QueuePolicy
from sloguard.sidecar.core.latency import DecodeModel, LatencyModel, PrefillModel
from sloguard.sidecar.core.policy import Admitted, EngineView, Rejected
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import Outcome, RequestSpec

CLASSES: list[dict[str, Any]] = [
    {"name": "chat", "ttft_s": 1.0, "tpot_s": 0.05},
    {"name": "strict", "ttft_s": 1.0, "tpot_s": 0.02},
    {"name": "batch", "ttft_s": 100.0, "tpot_s": 0.2, "on_unattainable": "BestEffort"},
    {"name": "code", "ttft_s": 5.0, "tpot_s": 0.1, "deadline_s": 6.0},
]
# prefill: 10 ms flat up to 100 tokens, then 1 ms per 10 tokens; ITL: 10 ms + 2 ms per running sequence
LATENCY = LatencyModel(
    PrefillModel(n0_tokens=100, flat_s=0.01, per_token_s=0.0001, intercept_s=0.0),
    DecodeModel(a=0.0, b=0.002, c=0.0, d=0.01),
    online=False,
)


def make(name: Name, predictor: Any = None, **parameters: Any) -> QueuePolicy:
    config = SidecarConfig.model_validate(
        {"classes": CLASSES, "policy": {"name": name.value, "parameters": parameters}}
    )
    return create_policy(config, predictor=predictor or FixedLength(100), latency=LATENCY)


def req(
    rid: str, cls: str = "chat", *, arrival: float = 0.0, prompt: int = 100, true_out: int = 10
) -> RequestSpec:
    c = next(x for x in CLASSES if x["name"] == cls)
    return RequestSpec(
        request_id=rid,
        slo_class=cls,
        ttft_s=c["ttft_s"],
        tpot_s=c["tpot_s"],
        deadline_s=c.get("deadline_s"),
        prompt_tokens=prompt,
        max_tokens=1000,
        arrival_s=arrival,
        true_output_tokens=true_out,
        on_unattainable=OnUnattainable(c.get("on_unattainable", "Reject")),
    )


def released(policy: QueuePolicy, now: float, cap: int = 100) -> list[str]:
    return [r.request_id for r in policy.release(now, EngineView(in_flight_cap=cap)).releases]


def test_fcfs_releases_in_arrival_order_without_priorities() -> None:
    policy = make(Name.FCFS)
    for i, cls in enumerate(("batch", "chat", "code")):
        policy.submit(req(f"r{i}", cls, arrival=i * 0.1), i * 0.1)
    step = policy.release(0.3, EngineView(in_flight_cap=2))
    assert [r.request_id for r in step.releases] == ["r0", "r1"]
    assert all(r.engine_priority is None for r in step.releases)


def test_edf_orders_by_ttft_deadline_and_stamps_it_as_priority() -> None:
    policy = make(Name.EDF)
    policy.submit(req("batch", "batch"), 0.0)
    policy.submit(req("code", "code"), 0.0)
    policy.submit(req("chat", "chat", arrival=0.5), 0.5)
    step = policy.release(0.5, EngineView(in_flight_cap=10))
    assert [r.request_id for r in step.releases] == ["chat", "code", "batch"]
    priorities = [r.engine_priority for r in step.releases if r.engine_priority is not None]
    assert len(priorities) == 3
    assert priorities == sorted(priorities) and priorities[0] == 1500  # ms since the first arrival


class ByPrompt(FixedLength):
    """Predicts output = prompt tokens, so SJF order is prompt order."""

    def predict(self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int) -> Any:
        return FixedLength(prompt_tokens).predict(
            prompt_text=prompt_text, prompt_tokens=prompt_tokens, slo_class=slo_class, max_tokens=max_tokens
        )


def test_sjf_releases_the_shortest_predicted_job_first_until_the_oldest_starves() -> None:
    policy = make(Name.SJF, ByPrompt(0), starvation_wait_s=100.0, starvation_factor=10.0)
    policy.submit(req("long", "batch", prompt=500), 0.0)  # predicted exec 0.1 + 0.02 * 500 = 10.1 s
    policy.submit(req("short", "batch", prompt=10, arrival=1.0), 1.0)
    policy.submit(req("mid", "batch", prompt=50, arrival=1.0), 1.0)
    assert released(policy, 2.0, cap=1) == ["short"]
    assert released(policy, 102.0, cap=2) == ["long"]  # waited 102 s > 100 s: it goes first


def test_mooncake_rejects_once_on_arrival_with_the_reason() -> None:
    policy = make(Name.MOONCAKE)
    assert isinstance(policy.submit(req("a", "chat", prompt=5000), 0.0), Admitted)  # 0.5 s < 1 s
    rejected = policy.submit(req("b", "chat", prompt=6000), 0.0)  # 11,000 waiting tokens: 1.1 s
    assert isinstance(rejected, Rejected) and rejected.reason is RejectionReason.TTFT_UNATTAINABLE
    tpot = policy.submit(req("c", "strict", prompt=10), 0.0)  # ITL alone 12 ms < 20 ms: fine
    assert isinstance(tpot, Admitted)
    tight = SidecarConfig.model_validate(
        {"classes": [{"name": "chat", "ttft_s": 1.0, "tpot_s": 0.011}], "policy": {"name": "mooncake"}}
    )
    tight_request = RequestSpec.from_class(
        tight.classes[0], request_id="d", prompt_tokens=100, max_tokens=100, arrival_s=0.0
    )
    impossible = create_policy(tight, predictor=FixedLength(10), latency=LATENCY).submit(tight_request, 0.0)
    assert isinstance(impossible, Rejected) and impossible.reason is RejectionReason.TPOT_UNATTAINABLE


def test_scorpio_judges_an_arrival_at_the_tail_with_the_50ms_margin() -> None:
    policy = make(Name.SCORPIO)
    # 9,000 tokens ahead + 500 own -> 0.95 s + 50 ms = 1.0 s > slack 0.99 s (arrived 10 ms ago)
    policy.submit(req("big", "batch", prompt=9000), 0.0)
    decision = policy.submit(req("late", "chat", prompt=500, arrival=-0.01), 0.0)
    assert isinstance(decision, Rejected) and decision.reason is RejectionReason.TTFT_UNATTAINABLE
    assert isinstance(policy.submit(req("ok", "chat", prompt=300), 0.0), Admitted)  # 0.93 + 0.05 < 1.0


def test_scorpio_rejects_queued_requests_that_ran_out_of_slack_and_demotes_best_effort_ones() -> None:
    policy = make(Name.SCORPIO)
    policy.submit(req("chat", "chat", prompt=2000), 0.0)  # 0.2 s prefill: fine now
    policy.submit(req("batch", "batch", prompt=2000), 0.0)
    step = policy.release(0.9, EngineView(in_flight_cap=0))  # at 0.9 s: slack 0.1 s < 0.2 + 0.05
    assert [(r.request_id, r.reason) for r in step.rejections] == [
        ("chat", RejectionReason.TTFT_UNATTAINABLE)
    ]
    step = policy.release(99.9, EngineView(in_flight_cap=0))
    assert step.rejections == () and policy.snapshot().demoted_queued == 1


def test_scorpio_gates_on_tpot_head_of_line() -> None:
    policy = make(Name.SCORPIO, credit_batching=False)
    for i in range(3):
        policy.submit(req(f"c{i}", "chat"), 0.0)
    # ITL with n running: 10 ms + 2 ms * n; chat TPOT 50 ms, eta 1.3: admit while (10 + 2n) * 1.3 < 49.5
    assert released(policy, 0.0) == ["c0", "c1", "c2"]
    policy.submit(req("s", "strict"), 0.0)  # strict 20 ms: (10 + 8) * 1.3 = 23.4 > 19.8 -> stop
    policy.submit(req("c3", "chat", arrival=0.01), 0.01)
    assert released(policy, 0.01) == []  # head-of-line: c3 waits behind the strict request


def test_sloguard_skips_a_candidate_that_breaks_tpot_and_stamps_priorities() -> None:
    policy = make(Name.SLOGUARD, calibrate_prefill=False, eta=1.1, urgent_headroom=1.0, prefill_stalls=False)
    for i in range(3):
        policy.submit(req(f"c{i}", "chat"), 0.0)
    assert released(policy, 0.0) == ["c0", "c1", "c2"]
    policy.submit(req("s", "strict"), 0.0)  # (10 + 8) * 1.1 = 19.8 < 20: admitted
    policy.submit(req("s2", "strict"), 0.0)  # (10 + 10) * 1.1 = 22 > 20: skipped
    policy.submit(req("b", "batch"), 0.0)  # skipped too: the strict one is running (T_min 20 ms)
    step = policy.release(0.0, EngineView(in_flight_cap=100))
    assert [r.request_id for r in step.releases] == ["s"]
    assert step.releases[0].engine_priority == 1000


@pytest.mark.parametrize(("prompt", "let_in"), [(100, True), (300, False)])
def test_sloguard_lets_an_urgent_short_prompt_past_the_tpot_gate_within_urgent_headroom(
    prompt: int, let_in: bool
) -> None:
    policy = make(Name.SLOGUARD, calibrate_prefill=False, eta=1.1, kv_reservation=False)
    for i in range(3):
        policy.submit(req(f"c{i}", "chat"), 0.0)
    assert released(policy, 0.0) == ["c0", "c1", "c2"]
    policy.submit(req("s", "strict"), 0.0)  # (10 + 8) * 1.1 = 19.8 < 20
    # (10 + 10) * 1.1 = 22 > 20 but < 1.15 * 20; the ITL does not depend on lengths here, only the
    # prompt decides whether it is short (<= 256 tokens) and gets the urgent headroom
    policy.submit(req("s2", "strict", prompt=prompt), 0.0)
    assert released(policy, 0.0) == (["s", "s2"] if let_in else ["s"])


def test_sloguard_demotes_best_effort_and_stamps_it_behind_everyone() -> None:
    policy = make(Name.SLOGUARD, calibrate_prefill=False)
    policy.submit(req("huge", "batch", prompt=20000), 0.0)
    # a best-effort request whose TTFT (1 ms) cannot be met: demoted, not rejected
    decision = policy.submit(dataclasses.replace(req("late", "batch"), ttft_s=0.001), 0.0)
    assert isinstance(decision, Admitted) and decision.demoted
    step = policy.release(0.0, EngineView(in_flight_cap=100))
    by_id = {r.request_id: r.engine_priority for r in step.releases}
    assert by_id["late"] is not None and by_id["late"] >= PRIORITY_DEMOTED_OFFSET
    assert [r.request_id for r in step.releases] == ["huge", "late"]


def test_sloguard_rejects_on_the_deadline_only_when_even_an_optimistic_length_misses_it() -> None:
    policy = make(Name.SLOGUARD, ClassMeanLengths(prior_tokens=2000.0), calibrate_prefill=False)
    # 25th percentile of an exponential with mean 2000 is ~575 tokens * 12 ms = 6.9 s > 6 s deadline
    decision = policy.submit(req("c", "code"), 0.0)
    assert isinstance(decision, Rejected) and decision.reason is RejectionReason.DEADLINE_UNATTAINABLE
    lenient = make(
        Name.SLOGUARD, ClassMeanLengths(prior_tokens=2000.0), calibrate_prefill=False, reject_quantile=0.1
    )
    assert isinstance(lenient.submit(req("c", "code"), 0.0), Admitted)  # 10th pct ~211 tokens: 2.5 s


def test_sa_releases_its_first_group_and_replans_when_the_queue_changes() -> None:
    policy = make(Name.SA, window=8, iterations=50)
    for i in range(6):
        policy.submit(req(f"r{i}", "batch"), 0.0)
    first = released(policy, 0.0, cap=2)
    assert 1 <= len(first) <= 2
    assert policy.plans_computed == 1  # type: ignore[attr-defined]
    policy.submit(req("new", "chat"), 0.0)
    released(policy, 0.0, cap=4)
    assert policy.plans_computed == 2  # type: ignore[attr-defined]


def planned(policy: Any) -> int:
    """Requests in the sa policy's current plan."""
    return sum(len(group) for group in policy._plan)


def test_sa_plans_the_whole_queue_by_default_and_replans_each_next_group_from_the_engines_state() -> None:
    policy = make(Name.SA, iterations=50)
    assert policy.params.window == 0
    for i in range(30):  # more than the old 16-request window
        policy.submit(req(f"r{i}", "batch"), 0.0)
    first = released(policy, 0.0, cap=1)
    assert len(first) == 1 and policy.plans_computed == 1  # type: ignore[attr-defined]
    assert planned(policy) == 29  # all but the released one
    policy.on_first_token(first[0], 0.5)
    policy.on_finish(first[0], 1.0, outcome=Outcome.COMPLETED, output_tokens=10)
    second = released(policy, 1.0, cap=1)
    assert len(second) == 1 and second != first
    assert policy.plans_computed == 2  # type: ignore[attr-defined]  # planned again once a group went out
    windowed = make(Name.SA, iterations=50, window=8)
    for i in range(30):
        windowed.submit(req(f"r{i}", "batch"), 0.0)
    released(windowed, 0.0, cap=1)
    assert planned(windowed) == 7


@pytest.mark.parametrize("name", list(Name), ids=str)
def test_a_cancelled_in_flight_request_ends_once_and_frees_its_slot(name: Name) -> None:
    policy = make(name)
    policy.submit(req("a", "batch"), 0.0)
    policy.submit(req("b", "batch"), 0.0)
    assert released(policy, 0.0, cap=1) == ["a"]
    policy.on_first_token("a", 0.1)
    policy.on_tokens("a", 0.2, 5)
    assert policy.cancel("a", 0.3)
    policy.on_tokens("a", 0.4, 6)  # a late token after the cancel is ignored
    assert released(policy, 0.4, cap=1) == ["b"]
    policy.on_finish("b", 1.0, outcome=Outcome.COMPLETED, output_tokens=3)
    counts = policy.ledger.counts()
    assert counts.total(Outcome.CANCELLED) == 1 and counts.total(Outcome.COMPLETED) == 1 and counts.open == 0


def test_sloguard_inflates_its_tpot_prediction_toward_what_completed_requests_saw() -> None:
    policy = make(Name.SLOGUARD, calibrate_prefill=False, eta=1.0, eta_weight=0.5, prefill_stalls=False)
    policy.submit(req("a", "chat"), 0.0)
    policy.submit(req("b", "chat"), 0.0)
    assert released(policy, 0.0) == ["a", "b"]  # b passed the gate with a predicted ITL of 14 ms
    policy.on_first_token("a", 0.1)
    policy.on_first_token("b", 0.1)
    policy.on_finish("a", 1.1, outcome=Outcome.COMPLETED, output_tokens=51)  # no prediction: ignored
    assert policy.inflation == 1.0  # type: ignore[attr-defined]
    policy.on_finish("b", 1.1, outcome=Outcome.COMPLETED, output_tokens=51)  # 20 ms observed / 14 ms
    assert policy.inflation == pytest.approx(1.0 + 0.5 * (0.02 / 0.014 - 1.0))  # type: ignore[attr-defined]


def _reference_candidates(policy: Any, now: float, room: int) -> tuple[list[str], int]:
    """sloguard's release order computed the slow way: scan the whole queue, rank the relaxed ones."""
    main = policy._main
    whole_s = policy._wait_s(
        policy.pending_prefill_tokens() + main.total_tokens, len(main), main.total_weight
    )
    horizon_s = whole_s + policy.params.margin_s + policy.params.short_first_buffer_s
    urgent = [item[4] for item in main if item[0] - now < horizon_s]
    relaxed = [policy._entries[item[4]] for item in main if item[0] - now >= horizon_s]
    relaxed.sort(key=lambda e: (e.predicted_output_tokens, e.spec.ttft_deadline_s))
    shortest = [e.request_id for e in relaxed[: room + policy.params.max_skips + 1]]
    return urgent + shortest + [item[4] for item in policy._best_effort], len(shortest)


def test_sloguard_ranks_relaxed_requests_by_length_kept_incrementally_like_a_full_rescan() -> None:
    """The length rank is kept across arrivals, releases, demotions and finishes, never rebuilt; its
    order must equal a full scan's at every step (distinct lengths, so the order is unique)."""
    rng = random.Random(3)
    config = SidecarConfig.model_validate({"classes": CLASSES, "policy": {"name": "sloguard"}})
    policy = create_policy(config, predictor=FixedLength(1), latency=LATENCY, oracle=True)
    lengths = rng.sample(range(1, 5000), 400)
    now = 0.0
    compared = demoted_seen = relaxed_seen = 0
    for i, out in enumerate(lengths):
        now += rng.expovariate(40.0)
        cls = rng.choice(["chat", "batch", "batch", "code"])
        policy.submit(req(f"r{i}", cls, arrival=now, prompt=rng.randint(10, 3000), true_out=out), now)
        if i % 3 == 0:
            room = rng.randint(1, 4)
            in_flight = policy.snapshot().in_flight
            expected, relaxed = _reference_candidates(policy, now, room)
            assert [e.request_id for e in policy._candidates(now, room)] == expected
            compared += 1
            demoted_seen += policy.snapshot().demoted_queued > 0
            relaxed_seen += relaxed > 1
            step = policy.release(now, EngineView(in_flight_cap=in_flight + room))
            for r in step.releases:
                policy.on_first_token(r.request_id, now)
        for entry in list(policy.in_flight_entries())[: rng.randint(0, 1)]:
            policy.on_finish(entry.request_id, now, outcome=Outcome.COMPLETED, output_tokens=3)
    assert compared > 100 and demoted_seen > 10 and relaxed_seen > 10


@pytest.mark.parametrize(
    ("kv_free", "reservation", "second_released"), [(300, True, False), (400, True, True), (300, False, True)]
)
def test_sloguard_reserves_kv_for_what_in_flight_requests_will_still_take(
    kv_free: int, reservation: bool, second_released: bool
) -> None:
    """`a` holds 100 prompt tokens not yet prefilled plus 100 predicted output: 200 KV tokens to come.
    `b` needs 200; with the reservation it starts only if the free room covers both."""
    policy = make(Name.SLOGUARD, calibrate_prefill=False, kv_reservation=reservation)
    policy.submit(req("a", "batch"), 0.0)
    assert released(policy, 0.0) == ["a"]
    policy.submit(req("b", "batch"), 0.0)
    step = policy.release(0.0, EngineView(in_flight_cap=100, kv_free_tokens=kv_free))
    assert [r.request_id for r in step.releases] == (["b"] if second_released else [])


def test_sloguard_serves_equal_deadlines_shortest_predicted_first() -> None:
    """A burst of one class shares one TTFT deadline; shortest first meets the most of them."""
    config = SidecarConfig.model_validate({"classes": CLASSES, "policy": {"name": "sloguard"}})
    policy = create_policy(config, predictor=FixedLength(1), latency=LATENCY, oracle=True)
    for rid, out in (("long", 400), ("short", 5), ("mid", 60)):
        policy.submit(req(rid, "chat", true_out=out), 0.0)
    assert released(policy, 0.0, cap=1) == ["short"]
    edf = create_policy(
        SidecarConfig.model_validate({"classes": CLASSES, "policy": {"name": "edf"}}),
        predictor=FixedLength(1),
        latency=LATENCY,
        oracle=True,
    )
    for rid, out in (("long", 400), ("short", 5), ("mid", 60)):
        edf.submit(req(rid, "chat", true_out=out), 0.0)
    assert released(edf, 0.0, cap=1) == ["long"]  # the shared LDF queue keeps arrival order for others


class _RankedLengths:
    """Mean 100 for everyone; the offline rank key is the prompt length (as if corrections differed)."""

    def predict(
        self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
    ) -> LengthPrediction:
        return LengthPrediction(mean_tokens=100.0, rank_tokens=float(prompt_tokens))

    def observe(self, **kwargs: Any) -> None:
        return None


def test_sloguard_orders_by_the_predictions_rank_key_not_its_corrected_mean() -> None:
    policy = make(Name.SLOGUARD, _RankedLengths(), calibrate_prefill=False)
    for rid, prompt in (("p300", 300), ("p10", 10), ("p90", 90)):
        policy.submit(req(rid, "chat", prompt=prompt), 0.0)
    assert released(policy, 0.0, cap=1) == ["p10"]
