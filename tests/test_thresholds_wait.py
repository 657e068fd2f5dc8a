"""WAIT thresholds (arXiv 2504.11320, §WAIT): integer thresholds keep ΔT(n) ≤ n_j/λ_j and M* ≤ M^π ≤ C."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluid.batch_time import AffineBatchTime, Linear3BatchTime
from fluid.equilibrium import closed_form
from fluid.errors import InputError, UnstableWorkloadError
from fluid.workload import RequestType, Workload
from thresholds.wait import _least_feasible, solve_wait, solve_wait_batch_cap


def _footprint(t: RequestType) -> float:
    return (t.decode + 1) * (t.prefill + t.decode / 2)


def _iteration_time_s(w: Workload, n) -> float:
    d0, d_kv, d_new = w.batch_time.linear_coefficients()
    return d0 + sum(k * (d_kv * _footprint(t) + d_new * (t.prefill + t.decode)) for t, k in zip(w.types, n))


@st.composite
def stable_workloads(draw):
    m = draw(st.integers(1, 4))
    types = tuple(
        RequestType(f"t{i}", draw(st.integers(1, 300)), draw(st.integers(1, 300)), draw(st.floats(0.1, 200.0)))
        for i in range(m)
    )
    lam_a = sum(t.rate_per_s * _footprint(t) for t in types)
    lam_new = sum(t.rate_per_s * (t.prefill + t.decode) for t in types)
    load = draw(st.floats(0.02, 0.85))
    new_share = draw(st.floats(0.0, 0.5))
    d0 = draw(st.floats(1e-3, 0.05))
    bt = Linear3BatchTime(d0, load * (1 - new_share) / lam_a, load * new_share / lam_new)
    mem_star = d0 / (1 - load) * lam_a
    capacity = max(1, math.ceil(mem_star * draw(st.floats(1.05, 30.0))))
    return Workload("random", capacity, bt, types)


@settings(max_examples=60, deadline=None)
@given(stable_workloads(), st.sampled_from([0.0, 0.05, 0.1]))
def test_wait_thresholds_satisfy_their_conditions(w, slack):
    point = closed_form(w)
    if point.load_factor >= 1 - slack:
        with pytest.raises(UnstableWorkloadError, match="target utilisation"):
            solve_wait(w, slack=slack)
        return
    try:
        sol = solve_wait(w, slack=slack)
    except UnstableWorkloadError as err:
        # the error claims that even the least ΔT-feasible integers exceed C: check that claim
        least = _least_feasible(w, 1 - slack, math.inf)
        assert sum(k * _footprint(t) for t, k in zip(w.types, least)) > w.kv_capacity_tokens
        assert "C ≥" in str(err)
        return
    n = sol.thresholds
    assert all(isinstance(k, int) and k >= 1 for k in n)
    dt = _iteration_time_s(w, n)
    assert dt == pytest.approx(sol.iteration_time_s, rel=1e-12)
    rho = 1 - slack
    for t, k in zip(w.types, n):
        assert dt <= rho * k / t.rate_per_s * (1 + 1e-9)  # strict slack at target utilisation ρ
    mem = sum(k * _footprint(t) for t, k in zip(w.types, n))
    assert point.memory_star_tokens <= mem * (1 + 1e-12) <= w.kv_capacity_tokens * (1 + 1e-12)
    assert sol.holds and all(c.holds for c in sol.conditions)


def test_fluid_point_rounded_up_is_repaired_when_rounding_breaks_the_time_condition():
    w = Workload("tight", 10**7, AffineBatchTime(0.01, 2e-5),
                 (RequestType("a", 10, 10, 100.0), RequestType("b", 1, 1, 1000.0)))
    naive = tuple(math.ceil(x) for x in closed_form(w).prompts_per_stage)
    dt_naive = _iteration_time_s(w, naive)
    assert any(dt_naive > k / t.rate_per_s for t, k in zip(w.types, naive))  # rounding up alone breaks it
    sol = solve_wait(w, slack=0.0)
    dt = _iteration_time_s(w, sol.thresholds)
    assert all(dt <= k / t.rate_per_s * (1 + 1e-12) for t, k in zip(w.types, sol.thresholds))
    assert all(k >= j for k, j in zip(sol.thresholds, naive))


def test_just_below_the_target_utilisation_the_repair_starts_at_the_fluid_point_of_lambda_over_rho():
    # L = 0.94999 at ρ = 0.95: a = 51·125 = 6375 and 11·35 = 385, L = 1e-6·λ·(6375 + 2·385) per unit
    # of the rate λ of "a"; the fluid point of λ/ρ has ΔT* = d0 / (1 − L/ρ) = 0.01·0.95/1e-5 = 950 s,
    # so n_j = λ_j ΔT*/ρ = 1000 λ_j: ceil(132958.7) and ceil(265917.4). Started there the thresholds
    # hold at once; started at the fluid point of λρ (ΔT* = 0.01/(1 − Lρ) ≈ 0.1 s) the repair closes
    # its gap to 950 s by a factor of only L/ρ ≈ 1 − 1e-5 per step and gives up after 100,000 steps
    w = Workload("near", 10**15, AffineBatchTime(0.01, 1e-6), (RequestType("a", 100, 50, 1.0), RequestType("b", 30, 10, 2.0)))
    scale = 0.94999 / 7145e-6
    w = w.scaled(scale)
    assert closed_form(w).load_factor == pytest.approx(0.94999, rel=1e-12)
    sol = solve_wait(w, slack=0.05)
    assert sol.thresholds == (math.ceil(1000 * scale), math.ceil(2000 * scale)) == (132959, 265918)


def test_over_memory_error_names_gap_and_nearest_setting():
    base = Workload("small", 10**9, AffineBatchTime(0.02, 1e-6),
                    (RequestType("a", 20, 10, 300.0), RequestType("b", 20, 30, 100.0)))
    need = solve_wait(base, slack=0.05).memory_policy_tokens
    cap = math.floor((closed_form(base).memory_star_tokens + need) / 2)  # M* fits, the integers do not
    w = Workload("small", cap, base.batch_time, base.types)
    with pytest.raises(UnstableWorkloadError) as info:
        solve_wait(w, slack=0.05)
    text = str(info.value)
    assert f"above C = {cap} by {need - cap:.6g}" in text and f"C ≥ {math.ceil(need)}" in text
    scale = float(text.split("rate scale ≤ ")[1].split()[0])
    assert 0 < scale < 1
    assert solve_wait(w.scaled(scale * 0.999), slack=0.05).holds  # the suggested setting works
    with pytest.raises(UnstableWorkloadError):
        solve_wait(w.scaled(min(1.0, scale * 1.05)), slack=0.05)


def test_unstable_load_is_exit_3_with_max_rate_scale():
    w = Workload("hot", 10**9, AffineBatchTime(0.01, 1e-3), (RequestType("a", 10, 10, 100.0),))
    with pytest.raises(UnstableWorkloadError, match=r"load factor L = .* ≥ 1") as info:
        solve_wait(w)
    assert info.value.exit_code == 3


def test_batch_cap_recipe_and_reported_conditions():
    w = Workload("cap", 10**6, AffineBatchTime(0.01, 1e-7),
                 (RequestType("a", 20, 100, 600.0), RequestType("b", 20, 200, 400.0), RequestType("c", 20, 300, 200.0)))
    sol = solve_wait_batch_cap(w, 448)
    total = w.total_rate_per_s
    assert sol.thresholds == tuple(max(1, round(448 * t.rate_per_s / total / (t.decode + 1))) for t in w.types)
    dt = _iteration_time_s(w, sol.thresholds)
    for t, k, c in zip(w.types, sol.thresholds, sol.conditions):
        assert c.holds == (dt <= k / t.rate_per_s * (1 + 1e-12))
    assert sol.mode == "batch_cap" and sol.batch_cap == 448


@pytest.mark.parametrize("slack", [-0.1, 1.0, 2, True])
def test_bad_slack_is_input_error(slack):
    w = Workload("x", 10**6, AffineBatchTime(0.01, 1e-7), (RequestType("a", 10, 10, 1.0),))
    with pytest.raises(InputError, match="slack"):
        solve_wait(w, slack=slack)


def test_the_rounding_repair_gives_up_after_100_000_steps_with_a_typed_error(monkeypatch):
    # an iteration time that stays just above every n_j/λ_j, however far n grows: the repair takes
    # 100,000 steps (one ΔT(n) each), then stops with a typed error that names the budget
    import thresholds.wait as wait

    w = Workload("never", 10**12, AffineBatchTime(0.01, 1e-7), (RequestType("a", 10, 10, 100.0),))
    calls = []

    def never_fits(time, shapes):
        calls.append(1)
        return min(n / 100.0 for _, _, n in shapes) * (1 + 1e-9)

    monkeypatch.setattr(wait, "wait_iteration_time_s", never_fits)
    with pytest.raises(UnstableWorkloadError, match="did not settle in 100000 steps"):
        wait._least_feasible(w, 1.0, math.inf)
    assert len(calls) == 100_000


@pytest.mark.parametrize("slack", [0.05, 0.0])
def test_over_memory_error_when_one_prompt_per_stage_already_exceeds_c(slack):
    # l = 10, l' = 9: a = 10·(10 + 4.5) = 145 tokens for n = 1, the least there is; C = 100. The fluid
    # point (0.01 req/s) fits, the integers do not, and no rate scale helps
    w = Workload("tiny", 100, AffineBatchTime(0.01, 1e-7), (RequestType("a", 10, 9, 0.01),))
    with pytest.raises(UnstableWorkloadError) as info:
        solve_wait(w, slack=slack)
    text = str(info.value)
    assert "the least feasible thresholds [1] need M^π = 145 KV tokens, above C = 100 by 45 (45.00%)" in text
    assert "no rate scale helps (one prompt per stage of every type, n_j = 1, already needs Σ a_j = 145 tokens)" in text
    assert text.endswith("or C ≥ 145 tokens; a smaller --slack also needs less memory." if slack else "or C ≥ 145 tokens.")
