"""The SLOGuard operator: kopf handlers that reconcile SLOClass and InferencePool objects and scale pools.

`sloguard.operator.core` holds the pure builders and decisions (no kopf, kubernetes or Prometheus
imports); the handlers and the Prometheus adapter beside it stay thin.
"""
