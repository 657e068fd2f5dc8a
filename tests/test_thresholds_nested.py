"""Nested WAIT (arXiv 2504.11320, §Nested WAIT): segments, p_k, thresholds, θ_k, buffer, choice of L."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluid.batch_time import AffineBatchTime
from fluid.errors import InputError, UnstableWorkloadError
from fluid.workload import RequestType, Workload
from thresholds.conditions import theta_residual
from thresholds.nested import NestedOptions, solve_nested, solve_nested_auto, solve_nested_fixed, solve_theta
from thresholds.segments import LengthDistribution, breakpoints, continue_probs


@st.composite
def stable_workloads(draw):
    m = draw(st.integers(1, 6))
    decodes = draw(st.lists(st.integers(1, 400), min_size=m, max_size=m))
    types = tuple(RequestType(f"t{i}", draw(st.sampled_from([20, 60, 200])), d, draw(st.floats(0.5, 50.0)))
                  for i, d in enumerate(decodes))
    lam_a = sum(t.rate_per_s * t.footprint_token_iterations for t in types)
    load = draw(st.floats(0.01, 0.5))
    return Workload("random", 10**9, AffineBatchTime(draw(st.floats(1e-3, 0.05)), load / lam_a), types)


def _check_solution(w: Workload, sol, rho: float) -> None:
    d0, d_kv, _ = w.batch_time.linear_coefficients()
    kv = 0.0
    for inst in sol.instances:
        n, p, l = inst.thresholds, inst.continue_probs, inst.spec.prefill_tokens
        assert all(isinstance(k, int) and k >= 1 for k in n)
        assert all(a >= b for a, b in zip(n, n[1:]))
        assert all(n[k + 1] / n[k] > p[k] for k in range(len(n) - 1))
        assert inst.bounds[0][0] == 0 and inst.bounds[-1][1] == max(inst.spec.distribution.lengths)
        base = sum(k * sum(l + s for s in range(a, b + 1)) for k, (a, b) in zip(n, inst.bounds))
        assert inst.memory_policy_tokens == pytest.approx(base, rel=1e-12)
        assert inst.memory_required_tokens >= inst.memory_policy_tokens
        kv += base
        assert inst.thetas[0] is None
        for k in range(1, len(n)):
            th = inst.thetas[k]
            if n[k] == n[k - 1]:
                assert th is None
            else:
                assert th > 0 and abs(theta_residual(th, n[k - 1], n[k], p[k - 1])) <= 1e-9
    dt = d0 + d_kv * kv
    assert dt == pytest.approx(sol.iteration_time_s, rel=1e-12)
    for inst in sol.instances:
        assert dt < rho * inst.thresholds[0] / inst.spec.rate_per_s
    assert sol.memory_required_tokens >= sol.memory_policy_tokens


@settings(max_examples=60, deadline=None)
@given(stable_workloads(), st.sampled_from([None, 1, 2, 3, 5]), st.sampled_from(["equal-width", "quantile"]),
       st.sampled_from(["representative", "per_class"]))
def test_nested_thresholds_satisfy_their_conditions(w, segments, rule, prefill_mode):
    options = NestedOptions(segments=segments, segment_rule=rule, prefill_mode=prefill_mode)
    try:
        sol = solve_nested_fixed(w, options, segments)
    except UnstableWorkloadError as err:
        assert "Nearest feasible setting" in str(err)
        return
    # solve_nested_fixed reports its conditions, it does not promise them (solve refuses a broken
    # file): only memory can break here, the thresholds themselves still obey the rule
    broken = [c for c in sol.conditions if not c.holds]
    assert all(c.name == "memory_within_capacity" and c.lhs > c.rhs for c in broken), broken
    _check_solution(w, sol, 1 - options.slack)


@pytest.mark.parametrize("n_prev,n_next,p", [(10, 9, 0.5), (100, 60, 0.55), (5000, 4999, 0.9), (2, 1, 0.01), (30, 29, 0.95)])
def test_theta_solves_its_equation(n_prev, n_next, p):
    th = solve_theta(n_prev, n_next, p)
    assert th > 0 and abs(theta_residual(th, n_prev, n_next, p)) <= 1e-9
    # the equation in its original form: exp(−θ n_k)(1 − p + p e^θ)^{n_{k−1}} = 1
    assert math.exp(-th * n_next + n_prev * math.log(1 - p + p * math.exp(th))) == pytest.approx(1.0, abs=1e-9)


def test_segments_and_continue_probabilities():
    dist = LengthDistribution.from_pairs([(20, 20.0), (40, 40.0), (80, 80.0), (160, 160.0)])
    assert breakpoints(dist, "types") == (20, 40, 80, 160)
    assert continue_probs(dist, (20, 40, 80, 160)) == pytest.approx((280 / 300, 240 / 280, 160 / 240, 0.0))
    assert breakpoints(dist, "equal-width", 2) == (80, 160)  # edges 80, 160
    assert breakpoints(dist, "equal-width", 4) == (40, 80, 160)  # edge 120 snaps to 80: merged
    assert breakpoints(dist, "quantile", 2) == (160,)  # half of the traffic is d160
    assert breakpoints(dist, "equal-width", 1) == (160,)


def _chat(rate_scale: float) -> Workload:
    try:
        from fluid.workload_io import load_workload

        return load_workload("chat-d-ten-bins", rate_scale=rate_scale)
    except Exception:  # the preset is configuration (d) of the experiments of arXiv 2504.11320; build it if the preset is unavailable
        ratio = [23, 11, 8, 7, 6, 4, 3, 2, 1, 1]
        types = tuple(RequestType(f"d{50 * (i + 1)}", 60, 50 * (i + 1), 55.0 * r / 66 * rate_scale) for i, r in enumerate(ratio))
        return Workload("chat-d-ten-bins", 450800, AffineBatchTime(0.045, 4.8e-07), types)


@pytest.mark.parametrize(("distinct", "tried"), [(20, [1, 2, 3, 4, 5, 10, 20]), (19, [1, 2, 3, 4, 5, 10]), (4, [1, 2, 3, 4])])
def test_auto_tries_the_documented_counts_up_to_the_number_of_decode_lengths(distinct, tried):
    # L ∈ {1, 2, 3, 4, 5, 10, 20}, each at most the number of distinct decode lengths: exactly 20
    # lengths try L = 20, 19 do not
    types = tuple(RequestType(f"d{k}", 50, 5 * k, 0.2) for k in range(1, distinct + 1))
    sol = solve_nested_auto(Workload("lengths", 10**7, AffineBatchTime(0.01, 1e-7), types), NestedOptions(segments="auto"))
    assert [e["segments"] for e in sol.curve] == tried


def test_chat_preset_memory_is_u_shaped_in_the_number_of_segments():
    sol = solve_nested_auto(_chat(0.5), NestedOptions(segments="auto"))
    curve = [(e["segments"], e["memory_required_tokens"]) for e in sol.curve if e["memory_required_tokens"] is not None]
    mems = [m for _, m in curve]
    best = mems.index(min(mems))
    assert 0 < best < len(mems) - 1, curve
    assert all(a > b for a, b in zip(mems[: best + 1], mems[1: best + 1]))
    assert all(a < b for a, b in zip(mems[best:], mems[best + 1:]))
    chosen = min((e for e in sol.curve if e["conditions_hold"]), key=lambda e: e["memory_required_tokens"])
    assert sol.num_segments_requested == chosen["segments"]
    assert sol.memory_required_tokens == pytest.approx(chosen["memory_required_tokens"])


def test_fixed_segments_over_memory_raise_with_nearest_setting():
    w = _chat(0.5)
    small = Workload(w.name, 200000, w.batch_time, w.types)
    with pytest.raises(UnstableWorkloadError, match=r"C ≥ \d+ tokens"):
        solve_nested(small, NestedOptions(segments=4))


def test_batch_cap_mode_reports_conditions_instead_of_raising():
    w = Workload("c", 14500, AffineBatchTime(8.2e-4, 2.8e-7),
                 tuple(RequestType(f"d{d}", 10, d, float(d)) for d in (20, 40, 80, 160)))
    sol = solve_nested(w, NestedOptions(batch_cap=128))
    n = sol.instances[0].thresholds
    widths = [b - a + 1 for a, b in sol.instances[0].bounds]
    assert abs(sum(k * wd for k, wd in zip(n, widths)) - 128) <= sum(widths)  # Σ width·n_k ≈ cap
    assert sol.mode == "batch_cap" and any(c.name == "iteration_time" for c in sol.conditions)


def test_the_buffer_is_reported_by_default_and_required_only_in_theorem_mode():
    """Default: M^π must fit C, the buffer is reported. `memory_bound="theorem"` still refuses a C
    between M^π and M^π + buffer, naming the memory condition."""
    from dataclasses import replace

    w = Workload("mixed", 10**7, AffineBatchTime(0.02, 5e-8),
                  tuple(RequestType(f"p{p}d{d}", p, d, r) for p, d, r in [(20, 50, 10.0), (20, 200, 5.0), (200, 50, 4.0)]))
    free = solve_nested(w, NestedOptions())
    assert free.buffer_tokens > 0 and free.memory_required_tokens == pytest.approx(free.memory_policy_tokens)
    between = replace(w, kv_capacity_tokens=int(free.memory_policy_tokens + free.buffer_tokens / 2))
    assert solve_nested(between, NestedOptions()).holds
    with pytest.raises(UnstableWorkloadError, match="memory_within_capacity"):
        solve_nested(between, NestedOptions(memory_bound="theorem"))
    exact = replace(w, kv_capacity_tokens=int(free.memory_policy_tokens + free.buffer_tokens) + 1)
    assert solve_nested(exact, NestedOptions(memory_bound="theorem")).memory_required_tokens <= exact.kv_capacity_tokens


def test_theta_residual_by_hand_at_its_edge_probabilities():
    from thresholds.conditions import theta_residual

    # f(θ) = −θ n_k + n_(k−1) log(1 − p + p e^θ): at p = 0 the log term vanishes, at p = 1 it is θ n_(k−1)
    assert theta_residual(2.0, 5, 4, 0.0) == -8.0
    assert theta_residual(2.0, 5, 4, -0.0) == -8.0
    assert theta_residual(2.0, 5, 4, 1.0) == 2.0
    assert theta_residual(2.0, 5, 2, 1.0) == 6.0  # θ·(n_(k−1) − n_k) = 2·3
    assert theta_residual(0.5, 5, 2, 0.0) == -1.0  # −θ·n_k
    assert theta_residual(2.0, 5, 4, 0.5) == pytest.approx(-8.0 + 5 * math.log(0.5 + 0.5 * math.exp(2.0)))
    assert theta_residual(2.0, 5, 4, 1e-300) == pytest.approx(-8.0)  # continuous into p = 0


def test_the_fluid_repair_gives_up_after_100_000_steps_with_a_typed_error(monkeypatch):
    # ΔT(n) pinned at ρ·n_1/Σλ (the strict condition fails by a hair, and never by more than the
    # 1000× blow-up guard): the repair takes 100,000 steps, one ΔT(n) each, then a typed error
    import thresholds.nested as nested

    w = Workload("never", 10**12, AffineBatchTime(1.0, 1e-9), (RequestType("a", 10, 4, 1000.0),
                                                                 RequestType("b", 10, 9, 1000.0)))
    real_totals, calls = nested._totals, []

    def never_settles(workload, layouts, n1s):
        calls.append(1)
        thresholds, _ = real_totals(workload, layouts, n1s)
        return thresholds, 0.95 * n1s[0] / 2000.0

    monkeypatch.setattr(nested, "_totals", never_settles)
    with pytest.raises(UnstableWorkloadError, match="did not settle"):
        solve_nested_fixed(w, NestedOptions(slack=0.05), None)
    assert len(calls) == 100_000


def test_theta_when_n_k_is_a_hair_above_p_times_n_k_minus_1():
    # p·n_(k−1) = 0.403·260933 = 105155.999: n_k = 105156 clears it by 0.001, so f dips below 0 by
    # only ~8e-12 while its terms are ~1.7e-3 (below their rounding). The root is twice the
    # minimum to O(θ³): 3.1858227351e-8 (50-digit arithmetic); the root-finder alone raised here
    th = solve_theta(260933, 105156, 0.403)
    assert th == pytest.approx(3.1858227351e-8, rel=1e-8)
    # one step further from the edge the bracketed root-finder runs and agrees with the same rule
    assert solve_theta(260933, 105157, 0.403) == pytest.approx(
        2 * math.log(105157 * 0.597 / (0.403 * (260933 - 105157))), rel=1e-4)


def test_theta_refuses_a_ratio_above_p_whose_minimum_rounds_to_exactly_zero():
    # n_k = 1 > p·n_(k−1) = 20 · 0.049999999999999996 (one ulp below 1/20), yet the minimum
    # θ_min = log(n_k (1 − p) / (p (n_(k−1) − n_k))) is log(1.0) = 0 exactly: no positive root can be
    # told apart, so it is refused like p·n_(k−1) ≥ n_k (a θ of 0 would divide the tail term by 0)
    p = math.nextafter(1 / 20, 0)
    assert 1 > p * 20 and 1 * (1 - p) / (p * (20 - 1)) == 1.0
    with pytest.raises(InputError, match=r"θ needs n_k > p·n_\(k−1\), got n_k=1, n_\(k−1\)=20"):
        solve_theta(20, 1, p)


def test_a_load_not_below_the_target_utilisation_is_a_typed_error():
    # long outputs come with long prompts: the representative prefill (505) underrates the load, so
    # Nested WAIT's own load stays below ρ = 0.95 while L = 0.97 is not: no fluid point at λ/ρ
    from fluid.equilibrium import closed_form

    w = Workload("corr", 10**9, AffineBatchTime(0.01, 1e-6),
                 (RequestType("short", 10, 10, 1.0), RequestType("long", 1000, 100, 1.0)))
    w = w.scaled(0.97 / closed_form(w).load_factor)
    for eta in (0.05, 0.0):
        with pytest.raises(UnstableWorkloadError, match=r"L = 0.97 is not below the target utilisation ρ = 1 − slack = 0.95"):
            solve_nested(w, NestedOptions(slack=0.05, eta=eta))
    assert solve_nested(w, NestedOptions(slack=0.02)).holds  # ρ = 0.98 > L: solved


def test_buffer_log_term_by_hand():
    from thresholds.conditions import buffer_log_term

    # ln(m ζ B / δ): m = 2 segments, ζ = 3, B = 100 iterations, δ = 0.01 → ln(60000)
    assert buffer_log_term(2, 100.0, 0.01, 3.0) == pytest.approx(math.log(60_000), rel=1e-15)
    assert buffer_log_term(2, 0.5, 0.01, 3.0) == pytest.approx(math.log(600), rel=1e-15)  # B < 1 counts as 1
    assert buffer_log_term(1, 1.0, 0.5, 0.25) == 0.0  # ln(0.5) < 0: floored at 0


@pytest.mark.parametrize(("first_dt", "blows_up"), [(1000.0, False), (math.nextafter(1000.0, math.inf), True)])
def test_the_blow_up_guard_starts_just_past_1000_times_the_start(monkeypatch, first_dt, blows_up):
    # the start x0 pinned at 1 s (the fluid ΔT* at λ/ρ, faked); a first ΔT(n) of exactly 1000·x0 is
    # repaired (the next settles), one float beyond it is the blow-up error
    from types import SimpleNamespace

    import thresholds.nested as nested

    w = Workload("guard", 10**9, AffineBatchTime(0.001, 1e-9), (RequestType("a", 10, 4, 1.0), RequestType("b", 10, 9, 1.0)))
    real_totals, dts = nested._totals, iter([first_dt, 0.5])
    monkeypatch.setattr(nested, "closed_form", lambda workload: SimpleNamespace(iteration_time_star_s=1.0))
    monkeypatch.setattr(nested, "_totals", lambda workload, layouts, n1s: (real_totals(workload, layouts, n1s)[0], next(dts)))
    if blows_up:
        with pytest.raises(UnstableWorkloadError, match="do not settle"):
            solve_nested_fixed(w, NestedOptions(slack=0.05), None)
    else:
        sol = solve_nested_fixed(w, NestedOptions(slack=0.05), None)
        assert sol.iteration_time_s == 0.5 and sol.instances[0].thresholds[0] == math.floor(2 * 1000.0 / 0.95) + 1


def test_auto_segments_over_memory_lists_each_count_and_the_least_c_that_works():
    # two decode lengths: L = 1 and L = 2 are tried; C between M* and the smaller requirement fits neither
    from fluid.equilibrium import closed_form

    base = Workload("hand", 10**9, AffineBatchTime(0.02, 1e-6), (RequestType("a", 20, 10, 300.0), RequestType("b", 20, 30, 100.0)))
    options = NestedOptions(slack=0.05, segments="auto")
    needs = [solve_nested_fixed(base, options, count).memory_required_tokens for count in (1, 2)]
    assert needs[1] < needs[0]
    cap = math.floor((closed_form(base).memory_star_tokens + needs[1]) / 2)
    with pytest.raises(UnstableWorkloadError) as info:
        solve_nested(Workload("hand", cap, base.batch_time, base.types), options)
    text = str(info.value)
    assert f"within C = {cap} tokens (memory requirement by L: L=1: {needs[0]:.6g} tokens; L=2: {needs[1]:.6g} tokens)" in text
    assert f"Nearest feasible setting: C ≥ {math.ceil(needs[1])} tokens (L=2), or a lower rate" in text
    # at that C it is solved, at L = 2
    assert solve_nested(Workload("hand", math.ceil(needs[1]), base.batch_time, base.types), options).num_segments_requested == 2


def test_the_fluid_mode_refuses_an_unstable_workload_the_batch_cap_recipe_reports_it():
    # L = 1e-3·(100·11·15 + …) > 1: the fluid mode refuses with the fluid command's message; the
    # batch-cap recipe returns its thresholds with the broken condition reported
    hot = Workload("hot", 10**9, AffineBatchTime(0.01, 1e-3), (RequestType("a", 10, 10, 100.0), RequestType("b", 10, 4, 50.0)))
    with pytest.raises(UnstableWorkloadError, match=r"workload 'hot' is unstable: load factor L = .* ≥ 1"):
        solve_nested(hot, NestedOptions())
    sol = solve_nested(hot, NestedOptions(batch_cap=64))
    assert sol.mode == "batch_cap" and not sol.holds
    assert [c.name for c in sol.conditions if not c.holds] == ["iteration_time"]


@pytest.mark.parametrize("field, ok, bad", [("eta", (0.0, 0.999), (1.0, -1e-9, 1.5)), ("delta", (1e-9, 0.999), (0.0, 1.0, 2.0)),
                                            ("horizon_s", (1e-9, 3600.0), (0.0, -1.0))])
def test_nested_options_take_their_open_and_closed_ends_as_documented(field, ok, bad):
    """η in [0, 1), δ in (0, 1), horizon > 0: each end taken or refused naming its field."""
    for value in ok:
        NestedOptions(**{field: value})
    for value in bad:
        with pytest.raises(InputError, match=f"field '{field}'"):
            NestedOptions(**{field: value})


def test_the_default_slack_is_0_05_the_target_utilisation_0_95():
    # NestedOptions() solves at ρ = 1 − 0.05 = 0.95, as solve_wait's default: a load factor of 0.92
    # is solved, one of 0.97 is refused naming ρ = 0.95 (a default slack of 0.1 would refuse both)
    from fluid.equilibrium import closed_form

    w = Workload("corr", 10**9, AffineBatchTime(0.01, 1e-6),
                 (RequestType("short", 10, 10, 1.0), RequestType("long", 1000, 100, 1.0)))
    at_092 = w.scaled(0.92 / closed_form(w).load_factor)
    assert solve_nested(at_092).holds
    assert solve_nested(at_092).instances[0].thresholds == solve_nested(at_092, NestedOptions(slack=0.05)).instances[0].thresholds
    with pytest.raises(UnstableWorkloadError, match=r"L = 0.97 is not below the target utilisation ρ = 1 − slack = 0.95"):
        solve_nested(w.scaled(0.97 / closed_form(w).load_factor))
    assert NestedOptions().slack == 0.05


def test_the_over_memory_diagnosis_bisects_rate_scales_between_0_and_the_failing_1(monkeypatch):
    # two segments need 6540 tokens at scale 1 and C is 5232: the diagnosis bisects the rate scale
    # on [0, 1] (1 is the workload that failed), 30 halvings starting at 1/2, and reports the
    # largest scale tried whose thresholds fit
    from thresholds import nested

    base = Workload("hand", 5232, AffineBatchTime(0.02, 1e-6), (RequestType("a", 20, 10, 300.0), RequestType("b", 20, 30, 100.0)))
    real, tried = nested.solve_nested_fixed, []

    def spy(workload, options, num_segments):
        sol = real(workload, options, num_segments)
        tried.append((workload.total_rate_per_s / base.total_rate_per_s, sol.holds))
        return sol

    monkeypatch.setattr(nested, "solve_nested_fixed", spy)
    with pytest.raises(UnstableWorkloadError, match="memory_within_capacity: 6540 vs 5232") as info:
        solve_nested(base, NestedOptions(segments=2))
    scales = [s for s, _ in tried[1:]]  # the first call is the failing solve itself, at scale 1
    assert tried[0] == (1.0, False)
    assert len(scales) == 30 and scales[0] == pytest.approx(0.5, rel=1e-15) and max(scales) < 1.0
    best = max(s for s, ok in tried[1:] if ok)
    assert f"rate scale ≤ {best:.4g} at this C" in str(info.value)
