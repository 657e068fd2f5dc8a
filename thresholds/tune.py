"""`solve --service-rule capped --tune`: pick the slack and prefill chunk (and for Nested WAIT the
segments and η) with the simulator (docs/capped-rule.md, "Tuning").

Each candidate policy is solved as `solve` would, then simulated on the same seeded arrivals
(`runtime.sim`, torch-free). The winner has the lowest mean latency among the candidates whose
decode throughput is at least `TARGET_THROUGHPUT` of throughput* and whose overflow rate
(decode steps paused for want of a block, per decode step) is at most `MAX_OVERFLOW_RATE`; with
no such candidate, the highest throughput wins and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fluid.equilibrium import closed_form
from fluid.errors import FluidSchedError
from fluid.workload import Workload

TARGET_THROUGHPUT = 0.99
MAX_OVERFLOW_RATE = 0.01
SLACKS = (0.0, 0.02, 0.05, 0.1)


@dataclass(frozen=True, slots=True)
class Trial:
    label: str
    solution: object
    options: object | None  # NestedOptions for Nested WAIT
    throughput_ratio: float
    mean_latency_s: float
    overflow_rate: float
    evictions: int

    @property
    def admissible(self) -> bool:
        return self.throughput_ratio >= TARGET_THROUGHPUT and self.overflow_rate <= MAX_OVERFLOW_RATE


def _simulate(workload: Workload, policy, scheduler: str, requests: int, seed: int):
    from runtime.arrivals import make_requests
    from runtime.kv_blocks import KVBlockManager
    from runtime.metrics import summarize, warmup_cut_s
    from runtime.policy_file import runtime_policy
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate

    reqs = make_requests(workload, requests, seed)
    s = make_scheduler(scheduler, KVBlockManager(workload.kv_capacity_tokens), policy=runtime_policy(policy))  # the runtime's block size
    result = simulate(s, reqs, workload.batch_time)
    summary = summarize(result, scheduler=scheduler, warmup_s=warmup_cut_s(reqs, 0.1))
    decode_steps = sum(r.decode_steps_done for r in reqs) or 1
    return summary, s.stats["decodes_paused"] / decode_steps, s.stats["evictions"]


def tune(workload: Workload, nested_options=None, *, requests: int = 2000, seed: int = 0,
         memory_bound: str = "expected", memory_margin: float | None = None) -> tuple[Trial, list[Trial]]:
    """(the chosen trial, every trial). `nested_options` None: WAIT."""
    from thresholds.build import nested_capped_policy, wait_capped_policy
    from thresholds.capped_solve import solve_nested_capped_auto, solve_wait_capped

    point = closed_form(workload)
    star = point.throughput_star_tokens_per_s
    slacks = [s for s in SLACKS if s < 1 - point.load_factor]
    trials: list[Trial] = []
    for slack in slacks:
        variants = [None, "double", "whole"]
        layouts = [None] if nested_options is None else [(None, 0.0), ("auto", 0.0), ("auto", 0.05)]
        for layout in layouts:
            base_chunk = None
            for variant in variants:
                try:
                    if nested_options is None:
                        sol = solve_wait_capped(workload, slack=slack, memory_bound=memory_bound, memory_margin=memory_margin)
                        opts = None
                    else:
                        opts = replace(nested_options, slack=slack, segments=layout[0], eta=layout[1])
                        sol = solve_nested_capped_auto(workload, opts)
                except FluidSchedError:
                    break
                base_chunk = sol.prefill_chunk_tokens if variant is None else base_chunk
                if variant is not None and base_chunk is None:
                    break  # already whole prompts
                chunk = base_chunk if variant is None else (2 * base_chunk if variant == "double" else None)
                sol = replace(sol, prefill_chunk_tokens=chunk)
                if opts is not None:
                    opts = replace(opts, prefill_chunk_tokens=chunk)
                policy = (wait_capped_policy(workload, sol) if opts is None else nested_capped_policy(workload, sol, opts))
                scheduler = "wait-capped" if opts is None else "nested-wait-capped"
                summary, overflow, evictions = _simulate(workload, policy, scheduler, requests, seed)
                label = f"slack {slack:g}, chunk {chunk or 'whole'}" + ("" if opts is None else f", segments {layout[0] or 'types'}, η {layout[1]:g}")
                trials.append(Trial(label, sol, opts, summary.decode_throughput_tokens_per_s / star,
                                    summary.mean_latency_s or float("inf"), overflow, evictions))
    if not trials:
        raise FluidSchedError(f"workload '{workload.name}': no candidate of the tuning grid gives a capped policy")
    good = [t for t in trials if t.admissible]
    best = min(good, key=lambda t: t.mean_latency_s) if good else max(trials, key=lambda t: t.throughput_ratio)
    return best, trials
