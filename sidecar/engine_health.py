"""Whether the engine is up, from more than one error: a pure state machine over probe and request results.

The lifecycle (sidecar/lifecycle.py) owns one `EngineHealth`; the service's probe loop
(sidecar/service.py `_probe_engine`) feeds it probe results, the lifecycle feeds it what requests saw. The
engine is down only after `probe_failures_to_down` probes in a row failed: one refused connection or one
slow probe under load (a busy engine's /health can miss its deadline) never refuses traffic by itself. A
request that could not reach the engine even on a fresh connection (engine_client.py retries once) asks
for a probe at once (`probe_due`), so a dead engine is still found within a couple of probe intervals; any
answer from the engine to a request proves it reachable and clears the probe failures.
"""

from dataclasses import dataclass

PROBE_FAILURES_TO_DOWN = 2


@dataclass
class EngineHealth:
    up: bool = True
    probe_failures_to_down: int = PROBE_FAILURES_TO_DOWN
    probe_failures: int = 0  # consecutive failed probes since the engine last answered
    probe_due: bool = False  # a request could not connect: probe now rather than at the next interval

    def __post_init__(self) -> None:
        if self.probe_failures_to_down < 1:
            raise ValueError(f"probe_failures_to_down must be at least 1, got {self.probe_failures_to_down}")

    def on_probe(self, ok: bool) -> bool:
        """A health probe's result; returns whether the engine is up now."""
        self.probe_due = False
        if ok:
            self.probe_failures = 0
            self.up = True
        else:
            self.probe_failures += 1
            if self.probe_failures >= self.probe_failures_to_down:
                self.up = False
        return self.up

    def on_answered(self) -> None:
        """The engine answered a request (any status): it is reachable, whatever the last probe said."""
        self.probe_failures = 0
        self.up = True

    def on_unreachable(self) -> None:
        """A request found no engine even on a fresh connection: not down yet, but probe now."""
        self.probe_due = True

    @property
    def suspect(self) -> bool:
        """Probes should come at the short (down) interval: a probe failed or a request could not connect."""
        return self.probe_due or self.probe_failures > 0 or not self.up
