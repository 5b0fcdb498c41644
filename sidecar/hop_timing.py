"""Where a request's time to first token goes inside the sidecar: per-hop timing (issue 8).

A `HopTimer` is started when the HTTP front (sidecar/http_front.py) takes a request and is marked at each
hop boundary: the front has parsed it (`front_parse`); the policy released it and its task runs again
(`admit_queue`, in sidecar/lifecycle.py: the event loop's wake-up delay is the sidecar's, not the
engine's); the engine's response headers arrived (`engine_connect`) and its first chunk
(`engine_first_chunk`, both in sidecar/engine_client.py); the front wrote the first chunk to the client
(`client_first_write`). Each hop's duration is the time since the previous mark. The front hands the
finished timer to `SidecarMetrics.observe_hops` (sidecar/metrics.py), which feeds the histogram
`sloguard_sidecar_hop_seconds{hop=...}` and a `LatencyWindow` per hop that `GET /debug/hops` on the metrics
port summarises (sidecar/metrics_server.py). Wall-clock `time.perf_counter` by default: these are the
sidecar's own costs, never scaled to a simulated engine's time. Pure apart from the clock.
"""

import time
from collections import deque
from collections.abc import Callable, Iterator
from enum import Enum


class Hop(Enum):
    """The hops in the order a request passes them; each is timed from the previous mark."""

    FRONT_PARSE = "front_parse"  # handler entry -> body read, JSON parsed, headers resolved
    ADMIT_QUEUE = "admit_queue"  # -> admitted, released, and its task running again (loop wake-up included)
    ENGINE_CONNECT = "engine_connect"  # -> the engine's response headers (connection, request sent)
    ENGINE_FIRST_CHUNK = "engine_first_chunk"  # -> the first SSE chunk parsed (the engine's prefill)
    CLIENT_FIRST_WRITE = "client_first_write"  # -> the first chunk handed to the client's socket


HOP_ORDER = tuple(Hop)


class HopTimer:
    """The marks of one request; `durations_s` turns them into per-hop seconds."""

    __slots__ = ("_clock", "_marks", "start_s")

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.start_s = clock()
        self._marks: dict[Hop, float] = {}

    def mark(self, hop: Hop) -> None:
        """The request has just passed `hop` (the first mark of a hop counts)."""
        self._marks.setdefault(hop, self._clock())

    def durations_s(self) -> Iterator[tuple[Hop, float]]:
        """(hop, seconds since the previous mark) for every hop marked, in hop order."""
        previous = self.start_s
        for hop in HOP_ORDER:
            at = self._marks.get(hop)
            if at is not None:
                yield hop, max(0.0, at - previous)
                previous = at


class LatencyWindow:
    """The last `size` samples of one latency, summarised on demand (count, mean, p50, p99, max in ms)."""

    def __init__(self, size: int = 4096) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0  # all samples ever observed, not only the window's

    def observe(self, seconds: float) -> None:
        self._samples.append(seconds)
        self.count += 1

    def clear(self) -> None:
        """Drop the window's samples (`count` keeps every sample ever observed)."""
        self._samples.clear()

    def summary(self) -> dict[str, float | None]:
        """Figures over the window's samples (None while it is empty; JSON has no NaN)."""
        ordered = sorted(self._samples)
        if not ordered:
            return {"count": self.count, "window": 0, "mean_ms": None, "p50_ms": None, "p99_ms": None,
                    "max_ms": None}  # fmt: skip
        return {
            "count": self.count,
            "window": len(ordered),
            "mean_ms": 1000.0 * sum(ordered) / len(ordered),
            "p50_ms": 1000.0 * _quantile(ordered, 0.5),
            "p99_ms": 1000.0 * _quantile(ordered, 0.99),
            "max_ms": 1000.0 * ordered[-1],
        }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
