"""Linux scheduler facts for the wall-clock benchmarks: autogroup niceness and run-queue wait, from /proc.

Used by bench/real_vllm.py. On a kernel with `sched_autogroup_enabled` (this project's machines), every
session (`setsid`, `start_new_session=True`) is its own scheduling group, and CFS shares the CPU fairly
between *groups*: a process's niceness only orders it against processes of its own session. A job at nice
19 in another engineer's session therefore gets a whole group's share, as much as vLLM's session at -10
(measured 00:00 UTC: while another session's nice-19 job ran, the `sloguard` sidecar's threads
sat runnable but unscheduled for 11.5 s, summed, of a 14 s run and ran 1.7 s). A group's weight is set by
writing a niceness to /proc/PID/autogroup (`set_autogroup_nice`; a negative one needs CAP_SYS_NICE);
bench/real_vllm.py runs vLLM and the sidecars in its own session and sets that group's niceness.

`run_queue_wait_s` reads the time a process's threads spent runnable but waiting for a CPU
(/proc/PID/task/TID/schedstat, second field, nanoseconds): a loop that lags while this grows is starved of
CPU; one that lags while it does not is blocked.
"""

import contextlib
from pathlib import Path

PROC = Path("/proc")


def autogroup_nice(pid: int, proc: Path = PROC) -> int | None:
    """The niceness of `pid`'s autogroup ("/autogroup-123 nice -10"); None where there is no autogroup."""
    try:
        fields = (proc / str(pid) / "autogroup").read_text().split()
    except OSError:
        return None
    if len(fields) != 3 or fields[1] != "nice":
        return None
    try:
        return int(fields[2])
    except ValueError:
        return None


def set_autogroup_nice(pid: int, nice: int, proc: Path = PROC) -> int | None:
    """Give `pid`'s autogroup (its whole session) niceness `nice` where the host allows it; returns the
    niceness in effect afterwards (None without autogroups)."""
    if not -20 <= nice <= 19:
        raise ValueError(f"niceness must be in [-20, 19], got {nice}")
    with contextlib.suppress(OSError):  # no autogroups, no CAP_SYS_NICE, or the process is gone
        (proc / str(pid) / "autogroup").write_text(f"{nice}\n")
    return autogroup_nice(pid, proc)


def run_queue_wait_s(pid: int, proc: Path = PROC) -> float:
    """Seconds `pid`'s threads (those alive now) have spent runnable, waiting for a CPU; 0 once it is gone."""
    total_ns = 0
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total_ns += int((task / "schedstat").read_text().split()[1])
    return total_ns / 1e9
