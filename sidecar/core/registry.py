"""The policy registry: every `SchedulingPolicyName` maps to exactly one policy class.

The sidecar service and the simulator build policies only through `create_policy`; a test checks that
the registry's names equal the API enum. `oracle=True` builds the oracle variant that uses each
request's `true_output_tokens` instead of the predictor (benchmarks' upper bounds). Pure.
"""

from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.predictor import OutputLengthPredictor
from sloguard.sidecar.core.base_policy import QueuePolicy
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.policies.edf import EdfPolicy
from sloguard.sidecar.core.policies.fcfs import FcfsPolicy
from sloguard.sidecar.core.policies.mooncake import MooncakePolicy
from sloguard.sidecar.core.policies.sa import SaPolicy
from sloguard.sidecar.core.policies.scorpio import ScorpioPolicy
from sloguard.sidecar.core.policies.sjf import SjfPolicy
from sloguard.sidecar.core.policies.sloguard import SloguardPolicy

POLICIES: dict[SchedulingPolicyName, type[QueuePolicy]] = {
    cls.name: cls
    for cls in (
        FcfsPolicy,
        SjfPolicy,
        EdfPolicy,
        MooncakePolicy,
        SaPolicy,
        ScorpioPolicy,
        SloguardPolicy,
    )
}


def create_policy(
    config: SidecarConfig,
    *,
    predictor: OutputLengthPredictor,
    latency: LatencyModel | None = None,
    seed: int = 0,
    oracle: bool = False,
) -> QueuePolicy:
    """The policy `config.policy.name` with `config.policy.parameters`.

    The latency model is copied, so online calibration in one policy never leaks into another. Without
    one, it is seeded from `config.latency_profile` when the configuration names one, else the defaults.
    Raises PolicyParameterError for bad parameters.
    """
    cls = POLICIES[SchedulingPolicyName(config.policy.name)]
    if latency is None:
        profile = config.latency_profile
        latency = LatencyModel() if profile is None else LatencyModel.from_profile(profile)
    model = latency.copy()
    return cls(config, predictor=predictor, latency=model, seed=seed, oracle=oracle)
