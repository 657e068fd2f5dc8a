"""The fluid LP (arXiv 2504.11320, the fluid benchmark): closed forms inside the region, capacity, fleet, linprog twin, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluid.batch_time import AffineBatchTime, Linear3BatchTime
from fluid.equilibrium import closed_form
from fluid.errors import InputError, SolverError
from fluid.fleet import GpuSpec
from fluid.lp import solve_fleet_lp, solve_lp, solve_lp_linprog
from fluid.workload import RequestType, Workload
from fluid_strategies import workloads


def _two_types(scale: float = 1.0) -> Workload:
    types = (RequestType("short", 512, 20, 20.0), RequestType("long", 512, 200, 3.0))
    return Workload("two", 137_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5), types).scaled(scale)


@settings(max_examples=30, deadline=None)
@given(workloads(stable=True))
def test_inside_the_region_lp_admits_everything_and_matches_closed_forms(w):
    p = closed_form(w)
    r = solve_lp(w)
    lam = np.array([t.rate_per_s for t in w.types])
    assert np.allclose(r.admitted_rate_per_s, lam, rtol=1e-6)
    assert r.iteration_time_s == pytest.approx(p.iteration_time_star_s, rel=1e-6)
    assert r.memory_tokens == pytest.approx(p.memory_star_tokens, rel=1e-6)
    assert r.throughput_tokens_per_s == pytest.approx(p.throughput_star_tokens_per_s, rel=1e-6)
    assert np.allclose(r.prompts_per_stage, p.prompts_per_stage, rtol=1e-6)
    assert np.allclose(r.shed_rate_per_s, 0.0, atol=1e-6 * lam.max())


@settings(max_examples=30, deadline=None)
@given(workloads())
def test_capacity_lp_equals_closed_form_theta(w):
    p = closed_form(w)
    r = solve_lp(w, capacity=True)
    assert r.capacity_scale == pytest.approx(p.capacity_scale, rel=1e-6)
    assert r.memory_tokens == pytest.approx(w.kv_capacity_tokens, rel=1e-6)
    assert "kv_memory" in r.binding


@settings(max_examples=25, deadline=None)
@given(workloads(), st.sampled_from([None, 40.0, 500.0]), st.sampled_from([None, 2048.0]), st.booleans())
def test_cvxpy_and_linprog_agree(w, batch_cap, token_budget, capacity):
    kwargs = dict(batch_cap=batch_cap, token_budget_tokens=token_budget, capacity=capacity)
    a, b = solve_lp(w, **kwargs), solve_lp_linprog(w, **kwargs)
    assert a.objective == pytest.approx(b.objective, rel=1e-6)
    assert a.throughput_tokens_per_s == pytest.approx(b.throughput_tokens_per_s, rel=1e-5, abs=1e-6)
    assert a.solver in ("CLARABEL", "HIGHS") and b.solver == "linprog-highs"


def test_overload_sheds_load_and_duals_price_memory():
    w = _two_types(3.0)
    assert not closed_form(w).stable
    r = solve_lp(w)
    assert "kv_memory" in r.binding
    assert r.memory_tokens == pytest.approx(w.kv_capacity_tokens, rel=1e-6)
    assert r.shed_rate_per_s.sum() > 0
    # ∂objective/∂C = dual(kv_memory) · t: check it against a finite difference of C
    dC = 100
    bigger = Workload(w.name, w.kv_capacity_tokens + dC, w.batch_time, w.types)
    slope = (solve_lp(bigger).objective - r.objective) / dC
    assert r.duals["kv_memory"] * r.iteration_rate_per_s == pytest.approx(slope, rel=1e-3)
    lin = solve_lp_linprog(w)
    assert lin.duals["kv_memory"] == pytest.approx(r.duals["kv_memory"], rel=1e-4)


def test_optional_constraints_bind_and_are_named():
    w = _two_types()
    p = closed_form(w)
    n_total = sum(n * (t.decode + 1) for n, t in zip(p.prompts_per_stage, w.types))  # prompts in a batch at x = λ
    r = solve_lp(w, batch_cap=0.5 * n_total)
    assert "batch_cap" in r.binding
    assert sum(n * (t.decode + 1) for n, t in zip(r.prompts_per_stage, w.types)) == pytest.approx(0.5 * n_total, rel=1e-6)
    slo = 0.8 * p.iteration_time_star_s
    r = solve_lp(w, tbt_slo_s=slo)
    assert "tbt_slo" in r.binding and r.iteration_time_s == pytest.approx(slo, rel=1e-6)
    r = solve_lp(w, token_budget_tokens=100.0)
    assert "token_budget" in r.binding


def test_infeasible_tbt_slo_raises_naming_the_constraint():
    w = _two_types()
    with pytest.raises(SolverError, match="tbt_slo"):
        solve_lp(w, tbt_slo_s=0.5 * w.batch_time.linear_coefficients()[0])
    with pytest.raises(SolverError, match="tbt_slo"):
        solve_lp_linprog(w, tbt_slo_s=0.001)


def test_weights_change_the_objective():
    w = _two_types(3.0)
    only_short = solve_lp(w, weights=[1.0, 0.0])
    # a zero-weight type only costs resources: none of it is admitted, and the short type gets
    # what a short-only server can carry, min(λ, θ*·λ) from the closed form
    short_alone = Workload(w.name, w.kv_capacity_tokens, w.batch_time, w.types[:1])
    expected = w.types[0].rate_per_s * min(1.0, closed_form(short_alone).capacity_scale)
    assert only_short.admitted_rate_per_s[0] == pytest.approx(expected, rel=1e-6)
    assert only_short.admitted_rate_per_s[1] == pytest.approx(0.0, abs=1e-6)
    assert only_short.objective == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("g", [1, 2, 8])
def test_fleet_of_identical_gpus_has_g_times_the_capacity(g):
    w = _two_types()
    single = solve_lp(w, capacity=True).capacity_scale
    fleet = solve_fleet_lp(w.types, [GpuSpec.of(w, f"gpu{i}") for i in range(g)], capacity=True)
    assert fleet.capacity_scale == pytest.approx(g * single, rel=1e-6)
    lam = np.array([t.rate_per_s for t in w.types])
    assert np.allclose(fleet.admitted_rate_per_s, fleet.capacity_scale * lam, rtol=1e-6)
    assert fleet.split_rate_per_s.shape == (g, 2)


def test_heterogeneous_fleet_routes_and_agrees_with_linprog():
    w = _two_types(4.0)
    gpus = [
        GpuSpec("a100", 137_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5)),
        GpuSpec("h100", 300_000, Linear3BatchTime(0.006, 1.5e-7, 2.5e-5)),
        GpuSpec("small", 20_000, AffineBatchTime(0.02, 1e-6)),
    ]
    a = solve_fleet_lp(w.types, gpus)
    b = solve_fleet_lp(w.types, gpus, backend="linprog")
    assert a.objective == pytest.approx(b.objective, rel=1e-6)
    lam = np.array([t.rate_per_s for t in w.types])
    assert np.all(a.admitted_rate_per_s <= lam * (1 + 1e-6))
    for g in range(3):  # each GPU's point satisfies its own iteration-time equation
        d0, d_kv, d_new = gpus[g].batch_time.linear_coefficients()
        y = a.split_rate_per_s[g]
        lhs = d0 * a.iteration_rate_per_s[g] + sum(
            (d_kv * t.footprint_token_iterations + d_new * t.new_tokens) * y_j for t, y_j in zip(w.types, y)
        )
        assert lhs == pytest.approx(1.0, rel=1e-6)
        assert a.memory_tokens[g] <= gpus[g].kv_capacity_tokens * (1 + 1e-6)
    assert a.duals["kv_memory"].shape == (3,)


def test_bad_inputs_raise_input_error():
    w = _two_types()
    with pytest.raises(InputError, match="weight"):
        solve_lp(w, weights=[1.0])
    with pytest.raises(InputError, match="batch_cap"):
        solve_lp(w, batch_cap=-1)
    with pytest.raises(InputError, match="tbt_slo_s"):
        solve_lp(w, tbt_slo_s=float("nan"))
    with pytest.raises(InputError, match="kv_capacity_tokens"):
        GpuSpec("g", 0, w.batch_time)
    with pytest.raises(InputError, match="at least one GPU"):
        solve_fleet_lp(w.types, [])
    with pytest.raises(InputError, match="backend"):
        solve_lp(w, backend="glpk")


def test_thousand_types_solve():
    rng = np.random.default_rng(0)
    types = tuple(
        RequestType(f"t{i}", int(rng.integers(10, 1000)), int(rng.integers(1, 500)), float(rng.uniform(1e-3, 1e-2)))
        for i in range(1000)
    )
    w = Workload("big", 10**6, AffineBatchTime(0.01, 1e-8), types)
    for scale in (1.0, 20.0):
        ws = w.scaled(scale)
        r = solve_lp(ws)
        assert r.throughput_tokens_per_s == pytest.approx(solve_lp_linprog(ws).throughput_tokens_per_s, rel=1e-6)


@pytest.mark.parametrize("batch_cap, named", [(None, "none"), (50.0, "batch_cap")])
def test_a_solver_status_error_names_the_optional_constraints_present(batch_cap, named):
    # the guard behind the precheck: should a solver still call the LP infeasible, the message
    # names the optional constraints this LP has (only those), the usual cause
    from fluid.fleet import LPOptions, build_matrices
    from fluid.lp import _raise_status

    w = _two_types()
    mats = build_matrices(w.types, (GpuSpec("g", w.kv_capacity_tokens, w.batch_time),), LPOptions(batch_cap=batch_cap))
    with pytest.raises(SolverError) as info:
        _raise_status("infeasible", mats)
    assert f"the optional ones ({named}) are the usual cause" in str(info.value)
    assert str(info.value).startswith("fluid LP infeasible (solver status 'infeasible')")


def _one_variable_lp(coefficient: float, bound: float):
    # maximise z subject to coefficient·z ≤ bound, z ≥ 0: −z ≤ 0 is unbounded, z ≤ −1 infeasible
    import scipy.sparse as sp

    from fluid.fleet import LPMatrices

    A = sp.csr_matrix(np.array([[coefficient]]))
    return LPMatrices(num_gpus=1, num_types=0, capacity=False, objective=np.array([1.0]), objective_scale=1.0,
                      blocks={"kv_memory": (A, np.array([bound]), "le")})


@pytest.mark.parametrize("backend", ["linprog", "CLARABEL", "HIGHS"])
@pytest.mark.parametrize("coefficient, bound, kind", [(-1.0, 0.0, "unbounded"), (1.0, -1.0, "infeasible")])
def test_an_unbounded_or_infeasible_lp_is_reported_as_such_by_every_solver(backend, coefficient, bound, kind):
    # each solver's status is translated into the kind, not into a generic "failed"
    from fluid.lp import _solve_cvxpy, solve_lp_matrices_linprog

    mats = _one_variable_lp(coefficient, bound)
    with pytest.raises(SolverError) as info:
        solve_lp_matrices_linprog(mats) if backend == "linprog" else _solve_cvxpy(mats, (backend,))
    assert str(info.value).startswith(f"fluid LP {kind} (solver status '{kind}'); named constraints: kv_memory;")


@pytest.mark.parametrize("backend", ["cvxpy", "linprog"])
def test_every_dual_is_the_objective_slope_of_its_right_hand_side(backend):
    # duals are ∂objective/∂(right-hand side) of each constraint as the module docstring writes it;
    # each is checked against a finite difference of that right-hand side, in SI units
    def solve(workload, **kwargs):
        return solve_lp(workload, backend=backend, **kwargs)

    def slope(base, changed, step):
        return (changed.objective - base.objective) / step

    w = _two_types(3.0)  # overloaded: memory binds and the long type is shed
    r = solve(w)
    assert set(r.binding) == {"kv_memory", "admission_upper[long]"}
    eps = 1e-5  # iteration_time: d0 t + Σ(...) x = 1 + ε is the same LP with every coefficient / (1 + ε)
    faster = Workload(w.name, w.kv_capacity_tokens, Linear3BatchTime(*(c / (1 + eps) for c in w.batch_time.linear_coefficients())), w.types)
    assert r.duals["iteration_time"] == pytest.approx(slope(r, solve(faster), eps), rel=1e-4)
    h = 3e-4  # admission_upper: x_j ≤ λ_j
    more_long = Workload(w.name, w.kv_capacity_tokens, w.batch_time, (w.types[0], RequestType("long", 512, 200, 9.0 + h)))
    assert r.duals["admission_upper"][1] == pytest.approx(slope(r, solve(more_long), h), rel=1e-4)
    assert r.duals["admission_upper"][0] == pytest.approx(0.0, abs=1e-6)  # a type being shed gains nothing from more λ

    w = _two_types()
    p = closed_form(w)
    B = 0.5 * sum(n * (t.decode + 1) for n, t in zip(p.prompts_per_stage, w.types))  # batch_cap: ≤ B t
    r = solve(w, batch_cap=B)
    assert r.duals["batch_cap"] * r.iteration_rate_per_s == pytest.approx(slope(r, solve(w, batch_cap=B * 1.0001), B * 1e-4), rel=1e-3)
    K = 100.0  # token_budget: ≤ K t
    r = solve(w, token_budget_tokens=K)
    assert r.duals["token_budget"] * r.iteration_rate_per_s == pytest.approx(
        slope(r, solve(w, token_budget_tokens=K * 1.0001), K * 1e-4), rel=1e-3)
    slo = 0.8 * p.iteration_time_star_s  # tbt_slo: −t ≤ −1/TBT_max, so the dual is ≥ 0
    r, looser = solve(w, tbt_slo_s=slo), solve(w, tbt_slo_s=slo * 1.0001)
    assert r.duals["tbt_slo"] > 0
    assert r.duals["tbt_slo"] == pytest.approx(slope(r, looser, -1 / (slo * 1.0001) + 1 / slo), rel=1e-3)


@pytest.mark.parametrize("backend", ["cvxpy", "linprog"])
def test_capacity_mode_admission_duals_are_the_theta_slope_of_side_traffic_by_hand(backend):
    # capacity mode, admission_scale Σ_g y_j − θ λ_j = h_j: memory and iteration time bind, so
    # t = 1/(d0 + d_kv C) = 20 iterations/s and Σ_j a_j y_j = C t = 60,000 with a = 6·12.5 = 75
    # and 11·25 = 275; y_j = θ λ_j + h_j gives θ = (60,000 − Σ a_j h_j) / Σ a_j λ_j = 60,000/1250
    # = 48, and ∂θ/∂h_j = −a_j / 1250 = −0.06 and −0.22 (the duals in original units, after the
    # rows' scaling 1/(λ_j θ_ref) is undone)
    w = Workload("w", 3000, AffineBatchTime(0.02, 1e-5), (RequestType("a", 10, 5, 2.0), RequestType("b", 20, 10, 4.0)))
    r = solve_lp(w, capacity=True, backend=backend)
    assert r.capacity_scale == pytest.approx(48.0, rel=1e-9)
    assert r.duals["admission_scale"].tolist() == pytest.approx([-0.06, -0.22], rel=1e-6)
    one = solve_lp(Workload("w", 3000, AffineBatchTime(0.02, 1e-5), (RequestType("a", 10, 5, 2.0),)), capacity=True, backend=backend)
    assert one.capacity_scale == pytest.approx(60_000 / 150, rel=1e-9)
    assert one.duals["admission_scale"].tolist() == pytest.approx([-1 / 2.0], rel=1e-6)  # one type: −1/λ


@pytest.mark.parametrize("backend", ["cvxpy", "linprog"])
def test_a_tbt_slo_of_exactly_d0_admits_nothing_and_is_not_infeasible(backend):
    # TBT_max = d0: only the empty batch meets it (t = 1/d0, x = 0); just below d0 nothing does
    w = Workload("w", 1000, AffineBatchTime(0.5, 1 / 64), (RequestType("a", 7, 1, 2.0),))
    r = solve_lp(w, tbt_slo_s=0.5, backend=backend)
    assert r.iteration_time_s == pytest.approx(0.5, rel=1e-9)
    assert r.admitted_rate_per_s[0] == pytest.approx(0.0, abs=1e-9) and "tbt_slo" in r.binding
    with pytest.raises(SolverError, match=r"even an empty batch takes d0 = 0\.5 s > TBT_max = 0\.499999 s"):
        solve_lp(w, tbt_slo_s=0.499999, backend=backend)


@pytest.mark.parametrize("backend", ["cvxpy", "linprog"])
def test_binding_rows_are_named_per_gpu_and_per_type_in_a_fleet(backend):
    # ten times the load on two GPUs: both memories fill and the long type is admitted in full
    gpus = [GpuSpec("a100", 137_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5)),
            GpuSpec("h100", 300_000, Linear3BatchTime(0.006, 1.5e-7, 2.5e-5))]
    w = _two_types(10.0)
    r = solve_fleet_lp(w.types, gpus, backend=backend)
    assert r.binding == ("kv_memory[a100]", "kv_memory[h100]", "admission_upper[long]")
    assert r.memory_tokens.tolist() == pytest.approx([137_000, 300_000], rel=1e-6)
    assert r.admitted_rate_per_s[1] == pytest.approx(30.0, rel=1e-6)
    # one type on one GPU: the rows need no [label]
    one = solve_fleet_lp(w.types[1:], gpus[:1], backend=backend)
    assert one.binding == ("kv_memory",) and one.gpu_names == ("a100",) and one.type_names == ("long",)


@pytest.mark.parametrize("make, field", [
    (lambda bt: GpuSpec("", 10, bt), "gpus[].name"),
    (lambda bt: GpuSpec(3, 10, bt), "gpus[].name"),
    (lambda bt: GpuSpec("g", 10, object()), "gpus[g].batch_time"),
    (lambda bt: GpuSpec("g", 1.5, bt), "gpus[g].kv_capacity_tokens"),
    (lambda bt: GpuSpec("g", 0, bt), "gpus[g].kv_capacity_tokens"),
    (lambda bt: solve_lp(Workload("w", 10, bt, (RequestType("a", 1, 1, 1.0),)), weights=[1.0, 2.0]), "weights"),
    (lambda bt: solve_lp(Workload("w", 10, bt, (RequestType("a", 1, 1, 1.0),)), weights=[float("inf")]), "weights[0]"),
    (lambda bt: solve_lp(Workload("w", 10, bt, (RequestType("a", 1, 1, 1.0),)), token_budget_tokens=0), "token_budget_tokens"),
    (lambda bt: solve_lp(Workload("w", 10, bt, (RequestType("a", 1, 1, 1.0),)), tbt_slo_s=0.0), "tbt_slo_s"),
    (lambda bt: solve_lp(Workload("w", 10, bt, (RequestType("a", 1, 1, 1.0),)), batch_cap=True), "batch_cap"),
])
def test_fleet_and_lp_option_guards_name_their_field(make, field):
    with pytest.raises(InputError) as info:
        make(AffineBatchTime(0.1, 0.01))
    assert info.value.field == field


def test_the_smallest_gpu_and_any_finite_weights_are_accepted():
    w = Workload("w", 1000, AffineBatchTime(0.1, 0.001), (RequestType("a", 1, 1, 1.0), RequestType("b", 2, 2, 1.0)))
    assert GpuSpec("g", 1, w.batch_time).kv_capacity_tokens == 1
    r = solve_lp(w, weights=[0.0, -1.0])  # a negative weight only costs: none of b is admitted
    assert r.admitted_rate_per_s[1] == pytest.approx(0.0, abs=1e-7) and r.objective == pytest.approx(0.0, abs=1e-7)


def test_a_row_whose_scaled_slack_is_exactly_the_tolerance_counts_as_binding():
    # the reported binding rows are those with slack ≤ BINDING_TOL on the scaled rows; here the
    # kv_memory row 0.5·ỹ − t̃ ≤ 0 at ỹ = 0 has slack t̃, set to exactly the tolerance and to twice it
    from fluid.fleet import LPOptions, build_matrices
    from fluid.lp import BINDING_TOL, _fleet_result

    types = (RequestType("a", 7, 1, 2.0),)
    gpus = (GpuSpec("g", 30, AffineBatchTime(0.5, 1 / 64)),)
    mats = build_matrices(types, gpus, LPOptions())
    zero_duals = {name: np.zeros(A.shape[0]) for name, (A, _, _) in mats.blocks.items()}
    at = _fleet_result(types, gpus, mats, np.array([0.0, BINDING_TOL]), zero_duals, "given")
    assert at.binding == ("kv_memory",)
    beyond = _fleet_result(types, gpus, mats, np.array([0.0, 2 * BINDING_TOL]), zero_duals, "given")
    assert beyond.binding == ()


@pytest.mark.parametrize("backend", ["cvxpy", "linprog"])
def test_an_all_zero_objective_has_objective_and_every_dual_exactly_zero(backend):
    # all weights 0: nothing is worth anything, so every constraint's price is 0, not solver noise
    result = solve_lp(_two_types(), weights=[0.0, 0.0], batch_cap=5, backend=backend)
    assert result.objective == 0.0
    assert sorted(result.duals) == ["admission_upper", "batch_cap", "iteration_time", "kv_memory"]
    for name, dual in result.duals.items():
        assert np.all(np.asarray(dual) == 0.0), (name, dual)
