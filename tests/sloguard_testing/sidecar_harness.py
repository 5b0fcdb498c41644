"""Starts an in-process sidecar on 127.0.0.1 ephemeral ports, for integration and end-to-end tests.

`running_sidecar` puts one in front of a fresh FakeVllm (tests/integration/sidecar/); `sidecar_in_front`
puts one in front of any engine URL (the simulator or real vLLM, usually through an engine_link.EngineLink;
tests/e2e/test_sidecar_e2e_engines.py).
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from sloguard.sidecar.service import SidecarService
from sloguard_testing.fake_vllm import FakeVllm

CLASSES = [
    {"name": "interactive", "ttft_s": 2.0, "tpot_s": 0.5, "priority": 10, "default": True},
    {"name": "batch", "ttft_s": 30.0, "tpot_s": 2.0, "priority": 0},
]


def sidecar_config(engine_url: str, engine_policy: str = "fcfs", **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": 1,
        "pool": {"name": "test-pool", "namespace": "default"},
        "classes": CLASSES,
        "policy": {"name": "fcfs"},
        "limits": {"max_queue_depth": 64, "min_in_flight": 1, "max_in_flight": 64},
        "engine": {"url": engine_url, "scheduling_policy": engine_policy},
        "drain_grace_s": 5.0,
        "grpc_port": 0,
        "http_port": 0,
        "metrics_port": 0,
    }
    config.update(overrides)
    return config


@dataclass
class SidecarHandle:
    """A running in-process sidecar, its config file (rewrite it to reload) and an HTTP client session."""

    sidecar: SidecarService
    config_path: Path
    http: aiohttp.ClientSession

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.sidecar.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.sidecar.grpc_port}"

    @property
    def control_target(self) -> str:
        """The Control service: its own loopback port, not the serving gRPC port."""
        return f"127.0.0.1:{self.sidecar.control_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.sidecar.metrics_port}"

    def sample(self, name: str, **labels: str) -> float:
        value = self.sidecar.metrics.registry.get_sample_value(name, {"pool": "test-pool", **labels})
        return 0.0 if value is None else value

    def outcomes(self) -> dict[tuple[str, str, str], float]:
        """(slo_class, outcome, reason) -> count, from sloguard_requests_total."""
        found = {}
        for family in self.sidecar.metrics.registry.collect():
            for s in family.samples:
                if s.name == "sloguard_requests_total":
                    found[(s.labels["slo_class"], s.labels["outcome"], s.labels["reason"])] = s.value
        return found

    def total_ended(self) -> float:
        return sum(self.outcomes().values())

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else json.dumps(config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)  # atomic, like a ConfigMap symlink swap


@dataclass
class Harness(SidecarHandle):
    engine: FakeVllm


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running_sidecar(
    tmp_path: Path,
    fake: FakeVllm | None = None,
    engine_policy: str = "fcfs",
    *,
    health_interval_s: float = 0.05,
    **config_overrides: Any,
) -> AsyncIterator[Harness]:
    engine = fake or FakeVllm()
    await engine.start()
    config_path = tmp_path / "sidecar.json"
    config = sidecar_config(engine.url, engine_policy, **config_overrides)
    config_path.write_text(json.dumps(config))
    sidecar = SidecarService(
        config_path, host="127.0.0.1", reload_interval_s=0.05, health_interval_s=health_interval_s
    )
    await sidecar.start()
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        yield Harness(engine=engine, sidecar=sidecar, config_path=config_path, http=http)
    finally:
        await http.close()
        if not sidecar._stopped.is_set():
            await sidecar.stop()
        await engine.stop()


@asynccontextmanager
async def sidecar_in_front(
    tmp_path: Path,
    engine_url: str,
    *,
    engine_policy: str = "fcfs",
    health_interval_s: float = 0.05,
    **config_overrides: Any,
) -> AsyncIterator[SidecarHandle]:
    """A sidecar (test classes, fcfs policy unless overridden) in front of the engine at `engine_url`."""
    config_path = tmp_path / "sidecar.json"
    config_path.write_text(json.dumps(sidecar_config(engine_url, engine_policy, **config_overrides)))
    sidecar = SidecarService(
        config_path, host="127.0.0.1", reload_interval_s=0.05, health_interval_s=health_interval_s
    )
    await sidecar.start()
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
    try:
        yield SidecarHandle(sidecar=sidecar, config_path=config_path, http=http)
    finally:
        await http.close()
        if not sidecar._stopped.is_set():
            await sidecar.stop()


def sse_payloads(raw: bytes) -> list[Any]:
    """The data payloads of an SSE body; `[DONE]` stays a string."""
    out: list[Any] = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out
