"""The scheduling policies, one module each, all behind sloguard.sidecar.core.policy.Policy.

Registered by name in sloguard.sidecar.core.registry; the names are sloguard.api.SchedulingPolicyName.
"""
