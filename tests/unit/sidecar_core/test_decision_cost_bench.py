"""The decision-cost benchmark writes one entry per registered policy in the documented schema."""

from sloguard.api.policies import SchedulingPolicyName
from sloguard.bench import SCENARIOS
from sloguard.bench.decision_cost import QUEUED, measure


def test_the_scenario_is_registered_and_measures_every_policy_with_1000_queued() -> None:
    assert SCENARIOS["decision-cost"] == "sloguard.bench.decision_cost"
    assert QUEUED == 1000
    for name in SchedulingPolicyName:
        arrivals, releases = measure(name, repetitions=3)
        assert len(arrivals) == 3 and len(releases) == 3
        assert all(v > 0 for v in arrivals + releases)
