"""One pod of the simulated cluster: a `SimulatedReplica` plus its lifecycle and an end-of-request log.

Used only by `sloguard.sim.cluster.cluster`. The pod is created (GPU held from then on), becomes ready
after the start-up time (only then does the router send it traffic), may be drained (it admits nothing
new and finishes what it holds) and is removed. `ended` lists each request's record as it ends, so the
cluster reads new records without scanning; `generated_tokens` is vLLM's generation counter.
"""

from enum import StrEnum

from sloguard.sidecar.core.policy import Policy, Rejected
from sloguard.sim.cosim import RequestRecord, SimulatedReplica
from sloguard.sim.engine import Engine, Finished


class Phase(StrEnum):
    STARTING = "starting"  # created, model loading: holds a GPU, takes no traffic
    READY = "ready"  # serving
    DRAINING = "draining"  # picked for removal: admits nothing, finishes what it holds
    REMOVED = "removed"


class ClusterReplica(SimulatedReplica):
    def __init__(
        self,
        name: str,
        policy: Policy,
        engine: Engine,
        *,
        block_size: int,
        in_flight_cap: int,
        created_s: float,
        ready_s: float,
        progress_interval_s: float,
    ) -> None:
        super().__init__(
            policy,
            engine,
            block_size=block_size,
            in_flight_cap=in_flight_cap,
            progress_interval_s=progress_interval_s,
        )
        self.name = name
        self.created_s = created_s
        self.ready_s = ready_s
        self.phase = Phase.STARTING if ready_s > created_s else Phase.READY
        self.drain_started_s: float | None = None
        self.removed_s: float | None = None
        self.ended: list[RequestRecord] = []  # records in the order the requests ended
        self.finished_tokens = 0
        self.open_by_class: dict[str, int] = {}

    @property
    def serving(self) -> bool:
        return self.phase is Phase.READY

    @property
    def queued(self) -> int:
        """Requests admitted by the sidecar and not yet released to the engine."""
        return self.open_requests - len(self._in_flight)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def generated_tokens(self) -> int:
        """Output tokens generated so far (finished requests plus progress of those in flight)."""
        return self.finished_tokens + sum(self.engine.output_tokens(r) for r in self._in_flight)

    def gpu_seconds(self, until_s: float) -> float:
        end = self.removed_s if self.removed_s is not None else until_s
        return max(0.0, end - self.created_s)

    def note_routed(self, slo_class: str) -> None:
        self.open_by_class[slo_class] = self.open_by_class.get(slo_class, 0) + 1

    def _note_ended(self, request_id: str) -> None:
        record = self.records[request_id]
        self.ended.append(record)
        self.finished_tokens += record.output_tokens
        self.open_by_class[record.slo_class] -= 1

    def _on_finished(self, event: Finished) -> None:
        super()._on_finished(event)
        self._note_ended(event.request_id)

    def _end_rejected(self, rejected: Rejected, now_s: float) -> None:
        super()._end_rejected(rejected, now_s)
        self._note_ended(rejected.request_id)
