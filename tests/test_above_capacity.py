"""Above capacity no policy beats the fluid LP's optimum by more than noise (issue 4).

Two overloads of the `default` preset: compute-bound (rates × 1.6, load factor 1.25 ≥ 1) and
memory-bound (rates as they are, C cut to 12,000 tokens, below M* ≈ 17,200). In both the fluid LP
sheds load; its decode throughput is an upper bound for every scheduler on the simulated clock.
"""

from __future__ import annotations

import dataclasses

import pytest

from fluid.equilibrium import closed_form
from fluid.lp import solve_lp
from fluid.workload_io import load_workload
from runtime.simrun import SCHEDULERS_WITH_POLICY, SimConfig, run_simulation
from sim_helpers import policy_for, registered_names

NOISE = 0.03  # relative: finite-run noise of a 2,000-request simulation


def _overloads():
    base = load_workload("default")
    compute_bound = base.scaled(1.6)
    memory_bound = dataclasses.replace(base, kv_capacity_tokens=12_000)
    return {"compute-bound": compute_bound, "memory-bound": memory_bound}


OVERLOADS = _overloads()


def test_the_cases_are_overloads_where_the_lp_sheds_load():
    for name, workload in OVERLOADS.items():
        assert not closed_form(workload).stable, name
        lp = solve_lp(workload)
        offered = sum(t.rate_per_s * t.decode for t in workload.types)
        assert lp.throughput_tokens_per_s < 0.97 * offered, name


@pytest.mark.parametrize("case", sorted(OVERLOADS))
@pytest.mark.parametrize("scheduler", registered_names())
def test_no_policy_beats_the_fluid_lp(case, scheduler):
    workload = OVERLOADS[case]
    bound = solve_lp(workload).throughput_tokens_per_s
    policy = policy_for(scheduler, workload) if scheduler in SCHEDULERS_WITH_POLICY else None
    config = SimConfig(workload, scheduler, num_requests=2000, seed=1, policy=policy)
    summary = run_simulation(config).summary
    assert summary.completed == 2000
    assert summary.decode_throughput_tokens_per_s <= bound * (1 + NOISE), (
        f"{scheduler} on the {case} overload: {summary.decode_throughput_tokens_per_s:.1f} tok/s above the "
        f"fluid LP's optimum {bound:.1f}"
    )
