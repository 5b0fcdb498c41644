"""The sidecar in front of the simulated vLLM engine (`sloguard sim serve`), both as real processes.

Runs by default against this checkout's simulator (`sloguard sim serve`); SLOGUARD_SIM_SERVE_CMD (a
shell-quoted command with `{port}`) runs another engine build instead.
"""

import asyncio
import json
import os
import shlex
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from sloguard_testing import grpc_stubs as stubs
from sloguard_testing.sidecar_harness import sidecar_config, sse_payloads

from sloguard.sidecar.proto import sidecar_pb2 as pb

pytestmark = pytest.mark.slow


def _sim_command() -> list[str]:
    override = os.environ.get("SLOGUARD_SIM_SERVE_CMD")
    if override:
        return shlex.split(override)
    return [
        sys.executable,
        "-m",
        "sloguard",
        "sim",
        "serve",
        "--profile",
        "llama-3-8b-h100",
        "--port",
        "{port}",
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Stack:
    engine_url: str
    http_url: str
    grpc_target: str
    metrics_url: str
    session: aiohttp.ClientSession


async def _ready(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


@dataclass
class _Processes:
    engine: asyncio.subprocess.Process
    sidecar: asyncio.subprocess.Process
    engine_port: int
    ports: dict[str, int]


async def _start(tmp_path: Path, session: aiohttp.ClientSession) -> _Processes | None:
    """Start the engine and the sidecar on free ports and wait until the sidecar is ready; None (both
    stopped) when either exits first. A port picked free can be taken by another process before the child
    binds it (seen in CI: the sidecar exited with gRPC's "Address already in use")."""
    command = _sim_command()
    engine_port = _free_port()
    ports = {"grpc_port": _free_port(), "http_port": _free_port(), "metrics_port": _free_port()}
    engine_cmd = [part.replace("{port}", str(engine_port)) for part in command]
    engine_cmd += ["--scheduling-policy", "priority"]
    config_path = tmp_path / "sidecar.json"
    config = sidecar_config(
        f"http://127.0.0.1:{engine_port}", "priority", policy={"name": "sloguard"}, **ports
    )
    config_path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    with (tmp_path / "engine.log").open("ab") as log:  # the child holds its own descriptor
        engine = await asyncio.create_subprocess_exec(*engine_cmd, env=env, stdout=log, stderr=log)
    sidecar_cmd = ["-m", "sloguard", "sidecar", "--config", str(config_path), "--host", "127.0.0.1"]
    sidecar = await asyncio.create_subprocess_exec(sys.executable, *sidecar_cmd, env=env)
    metrics_url = f"http://127.0.0.1:{ports['metrics_port']}"
    for _ in range(600):
        if await _ready(session, f"{metrics_url}/readyz"):
            return _Processes(engine, sidecar, engine_port, ports)
        if engine.returncode is not None or sidecar.returncode is not None:
            for process in (engine, sidecar):
                if process.returncode is None:
                    process.kill()
                await process.wait()
            return None
        await asyncio.sleep(0.05)
    raise AssertionError("the stack never became ready")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        for _attempt in range(3):
            started = await _start(tmp_path, session)
            if started is not None:
                break
        else:
            raise AssertionError("engine or sidecar exited before the stack was ready, 3 times")
    except BaseException:
        await session.close()
        raise
    try:
        yield Stack(
            engine_url=f"http://127.0.0.1:{started.engine_port}",
            http_url=f"http://127.0.0.1:{started.ports['http_port']}",
            grpc_target=f"127.0.0.1:{started.ports['grpc_port']}",
            metrics_url=f"http://127.0.0.1:{started.ports['metrics_port']}",
            session=session,
        )
    finally:
        await session.close()
        started.sidecar.terminate()
        started.engine.terminate()
        assert await asyncio.wait_for(started.sidecar.wait(), 30) == 0  # SIGTERM drains and exits cleanly
        await asyncio.wait_for(started.engine.wait(), 30)


async def _engine_gauge(stack: Stack, name: str) -> float:
    async with stack.session.get(f"{stack.engine_url}/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def test_streams_through_both_fronts(stack: Stack) -> None:
    body = {"prompt": "the quick brown fox", "max_tokens": 24, "ignore_eos": True, "stream": True}
    async with stack.session.post(f"{stack.http_url}/v1/completions", json=body) as response:
        assert response.status == 200
        payloads = sse_payloads(await response.read())
    assert payloads[-1] == "[DONE]" and all("usage" not in p for p in payloads[:-1])
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        messages = [
            m
            async for m in stubs.sidecar(channel).Generate(
                pb.GenerateRequest(text="hi", max_tokens=24, sampling=pb.SamplingParams(ignore_eos=True))
            )
        ]
    assert sum(m.tokens for m in messages) == 24 and messages[-1].finish_reason == "length"


async def test_a_client_leaving_frees_the_engine(stack: Stack) -> None:
    body = {"prompt": "the quick brown fox", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    response = await stack.session.post(f"{stack.http_url}/v1/completions", json=body)
    await response.content.readline()
    assert await _engine_gauge(stack, "vllm:num_requests_running") == 1
    response.close()  # the client leaves mid-stream; the sidecar must abort upstream
    for _ in range(500):
        if await _engine_gauge(stack, "vllm:num_requests_running") == 0:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the engine kept generating for a client that left")
