"""`sloguard bench autoscale` on a tiny scenario: every policy, the JSON contract, the table and the plot."""

import pytest

from sloguard.bench.autoscale import POLICY_ORDER, Scenario, run_scenario
from sloguard.sim.cluster.workload import AZURE_CONV

TINY = Scenario("tiny", span_s=30.0, deadline_s=120.0, batch_requests=40, max_replicas=2, startup="30s")


@pytest.mark.skipif(not AZURE_CONV.is_file(), reason="shared Azure trace not present")
def test_the_benchmark_reports_every_policy_in_the_documented_shape() -> None:
    result = run_scenario(TINY)
    policies = result.data["policies"]
    assert list(policies) == list(POLICY_ORDER) == ["static", "threshold", "chiron", "sloguard"]
    for figures in policies.values():
        assert {"interactive_attainment", "batch_deadline_attainment", "gpu_hours", "scale_events"} <= set(
            figures
        )
        assert 0.0 <= figures["interactive_attainment"] <= 1.0
        assert 0.0 <= figures["batch_deadline_attainment"] <= 1.0
        assert figures["requests"] == result.data["scenario"]["interactive_requests"] + 40
    # static holds maxReplicas warm for the whole run, nothing less
    assert policies["static"]["gpu_hours"] == pytest.approx(2 * 120.0 / 3600.0, abs=1e-4)
    assert policies["static"]["scale_events"] == 0
    for name in POLICY_ORDER:
        assert f"| {name} |" in result.markdown
    assert result.files["autoscale.png"].startswith(b"\x89PNG")
