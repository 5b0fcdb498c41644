"""Event-loop lag: how late the sidecar's single event loop runs a timer (issue 8).

Every callback in the sidecar (reading the engine, writing to clients, admitting) waits its turn on one
loop; when the loop is busy, a token that has arrived waits too. `run_loop_lag` sleeps `interval_s` again
and again and reports how much later than asked each sleep ended, to `observe` (the service passes
`SidecarMetrics.observe_loop_lag`: the histogram `sloguard_event_loop_lag_seconds` and the `/debug/hops`
summary). Started by sidecar/service.py.
"""

import asyncio
import time
from collections.abc import Callable

LOOP_LAG_INTERVAL_S = 0.05


async def run_loop_lag(
    observe: Callable[[float], None],
    interval_s: float = LOOP_LAG_INTERVAL_S,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Report each sleep's lateness in seconds (never negative) until cancelled."""
    while True:
        start_s = clock()
        await asyncio.sleep(interval_s)
        observe(max(0.0, clock() - start_s - interval_s))
