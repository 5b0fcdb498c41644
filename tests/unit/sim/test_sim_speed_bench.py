"""The sim-speed benchmark runs its workload to the end and reports the agreed JSON keys."""

from sloguard.bench import SCENARIOS
from sloguard.bench.sim_speed import run


def test_quick_sim_speed_reports_tokens_per_second() -> None:
    assert SCENARIOS["sim-speed"] == "sloguard.bench.sim_speed"
    result = run(quick=True)
    assert set(result.data) == {"sim_tokens_per_s", "requests", "wall_s"}
    assert result.data["requests"] == 2000
    assert result.data["sim_tokens_per_s"] > 0 and result.data["wall_s"] > 0
    assert "sim tokens / wall s" in result.markdown
