"""The real-vLLM fixture's failure paths, with fake servers (no vLLM needed): a missing virtualenv, a server
that exits, never answers, or dies on its first request (as eager mode does on AMX CPUs) is restarted once
and said so; one that fails again fails the lookups that need it with its log's path and error lines,
and only those."""

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sloguard_testing import vllm_server
from sloguard_testing.engine_servers import SERVER_CONFIGS
from sloguard_testing.vllm_server import (
    VllmLaunch,
    VllmProcess,
    VllmServers,
    VllmUnavailableError,
    server_args,
    wait_healthy,
)

# A stand-in for a vLLM server: /health answers 200; a completion is served, or kills the process the way
# the eager worker did (an ERROR line, then shutdown lines, exit) when started with "die".
FAKE_SERVER = textwrap.dedent(
    """
    import http.server, json, os, sys
    port, mode = int(sys.argv[1]), sys.argv[2]

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._answer(200, {})

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            if mode == "die":
                print("(EngineCore) ERROR Worker proc VllmWorker-0 died unexpectedly (exit code: None)")
                for i in range(60):
                    print(f"(APIServer) INFO shutdown line {i}")
                sys.stdout.flush()
                os._exit(1)
            self._answer(200, {"choices": [{"text": "ok"}]})

    print("serving", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


@pytest.fixture
def fake_launch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, list[str]]]:
    """Launches start fake servers: `modes[name]` lists each start's mode ("ok" or "die"), in order."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    modes: dict[str, list[str]] = {name: ["ok"] for name in SERVER_CONFIGS}

    def start(
        python: Path, model_dir: Path, root: Path, name: str, log_path: Path, *, eager: bool = False
    ) -> VllmProcess:
        mode = modes[name].pop(0) if len(modes[name]) > 1 else modes[name][0]
        port = vllm_server._free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(script), str(port), mode],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return VllmProcess(name, f"http://127.0.0.1:{port}", process, log_path, eager=eager)

    monkeypatch.setattr(vllm_server, "vllm_python", lambda: Path(sys.executable))
    monkeypatch.setattr(vllm_server, "write_tiny_model", lambda python, out: out.mkdir())
    monkeypatch.setattr(vllm_server, "start_server", start)
    yield modes


@pytest.fixture
def launch(fake_launch: dict[str, list[str]], tmp_path: Path) -> Iterator[VllmLaunch]:
    started = VllmLaunch(log_dir=tmp_path / "logs")
    yield started
    started.stop()


def test_a_missing_virtualenv_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(vllm_server, "VLLM_VENV", tmp_path / "nope")
    with pytest.raises(VllmUnavailableError, match="make vllm-env"):
        vllm_server.vllm_python()


def _process(tmp_path: Path, code: str) -> VllmProcess:
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    return VllmProcess("fcfs", "http://127.0.0.1:9", proc, log_path)  # port 9: nothing answers


def test_a_server_that_exits_is_reported_and_its_log_excerpt_shows_the_cause(tmp_path: Path) -> None:
    code = "print('ValueError: too few blocks'); [print('INFO shutdown', i) for i in range(50)]; exit(3)"
    server = _process(tmp_path, code)
    try:
        with pytest.raises(VllmUnavailableError, match=r"exited with 3"):
            wait_healthy(server, time.monotonic() + 30)
    finally:
        vllm_server.stop_servers([server])
    excerpt = server.log_excerpt()
    assert f"whole log: {server.log_path}" in excerpt
    assert "ValueError: too few blocks" in excerpt  # the cause, though 50 shutdown lines follow it


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    server = _process(tmp_path, "import time; print('still loading', flush=True); time.sleep(60)")
    try:
        with pytest.raises(VllmUnavailableError, match=r"not healthy"):
            wait_healthy(server, time.monotonic() + 1.5)
    finally:
        server.process.kill()
        server.process.wait()


def test_servers_that_serve_are_warmed_up_and_never_restarted(launch: VllmLaunch) -> None:
    urls = {name: launch.server_url(name) for name in SERVER_CONFIGS}
    assert len(set(urls.values())) == len(SERVER_CONFIGS)
    assert launch.server_url("fcfs") == urls["fcfs"]  # looked up again: the same server
    assert launch.restarts == [] and launch.failed == {}


def test_a_server_that_dies_on_its_warm_up_is_restarted_once_and_said_so(
    fake_launch: dict[str, list[str]], launch: VllmLaunch
) -> None:
    fake_launch["priority"] = ["die", "ok"]
    first_log = launch.log_dir / "vllm-priority.log"
    url = launch.server_url("priority")
    assert launch.servers["priority"].base_url == url
    (line,) = launch.restarts
    assert "'priority'" in line and "warm-up" in line and str(first_log) in line
    assert "died unexpectedly" in first_log.read_text()  # the failed server's whole log is kept
    assert launch.server_url("fcfs")  # the others are untouched


def test_eager_first_falls_back_to_compiled_mode(
    monkeypatch: pytest.MonkeyPatch, fake_launch: dict[str, list[str]], tmp_path: Path
) -> None:
    monkeypatch.setattr(vllm_server, "EAGER_FIRST", True)
    fake_launch["fcfs"] = ["die", "ok"]
    launch = VllmLaunch(log_dir=tmp_path / "logs")
    try:
        launch.server_url("fcfs")
        assert not launch.servers["fcfs"].eager
        assert "in compiled mode" in launch.restarts[0]
    finally:
        launch.stop()


def test_a_server_that_fails_again_fails_only_the_lookups_that_need_it(
    fake_launch: dict[str, list[str]], launch: VllmLaunch
) -> None:
    fake_launch["priority_kv"] = ["die"]
    for _ in range(2):  # given up once: the next lookup fails at once, without another restart
        with pytest.raises(VllmUnavailableError) as caught:
            launch.server_url("priority_kv")
        message = str(caught.value)
        assert "already restarted 1 time" in message
        assert str(launch.log_dir / "vllm-priority_kv.restart1.log") in message
        assert "died unexpectedly" in message  # the error line, not only the shutdown lines
    assert len(launch.restarts) == 1
    assert launch.server_url("fcfs")  # the other servers serve
    servers = VllmServers(launch)
    with pytest.raises(pytest.fail.Exception, match="priority_kv"):
        servers["priority_kv"]
    assert servers["priority"].startswith("http://127.0.0.1:")


def test_a_server_that_dies_later_in_the_session_is_restarted_on_its_next_lookup(launch: VllmLaunch) -> None:
    launch.server_url("fcfs")
    vllm_server.stop_servers([launch.servers["fcfs"]])  # it dies between two tests
    url = launch.server_url("fcfs")
    assert launch.servers["fcfs"].process.poll() is None and url == launch.servers["fcfs"].base_url
    assert len(launch.restarts) == 1 and "during the session" in launch.restarts[0]


@pytest.mark.parametrize("name", list(SERVER_CONFIGS))
def test_server_flags_follow_the_configuration(name: str, tmp_path: Path) -> None:
    config = SERVER_CONFIGS[name]
    args = server_args(tmp_path, 1234, config)
    flags = dict(zip(args[2::2], args[3::2], strict=False))
    assert args[:2] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flags["--scheduling-policy"] == config.scheduling_policy
    assert flags["--max-model-len"] == str(config.max_model_len)
    assert flags["--max-num-seqs"] == str(config.max_num_seqs)
    assert ("--num-gpu-blocks-override" in args) == (config.num_gpu_blocks is not None)
    assert "--enforce-eager" not in args  # eager mode dies on AMX CPUs
    assert server_args(tmp_path, 1234, config, eager=True)[-1] == "--enforce-eager"
