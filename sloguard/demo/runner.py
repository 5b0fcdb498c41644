"""Runs one arm of the demo: simulated engines, a sidecar in front of each, the workload replayed at them.

Engines are `sloguard sim serve` subprocesses (their own processes, like vLLM), started with
`--time-scale X` (engine time runs X times faster than the wall clock) and `--mean-output-tokens 1`, so a
request's length is exactly what its `min_tokens` asks for (sloguard/demo/workload.py). The sidecars are
`sloguard sidecar` subprocesses too (one event loop each, as in a pod; in-process they starved with the
load generator on a busy 2-core machine), with `--clock-scale X`, so every latency they measure and every
SLO they enforce is in engine seconds, the same seconds as the example SLO classes. This process is the
load generator: it posts to the sidecars' OpenAI fronts (least outstanding requests first), streams the
answers, times them on a clock scaled the same way, and samples the sidecars' queue depth from /metrics.

Everything started here stops when `run_arm` returns or raises (Ctrl-C included): sidecars get SIGTERM
(they drain), then the engines; anything still running after 10 s is killed.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from sloguard.api.metric_names import QUEUE_DEPTH
from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.demo.workload import DemoRequest
from sloguard.sidecar.errors import REASON_HEADER

SAMPLE_INTERVAL_S = 0.25  # wall seconds between samples of queue depth and outcomes
HEALTH_INTERVAL_S = 3600.0
"""The sidecars' engine probe, effectively off while the engine is up: on a CPU-starved laptop a busy
simulated engine can miss the probe's 2 s timeout, and a sidecar would then refuse requests as
`engine_unavailable` for a reason that is the demo machine's, not the policy's. A stream that cannot
connect still marks the engine down, and a sidecar whose engine is down probes it every second
(sidecar/service.py DOWN_PROBE_INTERVAL_S)."""


@dataclass(frozen=True)
class EngineSetup:
    engines: int = 2
    profile: str = "llama-3-8b-a100"
    time_scale: float = 2.0
    max_num_seqs: int = 24


@dataclass(frozen=True)
class ArmSetup:
    """One policy in front of the engines: `name` is the report's, `policy` the sidecar's."""

    name: str
    policy: str
    min_in_flight: int
    max_in_flight: int
    parameters: tuple[tuple[str, Any], ...] = ()


@dataclass
class Record:
    """What the client saw of one request; times on the engine-time clock (only differences matter)."""

    request: DemoRequest
    sent_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    output_tokens: int = 0
    outcome: str | None = None  # completed, rejected, cancelled, failed
    ended_s: float | None = None
    status: int | None = None
    reason: str = ""  # the sidecar's rejection reason (x-sloguard-reason), for rejected requests

    @property
    def ttft_s(self) -> float | None:
        if self.first_token_s is None or self.sent_s is None:
            return None
        return self.first_token_s - self.sent_s

    @property
    def tpot_s(self) -> float | None:
        if self.first_token_s is None or self.last_token_s is None or self.output_tokens < 2:
            return None
        return (self.last_token_s - self.first_token_s) / (self.output_tokens - 1)

    def met(self, slo: SLOClassConfig) -> bool:
        if self.outcome != "completed" or self.ttft_s is None or self.ttft_s > slo.ttft_s:
            return False
        tpot = self.tpot_s
        if tpot is not None and tpot > slo.tpot_s:
            return False
        e2e_s = (self.last_token_s or 0.0) - (self.sent_s or 0.0)
        return slo.deadline_s is None or e2e_s <= slo.deadline_s


@dataclass
class Sample:
    t_s: float  # engine seconds since the replay started
    waiting: int  # sent, no first token yet (in a sidecar's queue or an engine's)
    sidecar_queued: int
    running: int  # streaming tokens


@dataclass
class ArmResult:
    name: str
    records: list[Record]
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    t0_s: float = 0.0  # the replay's zero on the engine-time clock


class ScaledClock:
    """Engine seconds: the wall clock (monotonic) run `scale` times faster, from 0 at construction."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._wall0 = time.monotonic()

    def __call__(self) -> float:
        return (time.monotonic() - self._wall0) * self.scale

    def wall_for(self, engine_s: float) -> float:
        return engine_s / self.scale


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _engine_command(setup: EngineSetup, port: int, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sloguard",
        "--log-level",
        "WARNING",
        "sim",
        "serve",
        "--profile",
        setup.profile,
        "--port",
        str(port),
        "--time-scale",
        str(setup.time_scale),
        "--max-num-seqs",
        str(setup.max_num_seqs),
        "--mean-output-tokens",
        "1",
        "--seed",
        str(seed),
    ]


class _ExitedEarlyError(RuntimeError):
    """A process the demo started exited before it answered its health check."""


async def _wait_healthy(session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes]) -> None:
    """Until `url` answers 200; raises if the process exits (`_ExitedEarlyError`) or 60 s pass."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _ExitedEarlyError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after 60 s")


_T = TypeVar("_T")
PORT_TRIES = 3
"""Starts of one process, each on freshly probed ports, before a port taken by someone else is an error."""


async def _start_healthy(
    session: aiohttp.ClientSession,
    plan: Callable[[], tuple[list[str], str, _T]],
    log_path: Path,
    env: dict[str, str],
    started: list[subprocess.Popen[bytes]],
) -> _T:
    """Start the process `plan()` describes (its command, its health URL and what the caller needs to
    reach it, on ports it probes afresh) and wait until it is healthy; it is appended to `started` so that
    the caller stops it. A port is probed free and then bound by the child a moment later, and another
    process can take it in between (the demo's own client connections draw from the same ephemeral range):
    a child that exits saying its address is in use is started again on new ports, up to PORT_TRIES times.
    Any other early exit raises with the end of its log."""
    attempt = 0
    while True:
        attempt += 1
        command, health_url, reach = plan()
        process = _spawn(command, log_path, env)
        started.append(process)
        try:
            await _wait_healthy(session, health_url, process)
            return reach
        except _ExitedEarlyError as error:
            log = await asyncio.to_thread(log_path.read_text, errors="replace")
            if "already in use" in log and attempt < PORT_TRIES:
                continue
            tail = "\n".join(log.splitlines()[-20:])
            raise RuntimeError(f"{error}; the end of its log ({log_path.name}):\n{tail}") from None


def _spawn(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:  # the engine's access log is loud: keep it out of the terminal
        return subprocess.Popen(command, env=env, stdout=log_file, stderr=log_file)


STOP_GRACE_S = 10.0
"""How long the processes `_stop_processes` signals have, all together, before the rest are killed."""


def _stop_processes(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every process still running, then one shared grace of STOP_GRACE_S for all of them (not
    one each: a Ctrl-C on a loaded machine waited for every slow one in turn), then SIGKILL to the rest."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _sidecar_command(config_path: Path, clock_scale: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sloguard",
        "--log-level",
        "WARNING",
        "sidecar",
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--health-interval-s",
        str(HEALTH_INTERVAL_S),
        "--clock-scale",
        str(clock_scale),
    ]


def _engine_plan(setup: EngineSetup, index: int) -> Callable[[], tuple[list[str], str, str]]:
    """`_start_healthy`'s plan for engine `index`: its command on a fresh port, its health URL, its URL."""

    def plan() -> tuple[list[str], str, str]:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        return _engine_command(setup, port, seed=index), f"{url}/health", url

    return plan


def _sidecar_plan(
    arm: ArmSetup,
    classes: Sequence[SLOClassConfig],
    engine_url: str,
    index: int,
    *,
    tmp: Path,
    clock_scale: float,
) -> Callable[[], tuple[list[str], str, tuple[str, str]]]:
    """`_start_healthy`'s plan for sidecar `index`: its config on fresh ports (written to `tmp`), its command,
    its readiness URL, and its (front, metrics) URLs."""

    def plan() -> tuple[list[str], str, tuple[str, str]]:
        ports = {"grpc_port": _free_port(), "http_port": _free_port(), "metrics_port": _free_port()}
        config_path = tmp / f"sidecar-{index}.json"
        config_path.write_text(json.dumps(_sidecar_config(arm, classes, engine_url, index, ports)))
        metrics = f"http://127.0.0.1:{ports['metrics_port']}"
        front = f"http://127.0.0.1:{ports['http_port']}"
        return _sidecar_command(config_path, clock_scale), f"{metrics}/readyz", (front, metrics)

    return plan


def _sidecar_config(
    arm: ArmSetup, classes: Sequence[SLOClassConfig], engine_url: str, index: int, ports: dict[str, int]
) -> dict[str, Any]:
    return {
        "pool": {"name": f"demo-{index}", "namespace": "demo"},
        "classes": [c.model_dump(mode="json") for c in classes],
        "policy": {"name": arm.policy, "parameters": dict(arm.parameters)},
        "limits": {
            "max_queue_depth": 100_000,
            "min_in_flight": arm.min_in_flight,
            "max_in_flight": arm.max_in_flight,
        },
        "engine": {"url": engine_url, "scheduling_policy": "fcfs"},
        "drain_grace_s": 1.0,
        **ports,
    }


class _Fronts:
    """Least-outstanding-requests choice among the sidecars' HTTP fronts (ties: round robin)."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self.outstanding = [0] * len(urls)
        self._next = 0

    def pick(self) -> int:
        n = len(self.urls)
        order = [(self._next + i) % n for i in range(n)]
        best = min(order, key=lambda i: self.outstanding[i])
        self._next = (best + 1) % n
        return best


async def _send(session: aiohttp.ClientSession, fronts: _Fronts, record: Record, clock: ScaledClock) -> None:
    request = record.request
    body = {
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
        "min_tokens": request.output_tokens - 1,  # the engine then stops at exactly output_tokens
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    front = fronts.pick()
    fronts.outstanding[front] += 1
    record.sent_s = clock()
    try:
        async with session.post(
            f"{fronts.urls[front]}/v1/completions", json=body, headers={"x-slo-class": request.slo_class}
        ) as response:
            record.status = response.status
            if response.status in (429, 503):
                await response.read()
                record.reason = response.headers.get(REASON_HEADER, "")
                record.outcome = "rejected"
                return
            if response.status != 200:
                await response.read()
                record.outcome = "failed"
                return
            done = False
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                now_s = clock()
                if b'"usage":{' in data or b'"error"' in data:  # parse only these: the rest carry tokens
                    payload = json.loads(data)
                    if "error" in payload:
                        break
                    record.output_tokens = int(payload["usage"].get("completion_tokens", 0))
                    if not payload.get("choices"):
                        continue  # the usage-only chunk at the end
                if record.first_token_s is None:
                    record.first_token_s = now_s
                record.last_token_s = now_s
            record.outcome = "completed" if done and record.first_token_s is not None else "failed"
    except asyncio.CancelledError:
        record.outcome = record.outcome or "cancelled"
        raise
    except (aiohttp.ClientError, ValueError):
        record.outcome = "failed"
    finally:
        record.ended_s = clock()
        fronts.outstanding[front] -= 1


async def run_arm(
    arm: ArmSetup,
    setup: EngineSetup,
    workload: Sequence[DemoRequest],
    classes: Sequence[SLOClassConfig],
    *,
    drain_wall_s: float,
    progress: Callable[[str, float, list[Record]], None],
) -> ArmResult:
    """Replay `workload` through fresh engines and sidecars running `arm`'s policy; stop everything."""
    records = [Record(r) for r in workload]
    result = ArmResult(arm.name, records)
    processes: list[subprocess.Popen[bytes]] = []
    sidecars: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    wall0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sloguard-demo-") as tmp:
        try:
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                # engines first: a sidecar started before its engine is up is not ready until its probe
                # sees the engine (within service.DOWN_PROBE_INTERVAL_S), which only slows the start
                urls = [
                    await _start_healthy(
                        session, _engine_plan(setup, index), Path(tmp) / f"engine-{index}.log", env, processes
                    )
                    for index in range(setup.engines)
                ]
                reached = [
                    await _start_healthy(
                        session,
                        _sidecar_plan(arm, classes, url, index, tmp=Path(tmp), clock_scale=setup.time_scale),
                        Path(tmp) / f"sidecar-{index}.log",
                        env,
                        sidecars,
                    )
                    for index, url in enumerate(urls)
                ]
                fronts = [front for front, _ in reached]
                metrics_urls = [metrics for _, metrics in reached]
                await _replay(
                    session,
                    _Fronts(fronts),
                    records,
                    metrics_urls=metrics_urls,
                    clock=ScaledClock(setup.time_scale),
                    result=result,
                    drain_wall_s=drain_wall_s,
                    progress=progress,
                    arm=arm,
                )
        finally:
            _stop_processes(sidecars)  # first: they drain, and nothing new reaches the engines
            _stop_processes(processes)
    result.wall_s = time.monotonic() - wall0
    return result


async def _sidecar_queued(session: aiohttp.ClientSession, metrics_urls: Sequence[str]) -> int | None:
    """Requests waiting in the sidecars' queues (sloguard_queue_depth summed), None if a scrape failed."""
    total = 0.0
    for url in metrics_urls:
        try:
            async with session.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=1)) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        for line in text.splitlines():
            if line.startswith(QUEUE_DEPTH + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def _replay(
    session: aiohttp.ClientSession,
    fronts: _Fronts,
    records: list[Record],
    *,
    metrics_urls: Sequence[str],
    clock: ScaledClock,
    result: ArmResult,
    drain_wall_s: float,
    progress: Callable[[str, float, list[Record]], None],
    arm: ArmSetup,
) -> None:
    tasks: list[asyncio.Task[None]] = []
    end_s = records[-1].request.arrival_s if records else 0.0
    t0_s = result.t0_s = clock()  # the replay's zero on the engine-time clock

    async def sample() -> None:
        last_queued = 0
        while True:
            waiting = running = 0
            for r in records:
                if r.sent_s is not None and r.outcome is None:
                    if r.first_token_s is None:
                        waiting += 1
                    else:
                        running += 1
            scraped = await _sidecar_queued(session, metrics_urls)
            queued = last_queued if scraped is None else scraped
            last_queued = queued
            now_s = clock() - t0_s
            result.samples.append(Sample(now_s, waiting, queued, running))
            progress(arm.name, min(1.0, now_s / end_s) if end_s else 1.0, records)
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    sampler = asyncio.create_task(sample())
    try:
        for record in records:
            delay = clock.wall_for(t0_s + record.request.arrival_s - clock())
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(session, fronts, record, clock)))
        pending = {t for t in tasks if not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=drain_wall_s)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for record in records:
            if record.outcome is None:
                record.outcome = "cancelled"  # never sent (interrupted) or cut off after the drain window
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        progress(arm.name, 1.0, records)
