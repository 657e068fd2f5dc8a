"""Closed forms of the fluid equilibrium (arXiv 2504.11320): balance, stability, θ*, vector path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from fluid.batch_time import AffineBatchTime, Linear3BatchTime
from fluid.equilibrium import closed_form, closed_form_arrays, closed_form_full, footprints, instability_advice
from fluid.workload import RequestType, Workload
from fluid_strategies import workloads


def test_footprint_is_the_sum_over_stages():
    for l, lp in [(1, 1), (10, 10), (512, 20), (7, 333)]:
        assert footprints(np.array([l]), np.array([lp]))[0] == sum(l + s for s in range(lp + 1))


@settings(max_examples=40, deadline=None)
@given(workloads(stable=True))
def test_balance_equations_hold_at_the_fixed_point(w):
    p = closed_form(w)
    d0, d_kv, d_new = w.batch_time.linear_coefficients()
    n = np.array(p.prompts_per_stage)
    a = np.array([t.footprint_token_iterations for t in w.types])
    new = np.array([t.prefill + t.decode for t in w.types])
    lam = np.array([t.rate_per_s for t in w.types])
    M, N = n @ a, n @ new
    assert np.allclose(n, lam * p.iteration_time_star_s, rtol=1e-12)
    assert math.isclose(p.memory_star_tokens, M, rel_tol=1e-12)
    assert math.isclose(p.iteration_time_star_s, d0 + d_kv * M + d_new * N, rel_tol=1e-10)
    assert p.stable and p.memory_star_tokens <= w.kv_capacity_tokens


@settings(max_examples=40, deadline=None)
@given(workloads())
def test_capacity_scale_puts_memory_exactly_at_capacity(w):
    p = closed_form(w)
    at = closed_form(w.scaled(p.capacity_scale))
    assert at.load_factor < 1
    assert math.isclose(at.memory_star_tokens, w.kv_capacity_tokens, rel_tol=1e-9)
    assert closed_form(w.scaled(p.capacity_scale * 0.999)).stable
    assert not closed_form(w.scaled(p.capacity_scale * 1.001)).stable
    assert p.stable == (p.capacity_scale >= 1)


@settings(max_examples=30, deadline=None)
@given(workloads())
def test_vector_path_equals_scalar_path(w):
    p, arr = closed_form(w), closed_form_full(w)
    assert np.allclose(arr.prompts_per_stage, p.prompts_per_stage, rtol=1e-12)
    for name in ("load_factor", "memory_star_tokens", "iteration_time_star_s", "capacity_scale", "throughput_star_tokens_per_s"):
        assert getattr(arr, name) == pytest.approx(getattr(p, name), rel=1e-12)
    assert arr.stable == p.stable


def test_affine_is_linear3_without_new_token_term():
    types = (RequestType("a", 10, 10, 1000.0), RequestType("b", 10, 20, 1000.0))
    wa = Workload("a", 137_000, AffineBatchTime(0.01, 1e-6), types)
    wl = Workload("l", 137_000, Linear3BatchTime(0.01, 1e-6, 0.0), types)
    assert closed_form(wa) == closed_form(wl)
    lam_a = sum(t.rate_per_s * t.footprint_token_iterations for t in types)
    assert closed_form(wa).load_factor == pytest.approx(1e-6 * lam_a)


def test_overloaded_workload_has_no_equilibrium_and_says_what_fits():
    w = Workload("x", 100_000, AffineBatchTime(0.01, 1e-5), (RequestType("a", 100, 100, 10.0),))
    p = closed_form(w)
    assert p.load_factor >= 1 and math.isinf(p.memory_star_tokens) and not p.stable
    text = instability_advice(p)
    assert "≥ 1" in text and f"{p.capacity_scale:.4g}" in text
    memory_bound = Workload("y", 1000, AffineBatchTime(0.01, 1e-9), (RequestType("a", 100, 100, 10.0),))
    q = closed_form(memory_bound)
    assert q.load_factor < 1 and not q.stable
    assert str(math.ceil(q.memory_star_tokens)) in instability_advice(q)


def test_hundred_thousand_types_vectorised():
    rng = np.random.default_rng(1)
    m = 100_000
    prefill, decode = rng.integers(1, 2000, m), rng.integers(1, 500, m)
    rate = rng.uniform(1e-5, 1e-4, m)
    arr = closed_form_arrays(prefill, decode, rate, d0_s=0.01, d_kv_s_per_token=1e-9, d_new_s_per_token=1e-6, kv_capacity_tokens=10**8)
    lam_a = float(np.sum(rate * (decode + 1) * (prefill + decode / 2)))
    L = 1e-9 * lam_a + 1e-6 * float(np.sum(rate * (prefill + decode)))
    assert arr.load_factor == pytest.approx(L, rel=1e-10)
    assert arr.memory_star_tokens == pytest.approx(0.01 / (1 - L) * lam_a, rel=1e-10)
    assert arr.prompts_per_stage.shape == (m,)


def test_memory_exactly_at_capacity_is_stable_one_token_less_is_not():
    # dyadic numbers, so M* = λ·a·ΔT* = 2·15·1.0 = 30 tokens exactly (a = (1+1)(7+1/2) = 15, L = 30/64)
    types = (RequestType("a", 7, 1, 2.0),)
    at = closed_form(Workload("edge", 30, AffineBatchTime(0.53125, 1 / 64), types))
    assert at.memory_star_tokens == 30.0 and at.load_factor == 0.46875
    assert at.stable and at.capacity_scale == 1.0
    full = closed_form_full(Workload("edge", 30, AffineBatchTime(0.53125, 1 / 64), types))  # the vector path
    assert full.memory_star_tokens == 30.0 and full.stable
    for short in (closed_form, closed_form_full):
        assert not short(Workload("edge", 29, AffineBatchTime(0.53125, 1 / 64), types)).stable


def _load_exactly_one(C: int = 1000) -> Workload:
    # Σλa = 2·15 + 2·17 = 64 (a = (1+1)(7+1/2) = 15 and (1+1)(8+1/2) = 17), d1 = 1/64: L = 1 exactly
    types = (RequestType("a", 7, 1, 2.0), RequestType("b", 8, 1, 2.0))
    return Workload("L=1", C, AffineBatchTime(0.5, 1 / 64), types)


def test_load_factor_exactly_one_has_no_equilibrium():
    w = _load_exactly_one()
    for point in (closed_form(w), closed_form_full(w)):
        assert point.load_factor == 1.0
        assert point.iteration_time_star_s == math.inf and point.memory_star_tokens == math.inf
        assert not point.stable
        assert point.capacity_scale == 1000 / (0.5 * 64 + 1000)  # θ* = C / (d0 Σλa + C·L)
        assert list(point.prompts_per_stage) == [math.inf, math.inf]
    assert instability_advice(closed_form(w)).startswith("load factor L = d_kv·Σλa + d_new·Σλ(l+l') = 1 ≥ 1:")


def test_advice_at_memory_exactly_at_capacity_says_stable_and_one_token_less_asks_for_it():
    # M* = 30 tokens exactly (see the boundary test above): C = 30 is stable, C = 29 lacks one token
    types = (RequestType("a", 7, 1, 2.0),)
    at = closed_form(Workload("edge", 30, AffineBatchTime(0.53125, 1 / 64), types))
    assert instability_advice(at) == "stable: L = 0.4688 < 1 and M* = 30 ≤ C = 30 (θ* = 1)"
    short = closed_form(Workload("edge", 29, AffineBatchTime(0.53125, 1 / 64), types))
    assert short.capacity_scale == 29 / (0.53125 * 30 + 29 * 0.46875)  # θ* = C / (d0 Σλa + C·L)
    assert instability_advice(short) == (
        "the equilibrium needs M* = 30 KV tokens but C = 29 (M*/C = 1.034; load factor L = 0.4688 < 1): scale every "
        "rate by at most θ* = 0.982, or give the server at least 30 KV tokens")
