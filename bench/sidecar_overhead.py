"""Benchmark `sidecar-overhead`: what the sidecar adds to TTFT, and how many tokens one sidecar core relays.

The same closed-loop load (`concurrency` streams, each request `max_tokens` tokens with `ignore_eos`) is
sent for `duration_s` straight to a simulated engine, then through a sidecar (fcfs policy) in front of
it. Reported: added TTFT p50/p99 (sidecar quantile minus direct quantile, client-side, first data chunk)
and the relay rate: tokens streamed through the sidecar per second of sidecar CPU time (user+system,
from /proc), i.e. tokens/s per fully busy sidecar core. Goal (issue 8): added TTFT p99 <= 2 ms at 100
streams and >= 20,000 tokens/s per core.

The engine is `sloguard sim serve`; set SLOGUARD_BENCH_ENGINE_CMD (a shell-quoted command, `{port}` is
replaced) to run another engine, e.g. real vLLM or a simulator from another checkout. Engine, sidecar and
load generator share this machine's cores, so the figures are upper bounds of the overhead.
"""

import asyncio
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from sloguard.bench import BenchResult

DEFAULT_ENGINE_CMD = (
    f"{shlex.quote(sys.executable)} -m sloguard sim serve --profile llama-3-8b-h100 --port {{port}}"
)


@dataclass
class Phase:
    ttfts_s: list[float]
    tokens: int
    wall_s: float
    cpu_s: float | None = None

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.ttfts_s)
        return 1000.0 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait_ready(session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after 60 s")


async def _one(session: aiohttp.ClientSession, url: str, max_tokens: int, ttfts: list[float]) -> int:
    body = {
        "prompt": "the quick brown fox jumps over the lazy dog",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    tokens = 0
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            if first is None:
                first = time.perf_counter() - start
            if b'"usage"' in line:
                tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    if first is not None:
        ttfts.append(first)
    return tokens


async def _phase(url: str, concurrency: int, max_tokens: int, duration_s: float, pid: int | None) -> Phase:
    ttfts: list[float] = []
    tokens = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + duration_s

        async def worker() -> None:
            nonlocal tokens
            while time.monotonic() < stop_at:
                done = await _one(session, url, max_tokens, ttfts)
                tokens += done  # not `tokens += await …`: that reads `tokens` before the await

        await asyncio.gather(*(_one(session, url, 4, []) for _ in range(concurrency)))  # open connections
        cpu0 = _cpu_s(pid) if pid else None
        wall0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - wall0
        cpu = _cpu_s(pid) - cpu0 if pid and cpu0 is not None else None
    return Phase(ttfts_s=ttfts, tokens=tokens, wall_s=wall, cpu_s=cpu)


async def _measure(
    engine: "Processes", concurrency: int, max_tokens: int, duration_s: float
) -> tuple[Phase, Phase]:
    async with aiohttp.ClientSession() as session:
        await _wait_ready(session, f"{engine.engine_url}/health", engine.engine)
        await _wait_ready(session, f"{engine.metrics_url}/readyz", engine.sidecar)
    direct = await _phase(f"{engine.engine_url}/v1/completions", concurrency, max_tokens, duration_s, None)
    through = await _phase(
        f"{engine.sidecar_url}/v1/completions", concurrency, max_tokens, duration_s, engine.sidecar.pid
    )
    return direct, through


@dataclass
class Processes:
    engine: subprocess.Popen[bytes]
    sidecar: subprocess.Popen[bytes]
    engine_url: str
    sidecar_url: str
    metrics_url: str


def measure(concurrency: int, max_tokens: int, duration_s: float) -> tuple[Phase, Phase]:
    """Start an engine and a sidecar in front of it, load both paths in turn, stop them."""
    engine_port, ports = _free_port(), {k: _free_port() for k in ("grpc_port", "http_port", "metrics_port")}
    engine_cmd = os.environ.get("SLOGUARD_BENCH_ENGINE_CMD", DEFAULT_ENGINE_CMD).replace(
        "{port}", str(engine_port)
    )
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "pool": {"name": "bench"},
            "classes": [{"name": "standard", "ttft_s": 60.0, "tpot_s": 10.0, "default": True}],
            "policy": {"name": "fcfs"},
            "limits": {"max_queue_depth": 100_000, "min_in_flight": 1, "max_in_flight": 65536},
            "engine": {"url": f"http://127.0.0.1:{engine_port}", "scheduling_policy": "fcfs"},
            **ports,
        }
        config_path = Path(tmp) / "sidecar.json"
        config_path.write_text(json.dumps(config))
        sidecar_cmd = [sys.executable, "-m", "sloguard", "--log-level", "WARNING", "sidecar"]
        with (Path(tmp) / "engine.log").open("wb") as engine_log:  # the engine's access log is loud
            processes = Processes(
                engine=subprocess.Popen(
                    shlex.split(engine_cmd), env=env, stdout=engine_log, stderr=engine_log
                ),
                sidecar=subprocess.Popen(
                    [*sidecar_cmd, "--config", str(config_path), "--host", "127.0.0.1"], env=env
                ),
                engine_url=f"http://127.0.0.1:{engine_port}",
                sidecar_url=f"http://127.0.0.1:{ports['http_port']}",
                metrics_url=f"http://127.0.0.1:{ports['metrics_port']}",
            )
            try:
                return asyncio.run(_measure(processes, concurrency, max_tokens, duration_s))
            finally:
                for process in (processes.sidecar, processes.engine):
                    process.terminate()
                for process in (processes.sidecar, processes.engine):
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()


def run(quick: bool) -> BenchResult:
    concurrency, max_tokens = 100, 128
    duration_s = 5.0 if quick else 20.0
    direct, through = measure(concurrency, max_tokens, duration_s)
    cpu_s = through.cpu_s or float("nan")
    data = {
        "added_ttft_p50_ms": round(through.quantile_ms(0.5) - direct.quantile_ms(0.5), 3),
        "added_ttft_p99_ms": round(through.quantile_ms(0.99) - direct.quantile_ms(0.99), 3),
        "relay_tokens_per_s_per_core": round(through.tokens / cpu_s, 1),
        "concurrency": concurrency,
        "direct": {
            "ttft_p50_ms": direct.quantile_ms(0.5),
            "ttft_p99_ms": direct.quantile_ms(0.99),
            "requests": len(direct.ttfts_s),
            "tokens_per_s": direct.tokens / direct.wall_s,
        },
        "sidecar": {
            "ttft_p50_ms": through.quantile_ms(0.5),
            "ttft_p99_ms": through.quantile_ms(0.99),
            "requests": len(through.ttfts_s),
            "tokens_per_s": through.tokens / through.wall_s,
            "sidecar_cpu_s": cpu_s,
            "wall_s": through.wall_s,
        },
    }
    cores = os.cpu_count()
    rows = [
        ("straight to the engine (baseline)", direct),
        ("through the sidecar", through),
    ]
    lines = [
        f"Workload: {concurrency} closed-loop streams x {max_tokens} tokens, {duration_s:.0f} s per phase, "
        f"fcfs sidecar; engine, sidecar and load generator share {cores} cores.",
        "",
        "| path | TTFT p50 ms | TTFT p99 ms | requests | tokens/s |",
        "|---|---|---|---|---|",
    ]
    for label, phase in rows:
        p50, p99 = phase.quantile_ms(0.5), phase.quantile_ms(0.99)
        lines.append(
            f"| {label} | {p50:.2f} | {p99:.2f} | {len(phase.ttfts_s)} | {phase.tokens / phase.wall_s:.0f} |"
        )
    lines += [
        "",
        f"Added TTFT: p50 {data['added_ttft_p50_ms']} ms, p99 {data['added_ttft_p99_ms']} ms (goal p99 <= 2)",
        f"Relay: {data['relay_tokens_per_s_per_core']} tokens per sidecar CPU-second (goal: >= 20000).",
        "",
    ]
    markdown = "\n".join(lines)
    return BenchResult(data=data, markdown=markdown)
