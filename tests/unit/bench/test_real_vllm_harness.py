"""bench/real_vllm.py's pure helpers: the sidecar arms' configurations, the host's listen-overflow count."""

import os
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sloguard.api.errors import RejectionReason
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.bench import real_vllm
from sloguard.bench.real_vllm import listen_overflows, sidecar_config
from sloguard.bench.real_vllm_workload import BenchRequest, Outcome, class_targets, score_run
from sloguard.sidecar.errors import RequestRejected, gave_up_queued_detail
from sloguard.sidecar.http_front import _rejection

TARGETS = class_targets(0.006, 0.0016)


@pytest.mark.parametrize("arm", ["sloguard", "fcfs_sidecar"])
def test_each_sidecar_arm_has_a_valid_configuration(arm: str) -> None:
    config = SidecarConfig.model_validate(sidecar_config(arm, TARGETS, "http://127.0.0.1:1", (0.006, 0.0016)))
    assert [c.name for c in config.classes] == ["interactive", "standard", "batch"]


def test_only_sloguard_is_seeded_with_the_calibration_as_its_latency_profile() -> None:
    seeded = SidecarConfig.model_validate(sidecar_config("sloguard", TARGETS, "http://x", (0.006, 0.0016)))
    assert seeded.latency_profile is not None
    assert (seeded.latency_profile.ttft_s, seeded.latency_profile.itl_s) == (0.006, 0.0016)
    assert "latency_profile" not in sidecar_config("fcfs_sidecar", TARGETS, "http://x", (0.006, 0.0016))
    assert "latency_profile" not in sidecar_config("sloguard", TARGETS, "http://x")


def test_listen_overflows_reads_the_tcpext_counter(tmp_path: Path) -> None:
    netstat = tmp_path / "netstat"
    netstat.write_text(
        "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n"
        "TcpExt: 0 38553 38553\n"
        "IpExt: InNoRoutes\n"
        "IpExt: 0\n"
    )
    assert listen_overflows(netstat) == 38553
    assert listen_overflows(tmp_path / "missing") == 0


class _FakePriority:
    """os.getpriority/os.setpriority of one thread; lowering the niceness needs `privileged`."""

    def __init__(self, nice: int, *, privileged: bool) -> None:
        self.nice = nice
        self.privileged = privileged

    def get(self, which: int, who: int) -> int:
        return self.nice

    def set(self, which: int, who: int, value: int) -> None:
        if value < self.nice and not self.privileged:
            raise PermissionError("lowering the niceness needs CAP_SYS_NICE")
        self.nice = value


@pytest.mark.parametrize(
    ("start", "privileged", "inside"),
    [(0, True, -10), (0, False, 0), (5, False, 5), (-15, True, -10)],
)
def test_the_benchmark_runs_at_the_niceness_the_host_allows_and_restores_it(
    monkeypatch: pytest.MonkeyPatch, start: int, privileged: bool, inside: int
) -> None:
    fake = _FakePriority(start, privileged=privileged)
    monkeypatch.setattr(os, "getpriority", fake.get)
    monkeypatch.setattr(os, "setpriority", fake.set)
    with real_vllm.niceness(-10) as nice:
        assert nice == fake.nice == inside
    assert fake.nice == start


def _run(
    arm: str, outcomes: list[Outcome], *, lag_s: float, sent_rps: float, cache_hits: float | None = None
) -> real_vllm.RunResult:
    cpu = {"vllm_api_server": 1.0, "vllm_engine_core": 2.0, "load_generator": 0.5, "sidecar": 0.25}
    return real_vllm.RunResult(
        arm,
        10.0,
        outcomes,
        2.0,
        0,
        0.0,
        cpu,
        {},
        3.0,
        None,
        0,
        send_lag_p99_s=lag_s,
        sent_rate_rps=sent_rps,
        prefix_cache_hit_rate=cache_hits,
    )


def test_the_summary_and_report_carry_the_per_class_reasons_and_the_load_generators_lag() -> None:
    good = Outcome("interactive", 0.0, "completed", 0.01, 0.05, 5)
    late = Outcome("interactive", 0.0, "completed", 5.0, 5.1, 5)
    runs = {
        1.0: {
            arm: [
                _run(
                    arm,
                    [good, late],
                    lag_s=0.25 * (i + 1),
                    sent_rps=9.5 - i,
                    cache_hits=0.125 * i if i else None,  # the engine said nothing in the direct run
                )
            ]
            for i, arm in enumerate(real_vllm.ARMS)
        }
    }
    targets = class_targets(0.006, 0.002)
    measured = {
        "targets": targets,
        "runs": runs,
        "knee": 10.0,
        "run_s": 15.0,
        "sweep_run_s": 8.0,
        "calibration": {"single_ttft_s": 0.006, "single_itl_s": 0.002},
        "sweep": [(8.0, 7.5), (16.0, 9.25)],  # each rate's median over its windows
        "sweep_windows": [(8.0, [7.0, 7.5, 8.0]), (16.0, [12.0, 9.25, 3.5])],
    }
    data = real_vllm.summarize(measured, real_vllm.Settings.of(quick=True))
    assert data["sweep"] == [
        {"rate_rps": 8.0, "direct_goodput_rps": 7.5, "window_goodputs_rps": [7.0, 7.5, 8.0]},
        {"rate_rps": 16.0, "direct_goodput_rps": 9.25, "window_goodputs_rps": [12.0, 9.25, 3.5]},
    ]
    sloguard = data["points"][0]["arms"]["sloguard"]
    assert sloguard["per_class"]["interactive"]["good"] == 1
    assert sloguard["per_class"]["interactive"]["late_ttft"] == 1
    assert (sloguard["send_lag_p99_ms_max"], sloguard["sent_rate_rps_min"]) == (500.0, 8.5)
    # vLLM's prefix-cache hit rate, the largest of an arm's runs; none where the engine did not say
    hits = [data["points"][0]["arms"][arm]["prefix_cache_hit_rate_max"] for arm in real_vllm.ARMS]
    assert hits == [None, 0.125, 0.25]
    assert data["rise_end_rps"] == 16.0  # the sweep's own, beside the knee the diagnostic gave (10)
    text = real_vllm.report(data)
    assert "1.0x 10 req/s, 250 ms / 8 req/s, 500 ms / 8 req/s, 750 ms" in text


@pytest.mark.parametrize(
    ("rise_end_rps", "said"),
    [
        (64.0, "; goodput stopped rising at 64.0 req/s and stayed within 5 % of it up to the knee"),
        (128.0, ""),
        (None, ""),
    ],
)
def test_the_report_says_where_goodput_stopped_rising_below_the_knee(
    rise_end_rps: float | None, said: str
) -> None:
    assert real_vllm._plateau_note({"knee_rps": 128.0, "rise_end_rps": rise_end_rps}) == said


def test_the_report_gives_ratios_to_direct_for_goodput_from_the_schedule() -> None:
    arms = {
        arm: {"goodput_from_schedule_rps": value, "sent_rate_rps_min": 1.0, "send_lag_p99_ms_max": 1.0}
        for arm, value in zip(real_vllm.ARMS, (10.0, 30.0, 5.0), strict=True)
    }
    line = real_vllm._schedule_line([{"load": 2.0, "arms": arms}])
    assert "2.0x 10.00 / 30.00 / 5.00 (3.00x, 0.50x)" in line


def test_ratios_to_direct_pair_each_round_with_direct_in_the_same_window() -> None:
    # measured (AMD EPYC host, 0.5x the knee): the rounds' windows moved direct from 28 to 40 req/s; the
    # ratio of the arms' separate medians said 0.89x where every round but one was 1.01x
    ratios = real_vllm.paired_ratios([28.33, 33.67, 40.40], [28.0, 37.87, 40.13])
    assert ratios["ratio_vs_direct"] == 1.007
    assert (ratios["ratio_vs_direct_min"], ratios["ratio_vs_direct_max"]) == (0.889, 1.012)
    assert ratios["per_round_ratio_vs_direct"] == [1.012, 0.889, 1.007]


@pytest.mark.parametrize(
    ("arm", "direct", "expected"),
    [([0.0, 4.0], [0.0, 2.0], [1.0, 2.0]), ([3.0, 4.0], [0.0, 2.0], [2.0]), ([3.0], [0.0], [])],
)
def test_a_round_direct_met_nothing_in_is_equal_or_left_out(
    arm: list[float], direct: list[float], expected: list[float]
) -> None:
    ratios = real_vllm.paired_ratios(arm, direct)
    assert ratios["per_round_ratio_vs_direct"] == expected
    assert (ratios["ratio_vs_direct"] is None) == (not expected)  # never NaN in the JSON


def test_the_summary_pairs_the_arms_round_by_round_and_names_the_host() -> None:
    good = Outcome("interactive", 0.0, "completed", 0.01, 0.05, 5)
    late = Outcome("interactive", 0.0, "completed", 5.0, 5.1, 5)
    per_round = {"direct": ([good, late], [good, good]), "sloguard": ([good, good], [good, late])}
    per_round["fcfs_sidecar"] = per_round["direct"]
    runs = {
        1.0: {
            arm: [_run(arm, list(r), lag_s=0.0, sent_rps=1.0) for r in rounds]
            for arm, rounds in per_round.items()
        }
    }
    measured = {
        "targets": class_targets(0.006, 0.002),
        "runs": runs,
        "knee": 10.0,
        "run_s": 15.0,
        "sweep_run_s": 8.0,
        "calibration": {"single_ttft_s": 0.006, "single_itl_s": 0.002},
        "sweep": [],
        "sweep_windows": [],
    }
    data = real_vllm.summarize(measured, real_vllm.Settings.of(quick=True))
    arms = data["points"][0]["arms"]
    assert arms["sloguard"]["per_round_ratio_vs_direct"] == [2.0, 0.5]
    assert arms["fcfs_sidecar"]["ratio_vs_direct"] == 1.0
    assert "ratio_vs_direct" not in arms["direct"]
    assert data["host"]["cpu"] and data["host"]["cores"] >= 1
    assert "| 1.25x (2.00, 0.50) | 1.00x (1.00, 1.00) |" in real_vllm.report(data)
    assert "1.0x interactive 0 / 0 (0)" in real_vllm.report(data)  # at arrival / queued (gate-held)


@pytest.mark.parametrize(
    ("message", "queued", "gate_held"),
    [
        (gave_up_queued_detail(0), True, False),
        (gave_up_queued_detail(7), True, True),
        ("slack 0.051s < predicted wait 0.538s + margin", False, False),
    ],
)
async def test_a_rejection_after_queueing_is_told_from_one_at_arrival(
    message: str, queued: bool, gate_held: bool
) -> None:
    """Over a real socket, with the sidecar's own 429 response: a request the policy gave up on after
    queueing it counts apart from one refused at arrival (a burst of queued give-ups after an overload was
    what a fresh-clone run could not explain), and one the TPOT gate had held back apart from one that
    waited for the queue ahead (what a temporary log had to find out at half the knee)."""
    rejection = RequestRejected(RejectionReason.TTFT_UNATTAINABLE, message)

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return _rejection(rejection)

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        outcome = Outcome("interactive", 0.0)
        request = BenchRequest(0, 0.0, "interactive", (1, 2, 3), 4)
        async with aiohttp.ClientSession() as session:
            await real_vllm._send(session, f"http://127.0.0.1:{port}/v1/completions", request, outcome, 0.0)
    finally:
        await runner.cleanup()
    assert (outcome.outcome, outcome.reason, outcome.rejected_queued, outcome.rejected_gate_held) == (
        "rejected",
        "ttft_unattainable",
        queued,
        gate_held,
    )
    score = score_run([outcome], TARGETS, duration_s=1.0)
    assert (
        score.per_class["interactive"]["rejected"],
        score.per_class["interactive"]["rejected_queued"],
        score.per_class["interactive"]["rejected_gate_held"],
    ) == (1, int(queued), int(gate_held))


def test_runs_stretch_to_the_calibrated_targets() -> None:
    """A slow engine's loose class makes quick runs longer than their 15 s floor, the full run longer still;
    a fast engine's keeps the floors."""
    slow = class_targets(0.00883, 0.00157)  # batch TTFT 5.74 s
    quick = real_vllm.Settings.of(quick=True).for_targets(slow)
    full = real_vllm.Settings.of(quick=False).for_targets(slow)
    assert quick.run_s == pytest.approx(5 * 650 * 0.00883)
    assert full.run_s == pytest.approx(10 * 650 * 0.00883)
    assert quick.sweep_run_s == pytest.approx(2 * 650 * 0.00883)
    fast = real_vllm.Settings.of(quick=True).for_targets(class_targets(0.0036, 0.0012))
    assert (fast.run_s, fast.sweep_run_s) == (15.0, 8.0)


def test_a_variant_arm_is_sloguard_with_the_given_parameters_beside_the_default() -> None:
    targets = class_targets(0.0072, 0.00122)
    config = real_vllm.sidecar_config(
        real_vllm.VARIANT_ARM, targets, "http://127.0.0.1:1", (0.0072, 0.00122), {"waive_expected": False}
    )
    assert config["policy"] == {
        "name": "sloguard",
        "parameters": {"calibrate_decode": True, "waive_expected": False},
    }
    SidecarConfig.model_validate(config)
    settings = real_vllm.Settings.of(quick=True)
    assert settings.sidecar_arms == ("sloguard", "fcfs_sidecar")
    with_variant = replace(settings, sloguard_variant={"waive_expected": False})
    assert with_variant.sidecar_arms == ("sloguard", "fcfs_sidecar", real_vllm.VARIANT_ARM)
    with pytest.raises(SystemExit):
        real_vllm.main(["--sloguard-variant", "[1]", "--json", "/dev/null"])
