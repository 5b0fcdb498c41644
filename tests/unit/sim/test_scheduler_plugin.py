"""The batch-formation plug-in point: a custom scheduler replaces vLLM's and is stepped exactly."""

from sloguard_testing.sim_engine import finished_by_id, make_engine, toy_step_time

from sloguard.sim.engine import (
    Engine,
    EngineConfig,
    FirstToken,
    SchedulingContext,
    SimRequest,
    VllmV1Scheduler,
)


class OneAdmissionPerIteration:
    """Runs every running request, then admits at most one waiting request per iteration."""

    def schedule(self, ctx: SchedulingContext) -> None:
        for seq in list(ctx.running):
            need = min(seq.num_tokens - seq.num_computed, ctx.token_budget)
            if need > 0 and ctx.try_allocate(seq, need):
                ctx.schedule(seq, need)
        if len(ctx.waiting) and len(ctx.running) < ctx.max_num_seqs:
            head = ctx.waiting.peek()
            need = min(head.num_tokens, ctx.token_budget)
            if need > 0 and ctx.try_allocate(head, need):
                ctx.schedule(ctx.admit(), need)


def _first_token_times(engine: Engine) -> list[float]:
    for i in range(4):
        engine.submit(SimRequest(f"r{i}", prompt_tokens=20, max_tokens=5, ignore_eos=True), 0.0)
    return [e.time_s for e in engine.run_until_idle() if isinstance(e, FirstToken)]


def test_vllm_admits_all_at_once_and_the_plugin_one_per_iteration() -> None:
    config = EngineConfig(num_gpu_blocks=200, max_model_len=1024)
    assert len(set(_first_token_times(Engine(config, toy_step_time())))) == 1
    plugged = Engine(config, toy_step_time(), scheduler=OneAdmissionPerIteration())
    assert not plugged.fast
    assert len(set(_first_token_times(plugged))) == 4


def test_a_subclass_of_the_vllm_scheduler_gives_the_same_results_without_the_fast_path() -> None:
    class Same(VllmV1Scheduler):
        pass

    def lengths(engine: Engine) -> dict[str, list[float]]:
        for i in range(6):
            engine.submit(
                SimRequest(f"r{i}", prompt_tokens=30 * (i + 1), max_tokens=40, ignore_eos=True), 0.01 * i
            )
        return {k: v.token_times_s.tolist() for k, v in finished_by_id(engine.run_until_idle()).items()}

    plain = make_engine()
    sub = Engine(plain.config, toy_step_time(), scheduler=Same())
    assert not sub.fast
    assert lengths(plain) == lengths(sub)
