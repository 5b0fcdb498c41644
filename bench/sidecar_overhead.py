"""Benchmark `sidecar-overhead`: what the sidecar adds to TTFT, and how many tokens one sidecar core relays.

The same closed-loop load (`concurrency` streams, each request `max_tokens` tokens with `ignore_eos`) is
sent straight to a simulated engine and through a sidecar (fcfs policy) in front of it, in interleaved
rounds (A/B, then B/A, ...; each phase `phase_s` long) so slow drifts of this shared machine's load hit
both paths alike. Each round pairs its two phases: added TTFT p50/p99 (sidecar quantile minus direct
quantile, client-side, first data chunk) and their ratios (sidecar / direct); reported are the medians
over rounds of those paired figures. The relay rate is tokens streamed through the sidecar per second of
sidecar CPU time (user+system, from /proc), the median over rounds, i.e. tokens/s per fully busy sidecar
core. Goal (issue 8): added TTFT p99 <= 2 ms at 100 streams and >= 20,000 tokens/s per core.

The engine is `sloguard sim serve`; set SLOGUARD_BENCH_ENGINE_CMD (a shell-quoted command, `{port}` is
replaced) to run another engine, e.g. real vLLM or a simulator from another checkout. Engine, sidecar and
load generator share this machine's cores, so the figures are upper bounds of the overhead.
"""

import asyncio
import json
import os
import shlex
import socket
import statistics
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
    engine: "Processes", concurrency: int, max_tokens: int, phase_s: float, rounds: int
) -> list[tuple[Phase, Phase]]:
    async with aiohttp.ClientSession() as session:
        await _wait_ready(session, f"{engine.engine_url}/health", engine.engine)
        await _wait_ready(session, f"{engine.metrics_url}/readyz", engine.sidecar)
    direct_url = f"{engine.engine_url}/v1/completions"
    sidecar_url = f"{engine.sidecar_url}/v1/completions"
    pairs = []
    for round_index in range(rounds):
        if round_index % 2 == 0:  # A/B, then B/A: neither path always runs first
            direct = await _phase(direct_url, concurrency, max_tokens, phase_s, None)
            through = await _phase(sidecar_url, concurrency, max_tokens, phase_s, engine.sidecar.pid)
        else:
            through = await _phase(sidecar_url, concurrency, max_tokens, phase_s, engine.sidecar.pid)
            direct = await _phase(direct_url, concurrency, max_tokens, phase_s, None)
        pairs.append((direct, through))
    return pairs


@dataclass
class Processes:
    engine: subprocess.Popen[bytes]
    sidecar: subprocess.Popen[bytes]
    engine_url: str
    sidecar_url: str
    metrics_url: str


def measure(concurrency: int, max_tokens: int, phase_s: float, rounds: int) -> list[tuple[Phase, Phase]]:
    """Start an engine and a sidecar in front of it, load both paths in interleaved rounds, stop them."""
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
                return asyncio.run(_measure(processes, concurrency, max_tokens, phase_s, rounds))
            finally:
                for process in (processes.sidecar, processes.engine):
                    process.terminate()
                for process in (processes.sidecar, processes.engine):
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def run(quick: bool) -> BenchResult:
    concurrency, max_tokens = 100, 128
    rounds, phase_s = (3, 3.0) if quick else (6, 5.0)
    pairs = measure(concurrency, max_tokens, phase_s, rounds)
    added_p50 = [t.quantile_ms(0.5) - d.quantile_ms(0.5) for d, t in pairs]
    added_p99 = [t.quantile_ms(0.99) - d.quantile_ms(0.99) for d, t in pairs]
    ratio_p50 = [t.quantile_ms(0.5) / d.quantile_ms(0.5) for d, t in pairs]
    ratio_p99 = [t.quantile_ms(0.99) / d.quantile_ms(0.99) for d, t in pairs]
    relay = [t.tokens / t.cpu_s for _, t in pairs if t.cpu_s]
    data = {
        "added_ttft_p50_ms": round(_median(added_p50), 3),
        "added_ttft_p99_ms": round(_median(added_p99), 3),
        "relay_tokens_per_s_per_core": round(_median(relay), 1),
        "concurrency": concurrency,
        "rounds": rounds,
        "phase_s": phase_s,
        "ttft_p50_ratio_median": round(_median(ratio_p50), 3),
        "ttft_p99_ratio_median": round(_median(ratio_p99), 3),
        "per_round": [
            {
                "direct_ttft_p50_ms": round(d.quantile_ms(0.5), 3),
                "direct_ttft_p99_ms": round(d.quantile_ms(0.99), 3),
                "sidecar_ttft_p50_ms": round(t.quantile_ms(0.5), 3),
                "sidecar_ttft_p99_ms": round(t.quantile_ms(0.99), 3),
                "direct_requests": len(d.ttfts_s),
                "sidecar_requests": len(t.ttfts_s),
                "sidecar_tokens_per_s": round(t.tokens / t.wall_s, 1),
                "sidecar_cpu_s": t.cpu_s,
            }
            for d, t in pairs
        ],
    }
    cores = os.cpu_count()
    lines = [
        f"Workload: {concurrency} closed-loop streams x {max_tokens} tokens, {rounds} interleaved rounds "
        f"(direct/sidecar, then sidecar/direct, ...) of {phase_s:.0f} s per phase, fcfs sidecar; engine, "
        f"sidecar and load generator share {cores} cores.",
        "",
        "| round | direct TTFT p50 ms | sidecar TTFT p50 ms | direct TTFT p99 ms | sidecar TTFT p99 ms |"
        " sidecar tokens/CPU-s |",
        "|---|---|---|---|---|---|",
    ]
    for index, (d, t) in enumerate(pairs):
        per_core = f"{t.tokens / t.cpu_s:.0f}" if t.cpu_s else "-"
        lines.append(
            f"| {index + 1} | {d.quantile_ms(0.5):.2f} | {t.quantile_ms(0.5):.2f} "
            f"| {d.quantile_ms(0.99):.2f} | {t.quantile_ms(0.99):.2f} | {per_core} |"
        )
    lines += [
        "",
        f"Added TTFT, median over rounds of the paired differences: p50 {data['added_ttft_p50_ms']} ms, "
        f"p99 {data['added_ttft_p99_ms']} ms (goal p99 <= 2); paired ratios sidecar/direct: p50 "
        f"{data['ttft_p50_ratio_median']}, p99 {data['ttft_p99_ratio_median']}.",
        f"Relay: {data['relay_tokens_per_s_per_core']} tokens per sidecar CPU-second "
        "(median over rounds; goal >= 20000).",
        "",
    ]
    return BenchResult(data=data, markdown="\n".join(lines))
