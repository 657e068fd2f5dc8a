"""The fluid ODE: settles at the LP / closed-form equilibrium; time-varying rates; overload; errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluid.batch_time import AffineBatchTime, Linear3BatchTime
from fluid.equilibrium import closed_form
from fluid.errors import InputError, UnstableWorkloadError
from fluid.lp import solve_lp
from fluid.ode import PiecewiseRates, simulate_fluid
from fluid.workload import RequestType, Workload


def _two_types(scale: float = 1.0) -> Workload:
    types = (RequestType("short", 512, 20, 20.0), RequestType("long", 512, 200, 3.0))
    return Workload("two", 137_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5), types).scaled(scale)


@st.composite
def small_stable_workloads(draw):
    m = draw(st.integers(1, 3))
    types = tuple(
        RequestType(f"t{j}", draw(st.integers(1, 600)), draw(st.integers(1, 60)), draw(st.floats(0.5, 30.0)))
        for j in range(m)
    )
    w = Workload("r", draw(st.integers(5_000, 500_000)), Linear3BatchTime(draw(st.floats(0.005, 0.03)),
                 draw(st.floats(0.0, 5e-7)), draw(st.floats(0.0, 5e-5))), types)
    return w.scaled(closed_form(w).capacity_scale * draw(st.floats(0.1, 0.85)))


@settings(max_examples=6, deadline=None)
@given(small_stable_workloads(), st.sampled_from(["wait", "fcfs"]))
def test_constant_rates_settle_at_the_lp_equilibrium(w, policy):
    lp = solve_lp(w)
    life_s = max(t.decode + 1 for t in w.types) * lp.iteration_time_s
    tr = simulate_fluid(w, 60 * life_s, policy=policy, num_points=50)
    assert tr.final_memory_tokens == pytest.approx(lp.memory_tokens, rel=1e-3)
    assert tr.final_throughput_tokens_per_s == pytest.approx(lp.throughput_tokens_per_s, rel=1e-3)
    assert tr.final_iteration_time_s == pytest.approx(lp.iteration_time_s, rel=1e-3)
    assert tr.queue_prompts[-1] < 1e-3 * sum(t.rate_per_s for t in w.types) * life_s


def test_compartments_change_the_transient_not_the_fixed_point():
    w = _two_types()
    p = closed_form(w)
    coarse = simulate_fluid(w, 120, max_compartments=2, num_points=20)
    fine = simulate_fluid(w, 120, max_compartments=64, num_points=20)
    for tr in (coarse, fine):
        assert tr.final_memory_tokens == pytest.approx(p.memory_star_tokens, rel=1e-3)
    assert not np.allclose(coarse.memory_tokens[1:5], fine.memory_tokens[1:5], rtol=1e-3)


def test_piecewise_rates_follow_the_profile_then_drain():
    w = _two_types()
    lam = np.array([t.rate_per_s for t in w.types])
    profile = PiecewiseRates(np.array([0.0, 40.0, 80.0]), np.vstack([lam, 0.5 * lam]))
    tr = simulate_fluid(w, 140.0, rates=profile, num_points=141)
    at = lambda s: int(np.argmin(np.abs(tr.times_s - s)))  # noqa: E731
    assert tr.memory_tokens[at(40)] == pytest.approx(closed_form(w).memory_star_tokens, rel=2e-2)
    assert tr.memory_tokens[at(80)] == pytest.approx(closed_form(w.scaled(0.5)).memory_star_tokens, rel=2e-2)
    assert tr.memory_tokens[-1] < 1e-2 * closed_form(w).memory_star_tokens  # no arrivals after 80 s
    total = PiecewiseRates.from_total([0.0, 1.0], [10.0], [3, 1])
    assert np.allclose(total(0.5), [7.5, 2.5]) and np.allclose(total(2.0), 0.0)
    starts = np.array([0.0, 2.0, 4.0])
    prof = PiecewiseRates.from_rate_profile(starts, [1.0, 3.0, 2.0], 2.0, [1, 1])
    assert np.allclose(prof.edges_s, [0.0, 2.0, 4.0, 6.0]) and np.allclose(prof(5.0), [1.0, 1.0])


def test_callable_rates_equal_constant_rates():
    w = _two_types()
    lam = np.array([t.rate_per_s for t in w.types])
    a = simulate_fluid(w, 20.0, num_points=5)
    b = simulate_fluid(w, 20.0, rates=lambda t: lam, num_points=5)
    assert np.allclose(a.memory_tokens, b.memory_tokens, rtol=1e-6)


def test_overload_respects_memory_and_fcfs_evicts():
    w = Workload("x", 12, AffineBatchTime(1.0, 0.0), (RequestType("a", 1, 1, 4.0),)).scaled(1.5)
    for policy in ("fcfs",):
        tr = simulate_fluid(w, 200.0, policy=policy)
        assert tr.memory_tokens.max() <= 12 * 1.01
        assert tr.queue_prompts[-1] > 10  # the excess waits
    # a long-decode type under greedy admission: memory grows after admission, so FCFS must evict
    big = _two_types(3.0)
    tr = simulate_fluid(big, 60.0, policy="fcfs")
    assert tr.evicted_rate_per_s.max() > 0
    assert tr.memory_tokens.max() <= big.kv_capacity_tokens * 1.01
    assert tr.final_throughput_tokens_per_s <= solve_lp(big).throughput_tokens_per_s * (1 + 1e-3)


def test_bad_inputs():
    w = _two_types()
    with pytest.raises(InputError, match="policy"):
        simulate_fluid(w, 1.0, policy="lifo")
    with pytest.raises(InputError, match="duration_s"):
        simulate_fluid(w, -1.0)
    with pytest.raises(InputError, match="thresholds"):
        simulate_fluid(w, 1.0, thresholds=[1.0])
    with pytest.raises(InputError, match="edges"):
        PiecewiseRates(np.array([0.0, 1.0]), np.ones((2, 2)))
    with pytest.raises(InputError, match="non-negative"):
        PiecewiseRates(np.array([0.0, 1.0]), -np.ones((1, 2)))
    with pytest.raises(UnstableWorkloadError, match="load factor"):
        simulate_fluid(_two_types(3.0), 1.0, policy="wait")


@pytest.mark.parametrize("policy", ["fcfs", "wait"])
def test_prompts_are_conserved_evicted_ones_rejoin_the_queue(policy):
    # arrived = queued + resident + completed at every sample, also while FCFS evicts (an evicted
    # prompt leaves the compartments and must reappear in the queue, not vanish)
    w = _two_types(3.0) if policy == "fcfs" else _two_types(0.8)
    tr = simulate_fluid(w, 60.0, policy=policy, num_points=61)
    if policy == "fcfs":
        assert tr.evicted_rate_per_s.max() > 0.1  # the check bites: prompts are being evicted
    queued = np.clip(tr.queue_prompts, 0.0, None)
    total = queued + tr.resident_prompts + tr.completed_prompts
    assert tr.arrived_prompts[-1] == pytest.approx(60.0 * sum(t.rate_per_s for t in w.types), rel=1e-6)
    assert np.allclose(total, tr.arrived_prompts, rtol=1e-5, atol=1e-3)
    assert tr.completed_prompts[-1] > 0.3 * tr.arrived_prompts[-1]  # the totals are not all queue


def test_piecewise_rates_at_their_edges():
    prof = PiecewiseRates(np.array([0.0, 1.0, 3.0]), np.array([[2.0, 1.0], [4.0, 0.0]]))
    assert np.array_equal(prof(0.0), [2.0, 1.0])  # a bin is [left, right)
    assert np.array_equal(prof(1.0), [4.0, 0.0])
    assert np.array_equal(prof(2.999), [4.0, 0.0])
    assert np.array_equal(prof(3.0), [0.0, 0.0]) and np.array_equal(prof(-0.5), [0.0, 0.0])  # 0 outside
    with pytest.raises(InputError, match="strictly increasing"):
        PiecewiseRates(np.array([0.0, 1.0, 1.0]), np.ones((2, 2)))
    with pytest.raises(InputError, match="finite"):
        PiecewiseRates(np.array([0.0, np.inf]), np.ones((1, 2)))
    assert PiecewiseRates(np.array([0.0, 1.0]), np.zeros((1, 2)))(0.5).sum() == 0.0  # zero rates are allowed
    with pytest.raises(InputError, match="shares"):
        PiecewiseRates.from_total([0.0, 1.0], [10.0], [1.0, -0.5])
    with pytest.raises(InputError, match="shares"):
        PiecewiseRates.from_total([0.0, 1.0], [10.0], [0.0, 0.0])


def test_ode_option_guards():
    w = _two_types()
    with pytest.raises(InputError, match="max_compartments"):
        simulate_fluid(w, 1.0, max_compartments=0)
    with pytest.raises(InputError, match="duration_s"):
        simulate_fluid(w, float("inf"))
    with pytest.raises(InputError, match="thresholds"):
        simulate_fluid(w, 1.0, thresholds=[1.0, 0.0])
    with pytest.raises(InputError, match="has 3 types, the workload 2"):
        simulate_fluid(w, 1.0, rates=PiecewiseRates(np.array([0.0, 1.0]), np.ones((1, 3))))
    tr = simulate_fluid(w, 1.0, max_compartments=1, num_points=3)  # one decode compartment per type is allowed
    assert list(tr.times_s) == [0.0, 0.5, 1.0] and tr.kv_capacity_tokens == w.kv_capacity_tokens


def test_fractional_type_shares_split_the_total_rate():
    # shares need only be non-negative with a positive sum: fractions below 1 (summing to 1 or less) are fine
    prof = PiecewiseRates.from_total([0.0, 2.0], [8.0], [0.25, 0.5])
    assert prof(1.0).tolist() == [8.0 / 3, 16.0 / 3]
    assert PiecewiseRates.from_total([0.0, 1.0], [6.0], [0.5, 0.5])(0.5).tolist() == [3.0, 3.0]


def test_a_rate_break_between_samples_carries_the_exact_state_into_the_next_bin():
    # the break at 1.37 s is not one of the samples 0, 1, ..., 5: the state at 1.37 s (not at the
    # last solver step before it) must start the second bin, so the arrival total is exact
    w = _two_types(0.5)
    lam = np.array([t.rate_per_s for t in w.types])
    prof = PiecewiseRates(np.array([0.0, 1.37, 5.0]), np.vstack([lam, 0.5 * lam]))
    tr = simulate_fluid(w, 5.0, rates=prof, num_points=6)
    assert tr.times_s.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert tr.arrived_prompts[-1] == pytest.approx((1.37 + 0.5 * 3.63) * lam.sum(), rel=1e-7)
    total = np.clip(tr.queue_prompts, 0.0, None) + tr.resident_prompts + tr.completed_prompts
    assert np.allclose(total, tr.arrived_prompts, rtol=1e-6, atol=1e-6)


def test_fcfs_evicts_only_the_excess_memory():
    # LIFO eviction removes the excess M − C within one iteration and no more: evicted prompts hold
    # at least the prompt length l = 512 tokens each, so evicted prompts/s · 512 ≤ (M − C)⁺ / ΔT
    w = _two_types(3.0)
    tr = simulate_fluid(w, 60.0, policy="fcfs", num_points=61)
    excess_rate = np.clip(tr.memory_tokens - w.kv_capacity_tokens, 0.0, None) / tr.iteration_time_s
    assert tr.evicted_rate_per_s.max() > 0.1  # the check bites: prompts are being evicted
    assert np.all(tr.evicted_rate_per_s * 512 <= excess_rate * (1 + 1e-9) + 1e-9)


def test_final_values_are_the_ones_at_the_horizon_not_the_point_before():
    # still filling at t = 3 s: memory and throughput rise at every grid point, so the last and the
    # one before differ
    w = Workload("edge", 30, AffineBatchTime(0.53125, 1 / 64), (RequestType("a", 7, 1, 2.0),)).scaled(0.5)
    tr = simulate_fluid(w, 3.0, num_points=7)
    assert tr.times_s[-1] == 3.0
    assert np.all(np.diff(tr.memory_tokens) > 0) and np.all(np.diff(tr.throughput_tokens_per_s) > 0)
    assert tr.final_memory_tokens == float(tr.memory_tokens[-1])
    assert tr.final_throughput_tokens_per_s == float(tr.throughput_tokens_per_s[-1])


def test_wait_default_thresholds_are_refused_at_load_factor_exactly_one():
    # Σλa = 2·15 + 2·17 = 64 and d1 = 1/64: L = 1 exactly, no fluid point to take thresholds from
    types = (RequestType("a", 7, 1, 2.0), RequestType("b", 8, 1, 2.0))
    w = Workload("L=1", 1000, AffineBatchTime(0.5, 1 / 64), types)
    with pytest.raises(UnstableWorkloadError, match="the load factor is 1 ≥ 1; pass thresholds explicitly"):
        simulate_fluid(w, 1.0, policy="wait")
    tr = simulate_fluid(w, 1.0, policy="wait", thresholds=[1.0, 1.0], num_points=3)  # explicit ones run
    assert tr.times_s.tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("slack", [None, 0.1])
def test_wait_admits_its_default_threshold_per_iteration_while_a_queue_waits(slack):
    # a burst of 4λ for 2 s builds a queue that WAIT drains at its threshold: u_j = n_j / ΔT(t)
    # with n_j = (1 + slack)·λ_j ΔT* (slack 0.02 by default), at every sample, t = 0 included
    w = _two_types(0.5)
    lam = np.array([t.rate_per_s for t in w.types])
    burst = PiecewiseRates(np.array([0.0, 2.0, 10.0]), np.vstack([4 * lam, lam]))
    kwargs = {} if slack is None else {"threshold_slack": slack}
    tr = simulate_fluid(w, 10.0, rates=burst, num_points=11, **kwargs)
    assert np.all(tr.queue_prompts[1:] > 30)  # the queue is there all along (the threshold binds)
    n = (1 + (0.02 if slack is None else slack)) * np.array(closed_form(w).prompts_per_stage)
    assert np.allclose(tr.admitted_rate_per_s, n / tr.iteration_time_s[:, None], rtol=1e-9, atol=0)


def test_explicit_thresholds_may_be_fractions_of_a_prompt_and_must_be_finite_and_positive():
    # fluid thresholds are masses, not counts: 0.5 of a prompt per stage is a threshold like any other
    w = _two_types(0.5)
    lam = np.array([t.rate_per_s for t in w.types])
    burst = PiecewiseRates(np.array([0.0, 2.0, 4.0]), np.vstack([4 * lam, lam]))
    n = np.array([0.5, 1.0])
    tr = simulate_fluid(w, 4.0, rates=burst, thresholds=n, num_points=5)
    assert np.all(tr.queue_prompts[1:] > 20)  # the short type queues: its half-prompt threshold binds
    assert np.allclose(tr.admitted_rate_per_s[1:, 0], 0.5 / tr.iteration_time_s[1:], rtol=1e-9, atol=0)
    assert tr.admitted_rate_per_s[1:4, 1].tolist() == pytest.approx([4 * lam[1], lam[1], lam[1]])  # the long one does not
    for bad in ([0.5, 0.0], [0.5, -1.0], [0.5, np.inf], [0.5, np.nan], [0.5, 1.0, 1.0]):
        with pytest.raises(InputError, match=r"needs 2 finite positive thresholds") as info:
            simulate_fluid(w, 1.0, thresholds=bad)
        assert info.value.field == "thresholds"


def test_totals_and_rates_of_a_profile_that_fills_settles_and_drains():
    # two types with different lengths, λ for 20 s then nothing: by 20 s the server sits at the
    # closed-form point, by 60 s it has drained, so every total is known by hand
    types = (RequestType("short", 512, 20, 10.0), RequestType("long", 256, 200, 1.5))
    w = Workload("two", 137_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5), types)
    lam = np.array([10.0, 1.5])
    tr = simulate_fluid(w, 60.0, rates=PiecewiseRates(np.array([0.0, 20.0, 60.0]), np.vstack([lam, 0 * lam])), num_points=121)
    p = closed_form(w)
    i = int(np.flatnonzero(tr.times_s == 19.5)[0])  # settled, still arriving
    assert tr.memory_tokens[i] == pytest.approx(p.memory_star_tokens, rel=1e-6)
    assert tr.iteration_time_s[i] == pytest.approx(p.iteration_time_star_s, rel=1e-6)
    assert tr.admitted_rate_per_s[i].tolist() == pytest.approx([10.0, 1.5], rel=1e-6)
    assert tr.throughput_tokens_per_s[i] == pytest.approx(10.0 * 20 + 1.5 * 200, rel=1e-6)  # Σ λ l' = 500
    assert tr.generation_tokens_per_s[i] == pytest.approx(500.0, rel=1e-6)
    n = np.array(p.prompts_per_stage)
    assert tr.resident_prompts[i] == pytest.approx(n @ [21, 201], rel=1e-6)  # n_j per stage over l'_j + 1 stages
    assert tr.queue_prompts[i] == pytest.approx(0.0, abs=1e-6)
    # drained: 20 s × λ arrived and completed, 20·(10·20 + 1.5·200) = 10,000 decode tokens generated and completed
    assert tr.arrived_prompts[-1] == pytest.approx(230.0, rel=1e-9)
    assert tr.completed_prompts[-1] == pytest.approx(230.0, rel=1e-6)
    assert tr.completed_decode_tokens[-1] == pytest.approx(10_000.0, rel=1e-6)
    assert tr.generated_decode_tokens[-1] == pytest.approx(10_000.0, rel=1e-6)
    assert tr.resident_prompts[-1] < 1e-6 and abs(tr.queue_prompts[-1]) < 1e-6 and tr.evicted_rate_per_s.max() == 0.0
    # the sampled rates are those totals' derivatives (a trapezoid over 0.5 s steps, to 1 %)
    area = lambda y: float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(tr.times_s)))  # noqa: E731
    assert area(tr.generation_tokens_per_s) == pytest.approx(10_000.0, rel=1e-2)
    assert area(tr.throughput_tokens_per_s) == pytest.approx(10_000.0, rel=1e-2)


def test_fcfs_evicts_whenever_memory_exceeds_capacity_however_little():
    # iterations of 10 s: late in this overload memory sits less than ΔT tokens above C, an excess
    # rate (M − C)/ΔT below one token per second, and eviction must still run at every such sample
    w = Workload("slow", 1000, AffineBatchTime(10.0, 1e-4), (RequestType("a", 10, 50, 2.0),))
    tr = simulate_fluid(w, 600.0, policy="fcfs", num_points=121)
    over = tr.memory_tokens > w.kv_capacity_tokens
    excess_rate = (tr.memory_tokens - w.kv_capacity_tokens) / tr.iteration_time_s
    assert over.sum() > 50 and np.any(over & (excess_rate < 0.5))  # the check bites below 1 token/s
    assert np.all(tr.evicted_rate_per_s[over] > 0)
    assert np.all(tr.evicted_rate_per_s[~over] == 0)
    # LIFO: the newest prompts hold at least the prompt's 10 tokens each, so evicted·10 ≤ (M − C)/ΔT
    assert np.all(tr.evicted_rate_per_s[over] * 10 <= excess_rate[over] * (1 + 1e-9))


def test_the_fluid_model_has_no_time_unit_eviction_of_nearly_empty_compartments_included():
    # the same workload with every time 1000 times shorter (d0 and d_kv / 1000, λ · 1000, the horizon
    # / 1000) is the same trajectory on a clock 1000 times faster: memory, queue and totals at the
    # matching samples, eviction rates · 1000. The slow one overloads FCFS with iterations of 10 s,
    # where the excess reaches compartments holding a KV token rate P·(l + s̄)/ΔT of at most one per
    # second: LIFO shares the excess out by each compartment's own rate there too, in any unit
    k = 1000.0
    slow = Workload("slow", 1000, AffineBatchTime(10.0, 1e-4), (RequestType("a", 10, 50, 2.0),))
    fast = Workload("fast", 1000, AffineBatchTime(10.0 / k, 1e-4 / k), (RequestType("a", 10, 50, 2.0 * k),))
    a = simulate_fluid(slow, 600.0, policy="fcfs", num_points=121)
    b = simulate_fluid(fast, 600.0 / k, policy="fcfs", num_points=121)
    assert a.evicted_rate_per_s.max() > 0.1  # it evicts
    assert b.times_s * k == pytest.approx(a.times_s, rel=1e-12)
    assert b.iteration_time_s * k == pytest.approx(a.iteration_time_s, rel=1e-6)
    assert b.memory_tokens == pytest.approx(a.memory_tokens, rel=1e-6, abs=1e-6)
    assert b.evicted_rate_per_s == pytest.approx(a.evicted_rate_per_s * k, rel=1e-4, abs=1e-6)
    for name in ("queue_prompts", "resident_prompts", "completed_prompts", "generated_decode_tokens"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-6, abs=1e-6), name


def test_compartments_are_numbered_from_each_types_newest_prompts():
    # one prefill compartment and one per decode stage (max_compartments large): levels restart at 0
    # for each type, in the order its prompts age
    from fluid.ode import _Layout

    w = Workload("w", 10**6, AffineBatchTime(0.01, 1e-6), (RequestType("a", 10, 3, 1.0), RequestType("b", 20, 2, 1.0)))
    layout = _Layout(w, 8)
    assert layout.owner.tolist() == [0, 0, 0, 0, 1, 1, 1] and layout.level.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert layout.first.tolist() == [0, 4] and layout.last.tolist() == [3, 6]
    assert layout.tokens.tolist() == [10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0]
