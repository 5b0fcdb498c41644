"""engine_pause without vLLM: the pausable clock, finding a server's engine processes in /proc, stopping
and resuming a real process tree, and reading what the API server handed over or aborted off its log."""

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sloguard_testing.engine_pause import (
    PausableClock,
    ProcessTreeControl,
    SimControl,
    UnavailableControl,
    descendants,
    paused,
    process_state,
    throttled,
    wait_until,
)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_the_pausable_clock_stands_still_while_paused_and_goes_on_without_a_jump() -> None:
    wall = FakeClock()
    clock = PausableClock(wall)
    assert clock() == 100.0
    wall.now_s = 101.0
    clock.pause()
    wall.now_s = 105.0
    assert clock() == 101.0
    clock.pause()  # pausing twice changes nothing
    wall.now_s = 107.0
    clock.resume()
    assert clock() == 101.0
    wall.now_s = 108.5
    assert clock() == 102.5
    clock.resume()  # resuming a running clock changes nothing
    assert clock() == 102.5


async def test_paused_resumes_even_when_the_body_fails() -> None:
    clock = PausableClock(FakeClock())
    held: set[str] = {"cmpl-a-0"}
    control = SimControl(clock, held.__contains__)
    with pytest.raises(RuntimeError, match="boom"):
        async with paused(control):
            assert clock.is_paused
            assert control.handed_over("cmpl-a-0") and not control.abort_sent("cmpl-a-0")
            raise RuntimeError("boom")
    assert not clock.is_paused
    held.clear()
    assert control.abort_sent("cmpl-a-0")


def _fake_proc(root: Path, stats: dict[int, str]) -> Path:
    for pid, stat in stats.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(stat)
    (root / "self").mkdir()  # not a pid: skipped
    (root / "77").mkdir()  # a process that exited while /proc was read: no stat, skipped
    return root


def test_descendants_walks_the_whole_tree_and_reads_odd_command_names(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path,
        {
            1: "1 (init) S 0 1 1",
            10: "10 (python) S 1 10 10",
            11: "11 (VLLM::EngineCore (DP0)) S 10 10 10",  # spaces and parentheses in comm
            12: "12 (worker) R 11 10 10",
            20: "20 (other) S 1 20 20",
        },
    )
    assert descendants(10, proc) == [11, 12]
    assert descendants(20, proc) == []
    assert process_state(11, proc) == "S" and process_state(12, proc) == "R"
    assert process_state(99, proc) is None


@pytest.fixture
def process_tree() -> Iterator["subprocess.Popen[bytes]"]:
    """A parent (the "API server") whose child sleeps (the "engine")."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"]
    )
    try:
        yield parent
    finally:
        for pid in descendants(parent.pid):
            subprocess.run(["kill", "-CONT", str(pid)], check=False)
            subprocess.run(["kill", "-KILL", str(pid)], check=False)
        parent.kill()
        parent.wait()


async def test_the_process_tree_control_stops_the_children_only_and_resumes_them(
    process_tree: "subprocess.Popen[bytes]", tmp_path: Path
) -> None:
    await wait_until(lambda: len(descendants(process_tree.pid)) == 1, "the child started", timeout_s=30)
    [child] = descendants(process_tree.pid)
    log = tmp_path / "server.log"
    log.write_text("INFO Added request cmpl-before-0.\n")
    control = ProcessTreeControl(process_tree.pid, log)
    async with paused(control):
        assert process_state(child) in ("T", "t")
        assert process_state(process_tree.pid) not in ("T", "t")  # the API server keeps serving
        assert not control.handed_over("cmpl-before-0")  # only lines logged during this pause count
        with log.open("a") as out:
            out.write("INFO Received request cmpl-x-0: params ...\n")
        assert not control.handed_over("cmpl-x-0") and not control.abort_sent("cmpl-x-0")
        with log.open("a") as out:
            out.write("INFO 12-05 19:00:00 [async_llm.py:578] Added request cmpl-x-0-1f2e.\n")
        assert control.handed_over("cmpl-x-0") and not control.abort_sent("cmpl-x-0")
        with log.open("a") as out:
            out.write("INFO Aborted request(s) cmpl-x-0-1f2e.\nINFO Request cmpl-x-0 aborted.\n")
        assert control.abort_sent("cmpl-x-0") and not control.abort_sent("cmpl-y-0")
    await wait_until(lambda: process_state(child) not in ("T", "t"), "the child resumed", timeout_s=10)


def test_a_server_without_engine_processes_cannot_be_paused(tmp_path: Path) -> None:
    lonely = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "log").write_text("")
        with pytest.raises(RuntimeError, match="no engine process"):
            ProcessTreeControl(lonely.pid, tmp_path / "log").stop()
    finally:
        lonely.kill()
        lonely.wait()


def test_a_server_this_session_did_not_start_says_so() -> None:
    control = UnavailableControl("not started by this session")
    with pytest.raises(RuntimeError, match="not started by this session"):
        control.stop()
    with pytest.raises(RuntimeError, match="not started by this session"):
        control.handed_over("cmpl-x-0")


class RecordingControl:
    """An EngineControl that records the calls, for throttled()."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def stop(self) -> None:
        self.calls.append("stop")

    def resume(self) -> None:
        self.calls.append("resume")

    def handed_over(self, engine_request_id: str) -> bool:
        return True

    def abort_sent(self, engine_request_id: str) -> bool:
        return True


async def test_throttled_runs_the_engine_in_bursts_and_leaves_it_paused() -> None:
    control = RecordingControl()
    async with paused(control):
        async with throttled(control, burst_s=0.0005, rest_s=0.001):
            await wait_until(lambda: control.calls.count("resume") >= 4, "four bursts", timeout_s=30)
        after_throttle = list(control.calls)
    assert after_throttle[0] == "stop" and after_throttle[-2:] == ["stop", "stop"]  # paused in and out
    # strictly alternating: every burst is followed by a stop
    assert after_throttle[:-1] == ["stop"] + ["resume", "stop"] * ((len(after_throttle) - 2) // 2)
    assert control.calls[-1] == "resume"  # paused() resumes at the end


async def test_a_throttled_sim_clock_advances_only_in_bursts() -> None:
    wall = FakeClock()
    clock = PausableClock(wall)
    control = SimControl(clock, lambda _: True)
    async with paused(control):
        wall.now_s += 5.0
        assert clock() == 100.0  # paused: no time passes
        async with throttled(control, burst_s=0.0005, rest_s=0.001):
            await asyncio.sleep(0.01)
        assert clock.is_paused
        wall.now_s += 5.0  # (the fake wall clock did not move during the bursts)
        assert clock() == 100.0
    wall.now_s += 1.0
    assert clock() == 101.0
