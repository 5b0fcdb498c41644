"""The SLOGuard simulator: a vLLM-faithful discrete-event engine in virtual time, a vLLM-compatible
HTTP server over it in real time, and a cluster simulation for autoscaling.
"""
