"""A real Prometheus for tests: backfill OpenMetrics text with promtool, serve it on 127.0.0.1.

`backfilled_prometheus(tmp, text)` runs `promtool tsdb create-blocks-from openmetrics`, starts Debian's
`prometheus` on an ephemeral port over that data directory, waits for `/-/ready` by polling and stops it
(SIGTERM, then kill) on exit. Samples may lie in the future: an instant query at time T sees only
samples at or before T, so a test can lay out a timeline that the operator walks through in real time.
"""

import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def labels_text(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}; see its log in the temp dir")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)  # poll interval, not a wait for a condition
    raise TimeoutError(f"prometheus at {url} not ready after {timeout_s}s")


@contextmanager
def backfilled_prometheus(tmp: Path, openmetrics: str, *, ready_timeout_s: float = 30.0) -> Iterator[str]:
    """The base URL of a Prometheus serving exactly the samples in `openmetrics`."""
    binary, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if binary is None or promtool is None:
        pytest.fail("prometheus/promtool not installed: run `bash scripts/install-system-deps.sh`")
    data = tmp / "data"
    source = tmp / "series.om"
    source.write_text(openmetrics)
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = free_port()
    with (tmp / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=30d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc, ready_timeout_s)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
