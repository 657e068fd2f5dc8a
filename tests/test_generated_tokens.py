"""Cumulative decode tokens generated over time, for a run (`runtime.metrics.cumulative_decode_tokens`)
and for the fluid ODE (`fluid/ode.py`'s running total of D/ΔT), and the comparisons built on them
(`fluidsched drift`, experiment 3). The prefill's first token is counted on neither side."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fluid.batch_time import AffineBatchTime, Linear3BatchTime
from fluid.equilibrium import closed_form
from fluid.ode import PiecewiseRates, simulate_fluid
from fluid.workload import RequestType, Workload
from runtime.kv_blocks import KVBlockManager
from runtime.metrics import cumulative_decode_tokens
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.sim import simulate


def _done(rid, token_times):
    r = Request(rid, 0.0, 8, len(token_times) - 1)
    r.token_times_s = list(token_times)
    r.decode_steps_done = r.output_tokens
    r.completion_s = token_times[-1]
    return r


# --- the run's side -----------------------------------------------------------------------------
def test_a_runs_generated_tokens_skip_the_prefills_token_and_count_a_token_at_its_time():
    a = _done(0, [1.0, 2.0, 3.0, 4.0])  # prefill token at 1, decode tokens at 2, 3, 4
    b = _done(1, [2.0, 2.5])
    unfinished = Request(2, 0.0, 8, 5)
    unfinished.token_times_s = [0.5, 3.5]  # one decode token so far
    grid = [0.0, 1.0, 1.99, 2.0, 2.5, 3.5, 4.0, 9.0]
    reqs = [a, b, unfinished]
    assert cumulative_decode_tokens(reqs, grid).tolist() == [0, 0, 0, 1, 2, 4, 5, 5]
    # completed: a request's l' tokens at its completion (the unfinished one never)
    assert cumulative_decode_tokens(reqs, grid, count="completed").tolist() == [0, 0, 0, 0, 1, 1, 4, 4]
    assert cumulative_decode_tokens([], grid).tolist() == [0] * len(grid)
    with pytest.raises(ValueError):
        cumulative_decode_tokens(reqs, grid, count="prefill")


def test_a_run_with_evictions_generates_exactly_what_it_completes():
    rng = random.Random(3)
    t, reqs = 0.0, []
    for i in range(300):
        t += rng.expovariate(40.0)
        reqs.append(Request(i, t, rng.randint(1, 350), rng.randint(1, 120)))
    result = simulate(make_scheduler("vllm-v1", KVBlockManager(4000, block_size=16)), reqs, AffineBatchTime(0.02, 1e-5))
    assert sum(r.restarts for r in result.requests) > 0  # recomputes happened
    end = [result.end_s]
    total = sum(r.output_tokens for r in reqs)
    assert cumulative_decode_tokens(result.requests, end)[0] == cumulative_decode_tokens(result.requests, end, count="completed")[0] == total
    # before the end, generation leads completion (a request's tokens come before it completes)
    grid = np.linspace(0, result.end_s, 50)
    gen, comp = cumulative_decode_tokens(result.requests, grid), cumulative_decode_tokens(result.requests, grid, count="completed")
    assert np.all(gen >= comp) and np.any(gen > comp)


# --- the ODE's side -----------------------------------------------------------------------------
def test_ode_generated_tokens_of_one_decode_stage_by_hand():
    # l' = 1, ΔT = d0 constant, FCFS with no memory limit: prefill and decode compartments each an
    # exponential delay of mean d0 fed at λ from t = 0; the decode compartment holds
    # λ d0 P(Poisson(t/d0) ≥ 2) and samples a token per iteration, so
    # G(t) = λ (t − 2 d0 + e^{−t/d0} (2 d0 + t)). Counting the prefill's token would add
    # λ (t − d0 (1 − e^{−t/d0})).
    d0, lam = 0.05, 4.0
    w = Workload("one", 10**9, Linear3BatchTime(d0, 0.0, 0.0), (RequestType("a", 10, 1, lam),))
    traj = simulate_fluid(w, 1.0, policy="fcfs", num_points=11)
    t = traj.times_s
    assert traj.generated_decode_tokens == pytest.approx(lam * (t - 2 * d0 + np.exp(-t / d0) * (2 * d0 + t)), rel=1e-6, abs=1e-9)
    assert traj.generation_tokens_per_s[-1] == pytest.approx(lam, rel=1e-6)  # = λ l'


def test_ode_steady_state_generates_throughput_star_and_its_decode_tokens_only():
    w = Workload("one", 50_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5), (RequestType("a", 200, 20, 1.0),))
    w = w.scaled(0.7 * closed_form(w).capacity_scale)
    star = closed_form(w).throughput_star_tokens_per_s
    assert star == pytest.approx(w.types[0].rate_per_s * 20)
    traj = simulate_fluid(w, 120.0, num_points=241)
    late = traj.times_s >= 60.0
    # rate of the running total (exact integral) and the instantaneous D/ΔT agree, both λ l'
    slope = np.diff(traj.generated_decode_tokens[late]) / np.diff(traj.times_s[late])
    assert slope == pytest.approx(np.full(len(slope), star), rel=1e-6)
    assert traj.generation_tokens_per_s[late] == pytest.approx(np.full(int(late.sum()), star), rel=1e-6)


def test_ode_generated_equals_completed_once_drained_and_leads_before():
    types = (RequestType("a", 200, 20, 5.0), RequestType("b", 100, 60, 5.0))
    w = Workload("two", 50_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5), types)
    w = w.scaled(0.6 * closed_form(w).capacity_scale)
    lam = np.array([t.rate_per_s for t in w.types])
    rates = PiecewiseRates(np.array([0.0, 30.0, 50.0]), np.array([lam, 1.5 * lam]))
    traj = simulate_fluid(w, 150.0, rates=rates, thresholds=None, num_points=301)
    offered = 30.0 * lam @ [20, 60] + 20.0 * 1.5 * lam @ [20, 60]
    assert traj.completed_decode_tokens[-1] == pytest.approx(offered, rel=1e-6)
    assert traj.generated_decode_tokens[-1] == pytest.approx(traj.completed_decode_tokens[-1], rel=1e-6)
    assert np.all(traj.generated_decode_tokens >= traj.completed_decode_tokens - 1e-6)
    mid = np.searchsorted(traj.times_s, 40.0)
    assert traj.generated_decode_tokens[mid] > traj.completed_decode_tokens[mid] + 1.0


def test_benchmark_for_requests_exposes_both_counts_and_they_meet_at_the_end():
    from fluid.over_time import benchmark_for_requests

    rng = np.random.default_rng(0)
    arrivals = np.sort(rng.uniform(0, 40, 400))
    kind = rng.integers(0, 2, 400)
    prompts, outputs = np.where(kind == 0, 200, 100), np.where(kind == 0, 20, 60)
    server = Workload("t", 50_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5),
                      (RequestType("a", 200, 20, 5.0), RequestType("b", 100, 60, 5.0)))
    bench = benchmark_for_requests(server, arrivals, prompts, outputs, np.linspace(0, 120, 121), bin_s=4.0)
    assert bench.generated_decode_tokens[-1] == pytest.approx(outputs.sum(), rel=2e-3)
    assert bench.generated_decode_tokens[-1] == pytest.approx(bench.completed_decode_tokens[-1], rel=1e-6)
    assert np.all(np.diff(bench.generated_decode_tokens) >= -1e-6)
    assert bench.to_dict()["generated_decode_tokens"][-1] == bench.generated_decode_tokens[-1]


# --- the comparisons ---------------------------------------------------------------------------
def test_drift_run_record_compares_generated_tokens_first_and_completed_second():
    from fluid.over_time import FluidOverTime
    from validation import drift

    exp = drift.DriftExperiment(name="x", workload="p512d20", policy="wait",
                                profile={"kind": "steps", "edges_s": [0, 10], "scales": [0.5]}, grid_s=1.0)
    # two requests of 4 decode tokens: tokens at 1..4 s and 2..5 s, prefills at 0.5 and 1.5 s
    reqs = [_done(0, [0.5, 1.0, 2.0, 3.0, 4.0]), _done(1, [1.5, 2.0, 3.0, 4.0, 5.0])]
    grid = np.arange(0.0, 7.0)
    fluid_gen = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 8.0, 8.0])  # the fluid generates 2 tokens/s from 0 to 4 s
    fluid_done = np.array([0.0, 0.0, 4.0, 4.0, 8.0, 8.0, 8.0])
    fluid = FluidOverTime(grid, fluid_gen, fluid_done, np.zeros(7), np.zeros(7), np.zeros(7), (), 1.0)
    rec = drift.run_record(exp, "vllm-v1", {}, 0, reqs, None, 0, 6.0, fluid)  # on exp's 1 s grid
    c = rec["curves"]
    assert c["generated_decode_tokens"] == [0, 1, 3, 5, 7, 8, 8]
    assert c["completed_decode_tokens"] == [0, 0, 0, 0, 4, 8, 8]
    # generated / fluid from t = 1 (2 % of 8 tokens): 1/2, 3/4, 5/6, 7/8, 1, 1 -> min 0.5 at 1 s
    assert rec["cumulative_throughput_vs_fluid_min"] == pytest.approx(0.5)
    assert rec["cumulative_throughput_vs_fluid_min_at_s"] == 1.0
    assert rec["cumulative_throughput_vs_fluid_min_after_s"] == 1.0
    # completed / fluid from t = 2: 0/4, 0/4, 4/8, ... -> 0 at 2 s
    assert rec["completed_tokens_vs_fluid_min"] == 0.0 and rec["completed_tokens_vs_fluid_min_at_s"] == 2.0


def test_benchmark_for_requests_solves_thresholds_at_the_busiest_bins_total_rate():
    # 8 requests in [0, 4) s, 20 in [4, 8), two types alternating: bins of 4 s carry 2 and 5 req/s
    # in total, so the thresholds are solved at 5 req/s (the busiest bin, all types together)
    from fluid.over_time import benchmark_for_requests

    arrivals = np.concatenate([np.linspace(0.1, 3.9, 8), np.linspace(4.1, 7.9, 20)])
    kind = np.arange(28) % 2
    prompts, outputs = np.where(kind == 0, 200, 100), np.where(kind == 0, 20, 60)
    server = Workload("t", 50_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5),
                      (RequestType("a", 200, 20, 5.0), RequestType("b", 100, 60, 5.0)))
    bench = benchmark_for_requests(server, arrivals, prompts, outputs, np.linspace(0, 30, 31), bin_s=4.0)
    assert bench.threshold_rate_per_s == pytest.approx(5.0)


def test_benchmark_over_time_solves_thresholds_at_the_busiest_bins_total_rate_by_default():
    # two bins of 4 s: totals 1.5 and 3.0 req/s over the types (the busiest bin: 3.0), while the
    # types' own sums over the bins are 2.0 and 2.5 (a column total would be 2.5)
    from fluid.ode import PiecewiseRates
    from fluid.over_time import benchmark_over_time

    server = Workload("t", 50_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5),
                      (RequestType("a", 200, 20, 1.0), RequestType("b", 100, 60, 1.0)))
    rates = PiecewiseRates(np.array([0.0, 4.0, 8.0]), np.array([[0.5, 1.0], [1.5, 1.5]]))
    bench = benchmark_over_time(server, rates, np.linspace(0, 20, 21))
    assert bench.threshold_rate_per_s == pytest.approx(3.0)
