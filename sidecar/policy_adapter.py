"""Builds the configured scheduling policy behind the sidecar's policy port (sidecar/policy_port.py).

This is the ONE module of the sidecar's adapters that may use the scheduling core's policy interface
(`sloguard.sidecar.core.policy`), so the two can evolve and merge independently. Until the core's
registry is merged here, every configured name is served by the FCFS pass-through and the substitution
is reported (log line, `GetState.policy`, `sloguard_policy_info`).
"""

import logging
from dataclasses import dataclass

from sloguard.api.sidecar_config import SidecarConfig
from sloguard.sidecar.policy_port import AdmissionPolicy, FcfsPassThrough

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltPolicy:
    policy: AdmissionPolicy
    requested: str
    effective: str


def build_policy(config: SidecarConfig) -> BuiltPolicy:
    requested = config.policy.name.value
    policy = FcfsPassThrough(max_queue_depth=config.limits.max_queue_depth)
    if requested != policy.name:
        log.warning("policy %r is not available in this build; serving with %r", requested, policy.name)
    return BuiltPolicy(policy=policy, requested=requested, effective=policy.name)
