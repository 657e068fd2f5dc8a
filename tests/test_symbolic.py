"""sympy derivation of the fluid closed forms (arXiv 2504.11320) against the numeric code."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings

from fluid.equilibrium import closed_form
from fluid.lp import solve_lp
from fluid.symbolic import derive, footprint, lambdify_all
from fluid_strategies import workloads


def test_footprint_sum_has_the_paper_closed_form():
    l, lp = sp.symbols("l lp", positive=True)
    assert sp.simplify(footprint(l, lp) - (lp + 1) * (l + lp / 2)) == 0


@pytest.mark.parametrize("m", [1, 2, 3])
def test_derived_forms_reduce_to_the_aggregate_formulas(m):
    s = derive(m)
    lam_a = sum(s.rates[j] * s.footprints[j] for j in range(m))
    L = s.d_kv * lam_a + s.d_new * sum(s.rates[j] * (s.prefill[j] + s.decode[j]) for j in range(m))
    assert sp.simplify(s.load_factor - L) == 0
    assert sp.simplify(s.memory - s.iteration_time * lam_a) == 0
    assert sp.simplify(s.capacity_scale - s.capacity / (s.d0 * lam_a + s.capacity * L)) == 0
    for j in range(m):
        assert sp.simplify(s.prompts_per_stage[j] - s.rates[j] * s.iteration_time) == 0


def _args(w):
    d0, d_kv, d_new = w.batch_time.linear_coefficients()
    return (
        *[t.rate_per_s for t in w.types], *[t.prefill for t in w.types], *[t.decode for t in w.types],
        d0, d_kv, d_new, w.kv_capacity_tokens,
    )


@settings(max_examples=25, deadline=None)
@given(workloads(max_types=3, stable=True))
def test_lambdified_symbolic_equals_numeric(w):
    f = lambdify_all(derive(len(w.types)))
    p, args = closed_form(w), _args(w)
    assert f["iteration_time_star_s"](*args) == pytest.approx(p.iteration_time_star_s, rel=1e-10)
    assert f["memory_star_tokens"](*args) == pytest.approx(p.memory_star_tokens, rel=1e-10)
    assert f["load_factor"](*args) == pytest.approx(p.load_factor, rel=1e-10, abs=1e-15)
    assert f["capacity_scale"](*args) == pytest.approx(p.capacity_scale, rel=1e-10)
    assert f["throughput_star_tokens_per_s"](*args) == pytest.approx(p.throughput_star_tokens_per_s, rel=1e-12)
    assert np.allclose(np.ravel(f["prompts_per_stage"](*args)), p.prompts_per_stage, rtol=1e-10)


@settings(max_examples=15, deadline=None)
@given(workloads(max_types=3))
def test_capacity_three_ways(w):
    """θ*: sympy (solve M*(θλ) = C), the closed form, and the capacity-mode LP agree."""
    theta_sym = lambdify_all(derive(len(w.types)))["capacity_scale"](*_args(w))
    assert theta_sym == pytest.approx(closed_form(w).capacity_scale, rel=1e-10)
    assert solve_lp(w, capacity=True).capacity_scale == pytest.approx(theta_sym, rel=1e-6)
