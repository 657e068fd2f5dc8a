"""Invariants of the simulator over random small workloads and every registered policy.

KV in use never exceeds C; every request completes exactly once; decode tokens equal output
lengths; the same seed gives identical results; Little's law on a long run.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.arrivals import make_requests
from runtime.metrics import mean_in_system
from runtime.sim import simulate
from sim_helpers import build_scheduler, registered_names, small_workload

NAMES = registered_names()

workloads = st.builds(
    lambda lengths, rates, cap, block: (small_workload(lengths, rates[: len(lengths)], cap), block),
    st.lists(st.tuples(st.integers(1, 60), st.integers(1, 40)), min_size=1, max_size=3),
    st.lists(st.floats(2.0, 60.0), min_size=3, max_size=3),
    st.integers(600, 3000),
    st.sampled_from([1, 16]),
)


def _fingerprint(requests):
    return [(r.request_id, r.completion_s, r.restarts, tuple(r.token_times_s)) for r in requests]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=workloads, seed=st.integers(0, 2**16))
def test_every_policy_keeps_the_invariants(name, case, seed):
    workload, block = case
    requests = make_requests(workload, 60, seed)
    result = simulate(build_scheduler(name, workload, block), requests, workload.batch_time, audit=True)
    capacity = workload.kv_capacity_tokens
    assert max(result.steps.kv_used_tokens) <= capacity
    assert result.peak_kv_tokens <= capacity
    ids = [r.request_id for r in result.requests]
    assert sorted(ids) == list(range(60))  # each request exactly once
    for r in result.requests:
        assert r.completion_s is not None, f"{name}: request {r.request_id} never completed"
        assert r.decode_steps_done == r.output_tokens
        assert len(r.token_times_s) == r.output_tokens + 1  # first token + one per decode stage
        assert r.token_times_s == sorted(r.token_times_s)
        assert r.completion_s == r.token_times_s[-1] >= r.arrival_s
        assert len(r.eviction_times_s) == r.restarts
    decode_tokens = sum(len(r.token_times_s) - 1 for r in result.requests)
    assert decode_tokens == sum(r.output_tokens for r in result.requests)
    assert sum(result.steps.new_tokens) >= decode_tokens + sum(r.prompt_tokens for r in result.requests)
    # same seed, fresh requests and scheduler: identical results
    again = simulate(build_scheduler(name, workload, block), make_requests(workload, 60, seed), workload.batch_time)
    assert _fingerprint(again.requests) == _fingerprint(result.requests)
    assert again.steps.start_s == result.steps.start_s


@pytest.mark.parametrize("name", [n for n in ("sarathi", "fcfs", "wait") if n in NAMES])
def test_littles_law_on_a_long_run(name):
    """Mean number in system over a steady window = arrival rate λ × mean time in system."""
    workload = small_workload([(40, 30), (20, 60)], [6.0, 4.0], capacity_tokens=20000, d0_s=0.01, d1_s=2e-6)
    requests = make_requests(workload, 8000, seed=3)
    simulate(build_scheduler(name, workload), requests, workload.batch_time)
    rate = workload.total_rate_per_s
    last_arrival = requests[-1].arrival_s
    start, stop = 0.1 * last_arrival, 0.9 * last_arrival
    mean_number = mean_in_system(requests, start, stop)
    # requests arriving in the window, their mean sojourn (the stationary W)
    sojourn = np.mean([r.completion_s - r.arrival_s for r in requests if start <= r.arrival_s <= stop])
    assert mean_number == pytest.approx(rate * sojourn, rel=0.04)


def test_wait_below_capacity_reaches_the_fluid_throughput():
    """arXiv 2504.11320: below capacity WAIT's throughput is within 2 % of throughput* = Σ λ_j l'_j,
    and its memory stays within M^π (token-level blocks, the paper's memory model)."""
    pytest.importorskip("thresholds.wait")
    from fluid.equilibrium import closed_form
    from runtime.policy_file import policy_from_dict
    from runtime.simrun import SimConfig, run_simulation
    from thresholds.build import wait_policy
    from thresholds.wait import solve_wait

    workload = small_workload([(20, 10), (40, 30)], [20.0, 10.0], capacity_tokens=20000, d0_s=0.01, d1_s=1e-6)
    solution = solve_wait(workload)
    policy = policy_from_dict(wait_policy(workload, solution).to_dict())
    summary = run_simulation(SimConfig(workload, "wait", 20000, seed=1, block_size=1, policy=policy)).summary
    assert summary.decode_throughput_tokens_per_s == pytest.approx(closed_form(workload).throughput_star_tokens_per_s, rel=0.02)
    assert summary.peak_kv_tokens <= solution.memory_policy_tokens
    assert summary.restarts == 0
