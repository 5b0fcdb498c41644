"""vLLM V0's default batch formation (`_schedule_default`, no chunked prefill) as an engine plug-in.

The engine the SCORPIO paper compared against ("vLLM FCFS", V0 at commit 635b897) formed each iteration
either from prefills or from decodes: waiting requests first, in FIFO order, while the prefill token
budget, seats and KV blocks last; only when no prefill was scheduled, one decode token for every running
request (preempting the last running request by recompute when KV runs out). Every arrival's prefill
therefore stalls all running decodes for one iteration, which is what makes V0's TPOT collapse under
load. Used by the scorpio benchmark as `fcfs-v0`, beside vLLM V1's own scheduler (`fcfs`).
"""

from sloguard.sim.engine.scheduler import SchedulingContext


class VllmV0Scheduler:
    def __init__(self, *, prefill_budget_tokens: int = 1024) -> None:
        self.prefill_budget_tokens = prefill_budget_tokens

    def schedule(self, ctx: SchedulingContext) -> None:
        budget = min(self.prefill_budget_tokens, ctx.token_budget)
        scheduled_any = False
        while len(ctx.waiting) and len(ctx.running) < ctx.max_num_seqs:
            head = ctx.waiting.peek()
            need = head.num_tokens - head.num_computed
            if need > budget and (scheduled_any or need > ctx.token_budget):
                break  # a lone recompute longer than the prefill budget still runs (see scorpio_engine)
            if not ctx.try_allocate(head, need):
                break
            seq = ctx.admit()
            ctx.schedule(seq, need)
            budget -= need
            scheduled_any = True
        if scheduled_any:
            return
        index = 0
        while index < len(ctx.running):
            seq = ctx.running[index]
            need = seq.num_tokens - seq.num_computed
            preempted_self = False
            while not ctx.try_allocate(seq, need):
                victim = ctx.running[-1]
                ctx.preempt(victim)
                if victim is seq:
                    preempted_self = True
                    break
            if preempted_self:
                break
            ctx.schedule(seq, need)
            index += 1
