"""The sidecar's pure scheduling core: request state, latency models, guards and policies.

Output lengths come from the predictor package's serving surface (`from sloguard.predictor import ...`).

Pure: no grpc, aiohttp, kopf, kubernetes or prometheus imports, and no clock reads; every function that
needs the time takes `now_s`. The sidecar adapters and the simulator both drive it.
"""
