"""The metrics port: Prometheus /metrics from the sidecar's registry, plus /healthz and /readyz.

/healthz answers 200 while the process serves; /readyz answers 200 only while the sidecar is ready
(engine healthy, not draining), so Kubernetes stops routing to a draining pod before it exits.
/debug/hops answers JSON: recent per-hop latencies and event-loop lag (sidecar/hop_timing.py), in ms;
POST /debug/hops/reset empties those windows (204), so that a measurement reads only its own requests.
"""

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sloguard.sidecar.metrics import SidecarMetrics


def metrics_app(metrics: SidecarMetrics, ready: Callable[[], bool]) -> web.Application:
    async def scrape(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(text="not ready\n", status=503)

    async def hops(_: web.Request) -> web.Response:
        return web.json_response(metrics.hops_summary())

    async def reset_hops(_: web.Request) -> web.Response:
        metrics.clear_hop_windows()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/debug/hops", hops)
    app.router.add_post("/debug/hops/reset", reset_hops)
    return app
