"""Holding an engine server's engine still while a test sets up its queue: `paused(server)`.

A conformance test that needs several requests queued *together* (priority order, KV preemption) or a
client to give up while its request is in a known state (abort on disconnect) would otherwise race the
engine: compiled vLLM makes 500 tokens of the tiny model in under a second, and a loaded machine can
stall the test for longer than that. While paused, the server's API front keeps accepting requests and
noticing disconnects, but no engine step runs; on resume, order is decided by the scheduler alone.

  vllm: the engine core and any worker (every descendant of the API server process) get SIGSTOP, and
        SIGCONT on resume. What the API server has handed to the engine, or told it to abort, is read off
        its log (the servers run with --enable-log-requests: "Added request ...", "... aborted").
  sim:  the in-process simulator's clock stops (PausableClock): engine time does not advance, so nothing
        is scheduled; submit and abort act at once, and the engine says which requests it holds.

Used by tests/conformance/test_vllm_api_conformance.py through EngineServer.control
(engine_servers.py builds the sim control, vllm_server.py the vllm one).
"""

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Protocol

STOP_CONFIRM_TIMEOUT_S = 10.0
# throttled(): the engine runs BURST_S, then rests REST_S (about 3 % of the time). A step of the tiny
# model takes well under a millisecond, and a starved API server can take a second to stream 5 chunks:
# at 10 % (3 ms bursts) the engine still finished 500 tokens first in one of six tier runs.
BURST_S = 0.001
REST_S = 0.03


class EngineControl(Protocol):
    """Stops and resumes an engine server's engine, and tells what its API front did meanwhile."""

    def stop(self) -> None:
        """Return once the engine makes no more progress (it is stopped, not just told to stop)."""

    def resume(self) -> None: ...

    def handed_over(self, engine_request_id: str) -> bool:
        """The API front has passed this request to the engine (its headers may come earlier)."""

    def abort_sent(self, engine_request_id: str) -> bool:
        """The API front has told the engine to drop this request (its client went away)."""


@contextlib.asynccontextmanager
async def paused(control: EngineControl) -> AsyncIterator[None]:
    """`async with paused(server.control):` the engine is still inside, and resumes on the way out
    whatever happens."""
    control.stop()
    try:
        yield
    finally:
        control.resume()


def _prefer_this_thread() -> None:
    """Give the calling thread a real-time priority where the process may (root, CAP_SYS_NICE).

    A burst ends when this thread wakes from its sleep to stop the engine. On a loaded machine an
    ordinary thread wakes tens of milliseconds late, and the engine runs for all of that time: enough
    to finish the 500 tokens a test meant to catch mid-stream (seen in CI, five attempts in a row).
    A real-time thread wakes on time; it sleeps nearly always, so it takes nothing from the rest."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: as before
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))


@contextlib.asynccontextmanager
async def throttled(
    control: EngineControl, *, burst_s: float = BURST_S, rest_s: float = REST_S
) -> AsyncIterator[None]:
    """Inside `paused`: let the engine run in short bursts (burst_s, then paused for rest_s) while the
    body waits for what it needs to see (a first token, five chunks), and leave it paused again.

    What a client sees of the engine lags behind it: vLLM's API server turns each engine step into
    chunks more slowly than compiled vLLM makes them (500 tokens of the tiny model in under a second),
    so by the time a client has read a few chunks the engine can have finished the request. Slowed to a
    few per cent, the engine is at most a few bursts ahead of what the client has seen."""
    done = threading.Event()
    failures: list[BaseException] = []

    def cycle() -> None:
        try:
            _prefer_this_thread()
            while not done.is_set():
                control.resume()
                time.sleep(burst_s)
                control.stop()
                done.wait(rest_s)
        except BaseException as exc:  # reported on the way out, never a silently running engine
            failures.append(exc)

    thread = threading.Thread(target=cycle, name="engine-throttle", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        await asyncio.to_thread(thread.join)
        control.stop()  # paused on the way out, whatever the thread did
    if failures:
        raise RuntimeError(f"throttling the engine failed: {failures[0]!r}") from failures[0]


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll `predicate` (a cheap local check) until true; fail with `what` after timeout_s."""
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline_s:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(0.01)


class PausableClock:
    """A monotonic clock that stands still while paused and then goes on from where it stopped."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lost_s = 0.0  # wall time spent paused, not counted
        self._paused_at_s: float | None = None
        self._lock = threading.Lock()  # throttled() pauses and resumes from its own thread

    def __call__(self) -> float:
        with self._lock:
            at_s = self._paused_at_s if self._paused_at_s is not None else self._clock()
            return at_s - self._lost_s

    @property
    def is_paused(self) -> bool:
        return self._paused_at_s is not None

    def pause(self) -> None:
        with self._lock:
            if self._paused_at_s is None:
                self._paused_at_s = self._clock()

    def resume(self) -> None:
        with self._lock:
            if self._paused_at_s is not None:
                self._lost_s += self._clock() - self._paused_at_s
                self._paused_at_s = None


class SimControl:
    """EngineControl of the in-process simulator: its driver's clock is a PausableClock."""

    def __init__(self, clock: PausableClock, has_request: Callable[[str], bool]) -> None:
        self._clock = clock
        self._has_request = has_request

    def stop(self) -> None:
        self._clock.pause()

    def resume(self) -> None:
        self._clock.resume()

    def handed_over(self, engine_request_id: str) -> bool:
        return self._has_request(engine_request_id)

    def abort_sent(self, engine_request_id: str) -> bool:
        return not self._has_request(engine_request_id)


def descendants(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """Every live descendant of `pid` (children, their children, ...), read from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children.get(child, [])
    return sorted(out)


def process_state(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The one-letter state of /proc/PID/stat ("T" when stopped), or None when it has exited."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


class ProcessTreeControl:
    """EngineControl of a real vLLM server: SIGSTOP/SIGCONT for everything below the API server process,
    and the API server's request log (--enable-log-requests) for what it handed over or aborted."""

    def __init__(self, api_server_pid: int, log_path: Path) -> None:
        self.api_server_pid = api_server_pid
        self.log_path = log_path
        self._pids: list[int] = []  # the engine processes, found at the first stop
        self._stopped: list[int] = []
        self._log_from: int | None = None  # the log's size at the first stop: later lines count

    def stop(self) -> None:
        if not self._pids:
            self._pids = descendants(self.api_server_pid)
        pids = self._pids
        if not pids:
            raise RuntimeError(f"the vLLM server (pid {self.api_server_pid}) has no engine process to pause")
        if self._log_from is None:
            self._log_from = self.log_path.stat().st_size
        for pid in pids:
            if pid in self._stopped:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self._stopped.append(pid)
        deadline_s = time.monotonic() + STOP_CONFIRM_TIMEOUT_S
        while any(process_state(pid) not in ("T", "t", None) for pid in self._stopped):
            if time.monotonic() > deadline_s:
                self.resume()
                raise RuntimeError(f"the vLLM engine processes {pids} did not stop")
            time.sleep(0.001)

    def resume(self) -> None:
        for pid in self._stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._stopped = []

    def _log_lines(self) -> Iterator[str]:
        with self.log_path.open("rb") as log:
            log.seek(self._log_from or 0)
            for raw in log:
                yield raw.decode(errors="replace")

    def handed_over(self, engine_request_id: str) -> bool:
        # AsyncLLM logs this after sending the request to the engine core; the id may carry a suffix
        return any("Added request" in line and engine_request_id in line for line in self._log_lines())

    def abort_sent(self, engine_request_id: str) -> bool:
        # "Aborted request(s) ID..." / "Request ID aborted.", both after the abort went to the engine core
        return any(
            engine_request_id in line and ("Aborted request" in line or " aborted." in line)
            for line in self._log_lines()
        )


class UnavailableControl:
    """A server this session did not start (SLOGUARD_VLLM_SERVERS): its engine cannot be paused."""

    def __init__(self, why: str) -> None:
        self.why = why

    def stop(self) -> None:
        raise RuntimeError(self.why)

    def resume(self) -> None:
        return None

    def handed_over(self, engine_request_id: str) -> bool:
        raise RuntimeError(self.why)

    def abort_sent(self, engine_request_id: str) -> bool:
        raise RuntimeError(self.why)
