"""Benchmark `sidecar-overhead`: what the sidecar adds to TTFT, and how many tokens one sidecar core relays.

The same closed-loop load (`concurrency` streams, each request `max_tokens` tokens with `ignore_eos`) is
sent along three paths in rotated rounds (each path `phase_s` long per round; the order shifts by one each
round, so no path always runs first or last and slow drifts of this shared machine's load hit all alike):
straight to a simulated engine ("direct"); through bench/null_relay.py, a do-nothing aiohttp relay (the
floor any Python relay pays here); and through a sidecar (fcfs policy). Each round pairs its phases:
added TTFT p50/p99 (a relay's quantile minus direct's, client-side, first data chunk) and ratios; reported
are the medians over rounds of those paired figures. The relay rate is tokens streamed through a relay per
second of that process's CPU time (user+system, from /proc), the median over rounds: tokens/s per fully
busy core. Tokens come from each stream's usage, chunks are counted too: an engine that falls behind packs
several tokens into one chunk, which makes tokens cheaper to relay. After the last round the sidecar's
`GET /debug/hops` (sidecar/hop_timing.py) says where its requests' TTFT went, hop by hop, and how late its
event loop ran. Goal (issue 8): added TTFT p99 <= 2 ms at 100 streams and >= 20,000 tokens/s per core.

The engine is `sloguard sim serve`; set SLOGUARD_BENCH_ENGINE_CMD (a shell-quoted command, `{port}` is
replaced) to run another engine, e.g. real vLLM or a simulator from another checkout. Engine, relays and
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from sloguard.bench import BenchResult

DEFAULT_ENGINE_CMD = (
    f"{shlex.quote(sys.executable)} -m sloguard sim serve --profile llama-3-8b-h100 --port {{port}}"
)


@dataclass
class Phase:
    ttfts_s: list[float]
    tokens: int  # completion tokens, from each stream's final usage (the engine may pack several per chunk)
    chunks: int  # SSE data chunks the client received
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


async def _one(
    session: aiohttp.ClientSession, url: str, max_tokens: int, ttfts: list[float]
) -> tuple[int, int]:
    """One streamed request: (completion tokens, data chunks received); its TTFT is appended to `ttfts`."""
    body = {
        "prompt": "the quick brown fox jumps over the lazy dog",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    tokens = chunks = 0
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            chunks += 1
            if first is None:
                first = time.perf_counter() - start
            if b'"usage"' in line:
                tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    if first is not None:
        ttfts.append(first)
    return tokens, chunks


async def _phase(url: str, concurrency: int, max_tokens: int, duration_s: float, pid: int | None) -> Phase:
    ttfts: list[float] = []
    tokens = chunks = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + duration_s

        async def worker() -> None:
            nonlocal tokens, chunks
            while time.monotonic() < stop_at:
                done, received = await _one(session, url, max_tokens, ttfts)
                tokens += done  # not `tokens += await …`: that reads `tokens` before the await
                chunks += received

        await asyncio.gather(*(_one(session, url, 4, []) for _ in range(concurrency)))  # open connections
        cpu0 = _cpu_s(pid) if pid else None
        wall0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - wall0
        cpu = _cpu_s(pid) - cpu0 if pid and cpu0 is not None else None
    return Phase(ttfts_s=ttfts, tokens=tokens, chunks=chunks, wall_s=wall, cpu_s=cpu)


PATHS = ("direct", "null_relay", "sidecar")
Rounds = list[dict[str, "Phase"]]  # per round: each path's phase


async def _measure(
    procs: "Processes", concurrency: int, max_tokens: int, phase_s: float, rounds: int
) -> Rounds:
    async with aiohttp.ClientSession() as session:
        await _wait_ready(session, f"{procs.engine_url}/health", procs.engine)
        await _wait_ready(session, f"{procs.null_relay_url}/health", procs.null_relay)
        await _wait_ready(session, f"{procs.metrics_url}/readyz", procs.sidecar)
    urls = {
        "direct": procs.engine_url,
        "null_relay": procs.null_relay_url,
        "sidecar": procs.sidecar_url,
    }
    pids = {"direct": None, "null_relay": procs.null_relay.pid, "sidecar": procs.sidecar.pid}
    rounds_out: Rounds = []
    for round_index in range(rounds):
        shift = round_index % len(PATHS)  # rotate the order: no path always runs first or last
        phases: dict[str, Phase] = {}
        for path in PATHS[shift:] + PATHS[:shift]:
            url = f"{urls[path]}/v1/completions"
            phases[path] = await _phase(url, concurrency, max_tokens, phase_s, pids[path])
        rounds_out.append(phases)
    async with aiohttp.ClientSession() as session, session.get(f"{procs.metrics_url}/debug/hops") as response:
        procs.hops = await response.json() if response.status == 200 else {}
    return rounds_out


@dataclass
class Processes:
    engine: subprocess.Popen[bytes]
    null_relay: subprocess.Popen[bytes]
    sidecar: subprocess.Popen[bytes]
    engine_url: str
    null_relay_url: str
    sidecar_url: str
    metrics_url: str
    hops: dict[str, Any] = field(default_factory=dict)  # the sidecar's /debug/hops after the last round


def measure(concurrency: int, max_tokens: int, phase_s: float, rounds: int) -> tuple[Rounds, dict[str, Any]]:
    """Start an engine, a null relay and a sidecar in front of it, load the three paths in rotated rounds."""
    engine_port, relay_port = _free_port(), _free_port()
    ports = {k: _free_port() for k in ("grpc_port", "http_port", "metrics_port")}
    engine_cmd = os.environ.get("SLOGUARD_BENCH_ENGINE_CMD", DEFAULT_ENGINE_CMD).replace(
        "{port}", str(engine_port)
    )
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    engine_url = f"http://127.0.0.1:{engine_port}"
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "pool": {"name": "bench"},
            "classes": [{"name": "standard", "ttft_s": 60.0, "tpot_s": 10.0, "default": True}],
            "policy": {"name": "fcfs"},
            "limits": {"max_queue_depth": 100_000, "min_in_flight": 1, "max_in_flight": 65536},
            "engine": {"url": engine_url, "scheduling_policy": "fcfs"},
            **ports,
        }
        config_path = Path(tmp) / "sidecar.json"
        config_path.write_text(json.dumps(config))
        sidecar_cmd = [sys.executable, "-m", "sloguard", "--log-level", "WARNING", "sidecar"]
        relay_cmd = [sys.executable, "-m", "sloguard.bench.null_relay", "--port", str(relay_port)]
        with (Path(tmp) / "engine.log").open("wb") as engine_log:  # the engine's access log is loud
            procs = Processes(
                engine=subprocess.Popen(
                    shlex.split(engine_cmd), env=env, stdout=engine_log, stderr=engine_log
                ),
                null_relay=subprocess.Popen([*relay_cmd, "--upstream", engine_url], env=env),
                sidecar=subprocess.Popen(
                    [*sidecar_cmd, "--config", str(config_path), "--host", "127.0.0.1"], env=env
                ),
                engine_url=engine_url,
                null_relay_url=f"http://127.0.0.1:{relay_port}",
                sidecar_url=f"http://127.0.0.1:{ports['http_port']}",
                metrics_url=f"http://127.0.0.1:{ports['metrics_port']}",
            )
            processes = (procs.sidecar, procs.null_relay, procs.engine)
            try:
                measured = asyncio.run(_measure(procs, concurrency, max_tokens, phase_s, rounds))
                return measured, procs.hops
            finally:
                for process in processes:
                    process.terminate()
                for process in processes:
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _added(rounds: Rounds, path: str, q: float) -> list[float]:
    """Per round: `path`'s TTFT quantile minus the direct path's, in ms (paired within the round)."""
    return [r[path].quantile_ms(q) - r["direct"].quantile_ms(q) for r in rounds]


def _per_core(phase: Phase) -> float | None:
    """Tokens streamed per second of the relaying process's CPU time (user + system)."""
    return phase.tokens / phase.cpu_s if phase.cpu_s else None


def run(quick: bool) -> BenchResult:
    concurrency, max_tokens = 100, 128
    rounds, phase_s = (3, 3.0) if quick else (6, 5.0)
    measured, hops = measure(concurrency, max_tokens, phase_s, rounds)
    ratio_p50 = [r["sidecar"].quantile_ms(0.5) / r["direct"].quantile_ms(0.5) for r in measured]
    ratio_p99 = [r["sidecar"].quantile_ms(0.99) / r["direct"].quantile_ms(0.99) for r in measured]
    relay = [v for r in measured if (v := _per_core(r["sidecar"])) is not None]
    null_relay = [v for r in measured if (v := _per_core(r["null_relay"])) is not None]
    data = {
        "added_ttft_p50_ms": round(_median(_added(measured, "sidecar", 0.5)), 3),
        "added_ttft_p99_ms": round(_median(_added(measured, "sidecar", 0.99)), 3),
        "relay_tokens_per_s_per_core": round(_median(relay), 1),
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "phase_s": phase_s,
        "ttft_p50_ratio_median": round(_median(ratio_p50), 3),
        "ttft_p99_ratio_median": round(_median(ratio_p99), 3),
        "null_relay_added_ttft_p50_ms": round(_median(_added(measured, "null_relay", 0.5)), 3),
        "null_relay_added_ttft_p99_ms": round(_median(_added(measured, "null_relay", 0.99)), 3),
        "null_relay_tokens_per_s_per_core": round(_median(null_relay), 1),
        "sidecar_chunks_per_s_per_core": round(
            _median([r["sidecar"].chunks / c for r in measured if (c := r["sidecar"].cpu_s)]), 1
        ),
        "sidecar_tokens_per_chunk": round(
            _median([r["sidecar"].tokens / max(1, r["sidecar"].chunks) for r in measured]), 3
        ),
        "sidecar_hops": hops,
        "per_round": [
            {
                f"{path}_{key}": value
                for path in PATHS
                for key, value in {
                    "ttft_p50_ms": round(r[path].quantile_ms(0.5), 3),
                    "ttft_p99_ms": round(r[path].quantile_ms(0.99), 3),
                    "requests": len(r[path].ttfts_s),
                    "chunks": r[path].chunks,
                    "tokens_per_s": round(r[path].tokens / r[path].wall_s, 1),
                    "cpu_s": r[path].cpu_s,
                }.items()
            }
            for r in measured
        ],
    }
    cores = os.cpu_count()
    lines = [
        f"Workload: {concurrency} closed-loop streams x {max_tokens} tokens, {rounds} rounds of "
        f"{phase_s:.0f} s per path and round, the three paths' order rotated each round (direct "
        "engine; a do-nothing Python relay, bench/null_relay.py; the fcfs sidecar); engine, relays and "
        f"load generator share {cores} cores. CPU: the relaying process's user+system time.",
        "",
        "| round | TTFT p50 ms direct / null relay / sidecar | TTFT p99 ms direct / null relay / sidecar |"
        " tokens/CPU-s null relay / sidecar |",
        "|---|---|---|---|",
    ]
    for index, r in enumerate(measured):
        p50 = " / ".join(f"{r[p].quantile_ms(0.5):.1f}" for p in PATHS)
        p99 = " / ".join(f"{r[p].quantile_ms(0.99):.1f}" for p in PATHS)
        per_core = " / ".join(f"{v:.0f}" if (v := _per_core(r[p])) else "-" for p in PATHS[1:])
        lines.append(f"| {index + 1} | {p50} | {p99} | {per_core} |")
    lines += [
        "",
        "Added TTFT over direct, median over rounds of the paired differences: sidecar p50 "
        f"{data['added_ttft_p50_ms']} ms, p99 {data['added_ttft_p99_ms']} ms (goal p99 <= 2); null relay p50 "
        f"{data['null_relay_added_ttft_p50_ms']} ms, p99 {data['null_relay_added_ttft_p99_ms']} ms. Paired "
        f"ratios sidecar/direct: p50 {data['ttft_p50_ratio_median']}, p99 {data['ttft_p99_ratio_median']}.",
        f"Relay: sidecar {data['relay_tokens_per_s_per_core']} tokens per CPU-second (median over rounds; "
        f"goal >= 20000); null relay {data['null_relay_tokens_per_s_per_core']}. The sidecar relayed "
        f"{data['sidecar_chunks_per_s_per_core']} SSE chunks per CPU-second at "
        f"{data['sidecar_tokens_per_chunk']} tokens per chunk (an engine that falls behind packs tokens).",
        "",
    ]
    if hops.get("hops"):
        lines += [
            "Sidecar hops over the whole run (`GET /debug/hops`, ms):",
            "",
            "| hop | count | p50 | p99 | max |",
            "|---|---|---|---|---|",
        ]
        for name, summary in hops["hops"].items():
            lines.append(
                f"| {name} | {summary['count']} | {summary['p50_ms']:.2f} | {summary['p99_ms']:.2f} "
                f"| {summary['max_ms']:.2f} |"
            )
        lines.append("")
    return BenchResult(data=data, markdown="\n".join(lines))
