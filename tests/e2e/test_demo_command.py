"""`sloguard demo` end to end: real engines, sidecars and load generator, a short replay, then the JSON.

Every request must end exactly once (the outcomes add up to the requests) under both policies, and
everything the demo started must be gone when it exits, also after Ctrl-C (SIGINT). The engines it
spawns inherit the environment, so a marker variable finds any that survived.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SLOGUARD = Path(sys.executable).parent / "sloguard"
CLASSES = {"interactive", "standard", "batch"}
OUTCOMES = {"completed", "rejected", "cancelled", "failed"}


def _env(marker: str) -> dict[str, str]:
    return {**os.environ, "PYTHONSAFEPATH": "1", "SLOGUARD_TEST_MARKER": marker}


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"SLOGUARD_TEST_MARKER={marker}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _wait_gone(marker: str, timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.timeout(180)
def test_demo_writes_both_policies_and_every_request_ends_once(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    out = tmp_path / "demo.json"
    completed = subprocess.run(
        [
            str(SLOGUARD),
            "demo",
            "--duration-s",
            "2",
            "--time-scale",
            "4",  # a 8 engine-second window, requests finish four times faster
            "--json",
            str(out),
            "--results-dir",
            str(tmp_path / "results"),
        ],
        env=_env(marker),
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures["policies"]) == {"sloguard", "fcfs"}
    requests = {name: p["requests"] for name, p in figures["policies"].items()}
    assert requests["sloguard"] == requests["fcfs"] > 0  # the same workload through both
    for name, policy in figures["policies"].items():
        assert set(policy["outcomes"]) == OUTCOMES
        assert sum(policy["outcomes"].values()) == policy["requests"], name
        assert 0.0 <= policy["attainment"] <= 1.0 and policy["goodput_rps"] >= 0.0
        assert set(policy["per_class"]) == CLASSES
        for per_class in policy["per_class"].values():
            assert set(per_class) >= {"attainment", "ttft_p99_ms", "tpot_p99_ms"}
        assert sum(c["requests"] for c in policy["per_class"].values()) == policy["requests"]
    assert (tmp_path / "results" / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sloguard attain" in completed.stdout and "fcfs attain" in completed.stdout
    assert _wait_gone(marker) == []


@pytest.mark.timeout(90)
def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    # Started as a terminal starts it. A shell without job control (a CI script run with `&`) starts its
    # background commands with SIGINT ignored; a child inherits that, Python then installs no
    # KeyboardInterrupt handler, and the demo would run on through the test's Ctrl-C. A handled signal
    # is reset to its default in the child, so handle it here while starting the demo.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [str(SLOGUARD), "demo", "--duration-s", "30", "--results-dir", str(tmp_path)],
            env=_env(marker),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        signal.signal(signal.SIGINT, before)
    try:
        assert process.stderr is not None
        seen = b""
        while b"sent " not in seen:  # the replay has started: engines and sidecars are up
            chunk = process.stderr.read1(4096)  # type: ignore[attr-defined]
            assert chunk, f"demo exited early (rc {process.wait()}): {seen[-3000:]!r}"
            seen += chunk
        engines = [pid for pid in _processes_with(marker) if pid != process.pid]
        assert engines, "no engine processes found"
        after: list[bytes] = []  # what it writes after the signal, read on (a full pipe would block it)
        stderr = process.stderr
        reader = threading.Thread(target=lambda: after.extend(iter(stderr.readline, b"")), daemon=True)
        reader.start()
        process.send_signal(signal.SIGINT)
        try:
            rc = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not stop within 60 s of Ctrl-C; it wrote: {b''.join(after)[-3000:]!r}")
        assert rc == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert _wait_gone(marker) == []
    assert not (tmp_path / "demo.json").exists()  # an interrupted run reports nothing
