"""bench/host_sched.py over a fake /proc: autogroup niceness (read, set, refused) and run-queue wait."""

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sloguard.bench import real_vllm
from sloguard.bench.host_sched import PROC, autogroup_nice, run_queue_wait_s, set_autogroup_nice


def _proc(tmp_path: Path, pid: int, autogroup: str | None, schedstats: dict[int, str]) -> Path:
    base = tmp_path / str(pid)
    (base / "task").mkdir(parents=True)
    if autogroup is not None:
        (base / "autogroup").write_text(autogroup)
    for tid, line in schedstats.items():
        (base / "task" / str(tid)).mkdir()
        (base / "task" / str(tid) / "schedstat").write_text(line)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/autogroup-881 nice -10\n", -10),
        ("/autogroup-3 nice 0\n", 0),
        ("garbage\n", None),
        ("/a nice x", None),
    ],
)
def test_autogroup_nice_reads_the_groups_niceness(tmp_path: Path, text: str, expected: int | None) -> None:
    assert autogroup_nice(7, _proc(tmp_path, 7, text, {})) == expected


def test_no_autogroup_file_means_none(tmp_path: Path) -> None:
    proc = _proc(tmp_path, 7, None, {})
    assert autogroup_nice(7, proc) is None
    assert set_autogroup_nice(7, -10, proc) is None
    assert autogroup_nice(99, proc) is None


def test_set_autogroup_nice_writes_the_niceness(tmp_path: Path) -> None:
    proc = _proc(tmp_path, 7, "/autogroup-5 nice 0\n", {})
    set_autogroup_nice(7, -10, proc)
    assert (proc / "7" / "autogroup").read_text() == "-10\n"  # the kernel takes this, then reports the group


@pytest.mark.parametrize("nice", [-21, 20])
def test_set_autogroup_nice_refuses_a_niceness_out_of_range(tmp_path: Path, nice: int) -> None:
    with pytest.raises(ValueError, match="niceness"):
        set_autogroup_nice(7, nice, _proc(tmp_path, 7, "/autogroup-5 nice 0\n", {}))


def test_run_queue_wait_sums_the_threads_second_schedstat_field(tmp_path: Path) -> None:
    proc = _proc(tmp_path, 7, None, {7: "5000000000 1500000000 40\n", 8: "1 250000000 2\n", 9: "broken\n"})
    assert run_queue_wait_s(7, proc) == pytest.approx(1.75)
    assert run_queue_wait_s(99, proc) == 0.0


def test_run_queue_wait_of_a_busy_process_is_readable_here() -> None:
    if not (PROC / str(os.getpid()) / "task").is_dir():
        pytest.skip("no /proc")
    assert run_queue_wait_s(os.getpid()) >= 0.0


@pytest.mark.skipif(autogroup_nice(os.getpid()) is None, reason="the kernel has no autogroups")
@pytest.mark.parametrize("own_session", [False, True])
def test_spawn_shares_this_sessions_autogroup_unless_asked_for_its_own(
    tmp_path: Path, own_session: bool
) -> None:
    """In this session, a started process is scheduled in this process's autogroup (whose niceness the
    benchmark sets); in a session of its own, in a group of its own. A process group of its own either way."""
    process = real_vllm._spawn(
        [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "log", dict(os.environ), own_session
    )
    try:
        ours = (PROC / str(os.getpid()) / "autogroup").read_text().split()[0]
        theirs = (PROC / str(process.pid) / "autogroup").read_text().split()[0]
        assert (theirs != ours) is own_session
        assert os.getpgid(process.pid) == process.pid
    finally:
        process.kill()
        process.wait(timeout=10)


def test_the_load_generators_group_niceness_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    groups = {os.getpid(): 3}

    def fake_set(pid: int, nice: int, proc: Path = PROC) -> int | None:
        groups[pid] = nice
        return nice

    monkeypatch.setattr(real_vllm, "autogroup_nice", lambda pid, proc=PROC: groups.get(pid))
    monkeypatch.setattr(real_vllm, "set_autogroup_nice", fake_set)
    monkeypatch.setattr(os, "getpriority", lambda which, who: -10)  # the niceness the benchmark runs at
    settings = real_vllm.Settings.of(quick=True)
    with real_vllm._own_group_nice(settings) as inside:
        assert inside == groups[os.getpid()] == -10
    assert groups[os.getpid()] == 3
    off = replace(settings, autogroup=False)
    with real_vllm._own_group_nice(off) as inside:
        assert inside == 3 == groups[os.getpid()]
