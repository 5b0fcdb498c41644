"""One running sidecar: wires config, engine client, lifecycle, the gRPC and HTTP fronts and the metrics port.

`sloguard sidecar --config FILE` (sidecar/command.py) runs one; the integration tests start one in-process
on ephemeral ports. The Control service (Drain, SetLimits, GetState) is served by a second gRPC server
on `control_host:control_port` (loopback by default), never beside Generate on the port the Service
exposes. Drain (SIGTERM or Control.Drain): readiness goes false and gRPC health NOT_SERVING
first, new requests are refused with UNAVAILABLE/503 `draining`, queued and in-flight requests get the
grace period, then the servers stop.
"""

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sloguard.api.sidecar_config import SidecarConfig
from sloguard.sidecar.config_reload import ConfigWatcher, load_config
from sloguard.sidecar.engine_client import EngineClient
from sloguard.sidecar.grpc_server import CONTROL_SERVICE, SIDECAR_SERVICE, GrpcFront
from sloguard.sidecar.http_front import HttpFront
from sloguard.sidecar.lifecycle import Lifecycle
from sloguard.sidecar.loop_lag import run_loop_lag
from sloguard.sidecar.metrics import SidecarMetrics
from sloguard.sidecar.metrics_server import metrics_app

log = logging.getLogger(__name__)
LISTEN_BACKLOG = 4096
"""Connections the kernel queues for the HTTP and metrics listeners before the sidecar accepts them (the
kernel caps it at net.core.somaxconn). aiohttp's default is 128: measured in front of real vLLM, a burst of
one-connection-per-request clients while the event loop was busy overflowed it (the host counted ~38,000
ListenOverflows), and every dropped SYN cost its client a 1 s retransmit before the sidecar saw the request:
TTFT p50 1.2 s through the sidecar against 0.14 s straight to vLLM, whose server listens with 2048."""

DOWN_PROBE_INTERVAL_S = 1.0
"""While the engine is down, its health is checked at least this often, whatever --health-interval-s says:
a sidecar that started before its engine (or saw it restart) becomes ready about a second after it is."""
PROBE_TIMEOUT_S = 2.0  # an engine that does not answer /health within this is down


class SidecarService:
    def __init__(
        self,
        config_path: Path,
        *,
        host: str = "0.0.0.0",
        reload_interval_s: float = 1.0,
        health_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        clock_scale: float = 1.0,
    ) -> None:
        self.clock = clock  # every latency the sidecar measures; `sloguard demo` runs it on engine time
        self.clock_scale = clock_scale  # `clock` seconds per wall second
        self.config_path = config_path
        self.host = host
        self.reload_interval_s = reload_interval_s
        self.health_interval_s = health_interval_s
        config, digest = load_config(config_path)
        self.config: SidecarConfig = config
        self.config_hash = digest
        self.metrics = SidecarMetrics(self.config.pool.name)
        self.grpc_port = self.http_port = self.metrics_port = self.control_port = 0
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._grpc: grpc.aio.Server | None = None
        self._control: grpc.aio.Server | None = None
        self._runners: list[web.AppRunner] = []
        self._health = health.aio.HealthServicer()

    # ---- start / stop -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every port and start serving. If any step fails (a port already in use, an unreadable
        certificate), what had started is stopped before the error propagates: no server, client session
        or task is left for the interpreter to find at exit, so the command reports the one error that
        stopped it."""
        try:
            await self._start()
        except BaseException:
            try:
                await self.stop()
            except Exception:  # the start's own error is the one to report
                log.debug("cleaning up after a failed start", exc_info=True)
            raise

    async def _start(self) -> None:
        config = self.config
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0),
            connector=aiohttp.TCPConnector(limit=0),
            read_bufsize=1 << 20,
        )
        engine = EngineClient(
            self._session,
            config.engine.url,
            model=config.engine.model,
            stamps_priority=config.engine.scheduling_policy == "priority",
            clock=self.clock,
        )
        self.engine_client = engine
        self.lifecycle = Lifecycle(
            config, engine, self.metrics, clock=self.clock, clock_scale=self.clock_scale
        )
        self.lifecycle.engine_up = await engine.healthy()
        if self.lifecycle.engine_up:
            await self._probe_features()
        self.metrics.engine_up.labels(self.metrics.pool).set(1 if self.lifecycle.engine_up else 0)
        self.watcher = ConfigWatcher(
            self.config_path,
            current=config,
            current_hash=self.config_hash,
            apply=self._apply_config,
            metrics=self.metrics,
            interval_s=self.reload_interval_s,
        )

        grpc_front = GrpcFront(
            self.lifecycle, on_drain=self.request_drain, config_hash=lambda: self.watcher.current_hash
        )
        handlers = grpc_front.handlers()
        serving = [h for h in handlers if h.service_name() != CONTROL_SERVICE]  # type: ignore[attr-defined]
        control = [h for h in handlers if h.service_name() == CONTROL_SERVICE]  # type: ignore[attr-defined]
        self._grpc = grpc.aio.server()
        self._grpc.add_generic_rpc_handlers(serving)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable_server_reflection(
            [SIDECAR_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], self._grpc
        )
        self.grpc_port = _bind_grpc(self._grpc, self.host, config.grpc_port)
        await self._grpc.start()
        self._control = grpc.aio.server()
        self._control.add_generic_rpc_handlers(control)
        reflection.enable_server_reflection([CONTROL_SERVICE, reflection.SERVICE_NAME], self._control)
        self.control_port = _bind_grpc(self._control, config.control_host, config.control_port)
        await self._control.start()

        self.http_port = await self._serve_app(HttpFront(self.lifecycle).app(), config.http_port)
        self.metrics_port = await self._serve_app(metrics_app(self.metrics, self.ready), config.metrics_port)
        for coroutine in (
            self.lifecycle.run_ticks(),
            self._probe_engine(),
            self.watcher.run(),
            run_loop_lag(self.metrics.observe_loop_lag),
        ):
            self._tasks.append(asyncio.create_task(coroutine))
        await self._set_serving()
        log.info(
            "sidecar for pool %s serving: grpc %d, http %d, metrics %d, control %s:%d, engine %s",
            config.pool.name,
            self.grpc_port,
            self.http_port,
            self.metrics_port,
            config.control_host,
            self.control_port,
            config.engine.url,
        )

    async def _serve_app(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, port, backlog=LISTEN_BACKLOG)
        await site.start()
        self._runners.append(runner)
        bound: int = runner.addresses[-1][1]  # the port actually bound (config port 0: ephemeral)
        return bound

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._control is not None:
            await self._control.stop(grace=1.0)
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ---- readiness, config, drain -------------------------------------------------------------

    def ready(self) -> bool:
        return self.lifecycle.engine_up and not self.lifecycle.draining

    async def _set_serving(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SIDECAR_SERVICE):
            await self._health.set(service, status)
        self.metrics.ready.labels(self.metrics.pool).set(1 if self.ready() else 0)

    async def _probe_engine(self) -> None:
        """Every health_interval_s while the engine is up; at least every DOWN_PROBE_INTERVAL_S while it is
        down or suspect (a probe failed, or a request could not connect in the middle of a long interval).
        Down takes engine_health.PROBE_FAILURES_TO_DOWN failed probes in a row (sidecar/engine_health.py)."""
        probed_s = time.monotonic()
        health = self.lifecycle.health
        while True:
            await asyncio.sleep(min(self.health_interval_s, DOWN_PROBE_INTERVAL_S))
            if not health.suspect and time.monotonic() - probed_s < self.health_interval_s:
                continue
            probed_s = time.monotonic()
            was_up = health.up
            up = health.on_probe(await self._engine_healthy())
            if up and self.engine_client.stream_interval_supported is None:
                await self._probe_features()
            if up != was_up:
                log.log(
                    logging.INFO if up else logging.WARNING,
                    "engine %s is %s",
                    self.config.engine.url,
                    "up" if up else "down",
                )
            self.metrics.engine_up.labels(self.metrics.pool).set(1 if up else 0)
            await self._set_serving()

    async def _engine_healthy(self) -> bool:
        """One probe: 200 from /health in time is up; anything else (refused, slow, 5xx, a bug) is down."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S + 1.0):
                return await self.engine_client.healthy(timeout_s=PROBE_TIMEOUT_S)
        except Exception:  # the probe must outlive anything the engine does; down is the safe answer
            log.exception("engine health probe failed")
            return False

    async def _probe_features(self) -> None:
        """Ask the engine what it supports (engine_client.py `probe_features`); anything going wrong leaves
        it unknown, asked again at the next probe."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S + 1.0):
                await self.engine_client.probe_features(timeout_s=PROBE_TIMEOUT_S)
        except Exception:
            log.exception("engine feature probe failed")

    def _apply_config(self, config: SidecarConfig) -> None:
        if config.engine != self.config.engine:
            raise ValueError("the engine section cannot change without a restart")
        self.lifecycle.apply_config(config)
        self.config = config

    def request_drain(self, grace_s: float | None = None) -> None:
        """Start draining (idempotent); the service stops when done."""
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self.drain(grace_s))

    async def drain(self, grace_s: float | None = None) -> None:
        grace = self.config.drain_grace_s if grace_s is None else grace_s
        self.lifecycle.start_draining()
        await self._set_serving()
        log.info(
            "draining: %d queued, %d in flight, grace %.1fs",
            self.lifecycle.queued,
            self.lifecycle.in_flight,
            grace,
        )
        finished = await self.lifecycle.drain(grace)
        if not finished:
            log.warning("drain grace period over; remaining requests were ended as failed")
        await self.stop()


def _bind_grpc(server: grpc.aio.Server, host: str, port: int) -> int:
    """The port a gRPC server bound at host:port (port 0: an ephemeral one). grpc raises RuntimeError, or
    in older releases returns 0, where the address is taken; either becomes an OSError naming the address,
    as aiohttp's own bind failures are, so the command reports both the same way."""
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(errno.EADDRINUSE, f"gRPC could not bind {address}: {error}") from error
    if bound == 0:
        raise OSError(errno.EADDRINUSE, f"gRPC could not bind {address}")
    return bound
