"""The SLOGuard sidecar: runs beside each vLLM container and decides admission, order and release.

`sloguard.sidecar.core` is the pure scheduling core (no I/O, time passed in), shared with the simulator;
the modules beside it are the adapters (gRPC and HTTP fronts, the engine client, metrics, config reload).
"""
