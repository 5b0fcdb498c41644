"""SLOGuard: SLO-aware admission, ordering and autoscaling for vLLM on Kubernetes.

This root package holds only the `sloguard` command line; the system lives in the subpackages
`sloguard.api` (contract), `sloguard.sidecar`, `sloguard.operator` and `sloguard.sim`.
"""

__version__ = "0.1.0"
