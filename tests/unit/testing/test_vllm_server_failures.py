"""The real-vLLM fixture's failure paths: a missing virtualenv, or a server that dies or never answers,
is a clear error naming the cause and the server's log (never a silent skip). No vLLM needed."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sloguard_testing import vllm_server
from sloguard_testing.engine_servers import SERVER_CONFIGS
from sloguard_testing.vllm_server import VllmProcess, VllmUnavailableError, server_args, wait_healthy


def test_a_missing_virtualenv_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(vllm_server, "VLLM_VENV", tmp_path / "nope")
    with pytest.raises(VllmUnavailableError, match="make vllm-env"):
        vllm_server.vllm_python()


def _process(tmp_path: Path, code: str) -> VllmProcess:
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    return VllmProcess("fcfs", "http://127.0.0.1:9", proc, log_path)  # port 9: nothing answers


def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    server = _process(tmp_path, "print('ValueError: too few blocks'); raise SystemExit(3)")
    try:
        with pytest.raises(VllmUnavailableError, match=r"exited with 3(.|\n)*too few blocks"):
            wait_healthy({"fcfs": server}, time.monotonic() + 30)
    finally:
        vllm_server.stop_servers([server])


def test_a_server_that_never_answers_times_out_with_its_log(tmp_path: Path) -> None:
    server = _process(tmp_path, "import time; print('still loading', flush=True); time.sleep(60)")
    try:
        with pytest.raises(VllmUnavailableError, match=r"not healthy(.|\n)*still loading"):
            wait_healthy({"fcfs": server}, time.monotonic() + 1.5)
    finally:
        server.process.kill()
        server.process.wait()


@pytest.mark.parametrize("name", list(SERVER_CONFIGS))
def test_server_flags_follow_the_configuration(name: str, tmp_path: Path) -> None:
    config = SERVER_CONFIGS[name]
    args = server_args(tmp_path, 1234, config)
    flags = dict(zip(args[2::2], args[3::2], strict=False))
    assert args[:2] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flags["--scheduling-policy"] == config.scheduling_policy
    assert flags["--max-num-seqs"] == str(config.max_num_seqs)
    assert flags["--max-model-len"] == str(config.max_model_len)
    assert ("--num-gpu-blocks-override" in args) == (config.num_gpu_blocks is not None)
