"""`sloguard.sim.engine`: a pure, virtual-time model of one vLLM V1 engine.

No clock, no I/O: time is an argument. Used by the HTTP server (`sloguard.sim.server`, real time), the
benchmarks and the cluster simulation (virtual time), and by anything co-simulating a sidecar policy
in front of the engine.

What it models (vLLM 0.32, V1 scheduler; measured facts in shared/reference/vllm-behaviour.md):
iteration-level continuous batching; a token budget per iteration (`max_num_batched_tokens`) and
`max_num_seqs`; chunked prefill; a paged KV cache of `num_gpu_blocks` blocks of `block_size` tokens
(one reserved null block), allocated as tokens are scheduled and freed on finish; preemption by
recompute when a *running* request cannot get a block (victim: the last running request under fcfs,
the worst (priority, arrival) under priority; a waiting request never preempts); a FIFO or
(priority, arrival) waiting queue; automatic prefix caching (block-hashed, shared by reference count,
freed blocks stay cached and are evicted LRU; on by default as in vLLM, used by requests that carry
`prefix_hashes` or `prompt_token_ids`; `sloguard.sim.engine.prefix_cache`). Not modelled: speculative
decoding, LoRA.

API (all times in seconds of virtual time)::

    from sloguard.sim.engine import Engine, EngineConfig, SimRequest
    from sloguard.sim.profiles import load_profile

    profile = load_profile("llama-3-8b-h100")
    engine = Engine(EngineConfig(num_gpu_blocks=profile.default_num_gpu_blocks), profile.step_time())
    engine.submit(SimRequest("r1", prompt_tokens=200, max_tokens=100, ignore_eos=True), now_s=0.0)
    while (t := engine.next_event_time_s()) is not None:     # end of the iteration in flight
        for event in engine.advance_to(t):                   # FirstToken | Preempted | Finished
            ...
    engine.abort("r2", now_s)        # -> Finished(reason "abort") or None; frees its blocks
    engine.snapshot()                # running, waiting, kv blocks used/total, preemptions, steps,
                                     # prefix-cache queries/hits (tokens)
    engine.output_tokens("r1"); engine.token_times_s("r1")   # progress of a request in flight

Rules: `submit`/`abort`/`advance_to` take non-decreasing times. An iteration formed at time x includes
every request submitted at a time <= x, so a co-simulation driver calls `advance_to(t)` and then submits
at t (submit and abort also complete, on their own, the iterations that end before their time; those
events come with the next `advance_to`). `advance_to(t)` completes every iteration ending at or before
t and returns the events in time order; `Finished.token_times_s[i]` is the generation time of output
token i. Results depend only on the inputs and `EngineConfig.seed` (which draws output lengths of
requests that have neither `eos_after_tokens` nor `ignore_eos`).

Plug-in point: `Engine(..., scheduler=MyScheduler())` replaces batch formation (see
`sloguard.sim.engine.scheduler`); `Engine(..., fast=False)` forces the one-iteration-at-a-time reference
stepping that the fast path is tested against.
"""

from sloguard.sim.engine.engine import Engine, EngineConfig
from sloguard.sim.engine.events import EngineEvent, EngineSnapshot, Finished, FirstToken, Preempted
from sloguard.sim.engine.prefix_cache import PrefixCache
from sloguard.sim.engine.request import FinishReason, SimRequest, resolve_output_length
from sloguard.sim.engine.scheduler import BatchScheduler, SchedulingContext, VllmV1Scheduler
from sloguard.sim.engine.state import SchedulingPolicy, SequenceState
from sloguard.sim.engine.step_time import BatchShape, ProfileStepTime, ScaledStepTime, StepTimeModel

__all__ = [
    "BatchScheduler",
    "BatchShape",
    "Engine",
    "EngineConfig",
    "EngineEvent",
    "EngineSnapshot",
    "FinishReason",
    "Finished",
    "FirstToken",
    "Preempted",
    "PrefixCache",
    "ProfileStepTime",
    "ScaledStepTime",
    "SchedulingContext",
    "SchedulingPolicy",
    "SequenceState",
    "SimRequest",
    "StepTimeModel",
    "VllmV1Scheduler",
    "resolve_output_length",
]
