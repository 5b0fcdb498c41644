"""The demo's process start (sloguard/demo/runner.py `_start_healthy`): a child that finds its probed port
taken is started again on new ports; any other early exit fails with the end of the child's log."""

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from sloguard.demo import runner

SERVE_200 = """
import http.server, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.mark.timeout(60)
async def test_a_child_whose_port_was_taken_is_started_again_on_new_ports(tmp_path: Path) -> None:
    tries: list[int] = []

    def plan() -> tuple[list[str], str, int]:
        port = runner._free_port()
        tries.append(port)
        if len(tries) == 1:  # the first start loses its port to someone else, as the sidecar reports it
            script = "import sys; print('[Errno 98] bind on 127.0.0.1: address already in use'); sys.exit(2)"
            return [sys.executable, "-c", script], f"http://127.0.0.1:{port}/health", port
        return [sys.executable, "-c", SERVE_200, str(port)], f"http://127.0.0.1:{port}/health", port

    started: list[subprocess.Popen[bytes]] = []
    try:
        async with aiohttp.ClientSession() as session:
            port = await runner._start_healthy(session, plan, tmp_path / "child.log", {}, started)
        assert (len(tries), port) == (2, tries[1])
        assert [p.poll() for p in started] == [2, None]  # both are the caller's to stop
    finally:
        _stop(started)


async def _start_exiting(tmp_path: Path, output: str) -> tuple[str, int]:
    """`_start_healthy` on a child that prints `output` and exits 2 at every start: the error it raised,
    and how many times it started the child."""
    script = f"import sys; print({output!r}); sys.exit(2)"
    started: list[subprocess.Popen[bytes]] = []
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(RuntimeError) as raised:
                await runner._start_healthy(
                    session,
                    lambda: ([sys.executable, "-c", script], "http://127.0.0.1:9/health", None),
                    tmp_path / "child.log",
                    {},
                    started,
                )
        return str(raised.value), len(started)
    finally:
        _stop(started)


@pytest.mark.timeout(60)
async def test_a_child_that_keeps_finding_its_port_taken_fails_after_the_last_try(tmp_path: Path) -> None:
    error, starts = await _start_exiting(tmp_path, "address already in use")
    assert "already in use" in error
    assert starts == runner.PORT_TRIES


@pytest.mark.timeout(60)
async def test_any_other_early_exit_fails_at_once_with_the_end_of_the_log(tmp_path: Path) -> None:
    error, starts = await _start_exiting(tmp_path, "config: no such policy")
    assert "exited with 2" in error
    assert "no such policy" in error
    assert starts == 1
