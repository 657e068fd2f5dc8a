"""Threshold recipes on hand-computed cases, and the conditions at their exact boundaries.

Every expected number below is worked out by hand in the comment next to it (arXiv 2504.11320
§3–4 for the recipes; `thresholds/segments.py`, `thresholds/nested.py`, `thresholds/wait.py`).
"""

from __future__ import annotations

import math

import pytest

from fluid.batch_time import AffineBatchTime, Linear3BatchTime
from fluid.equilibrium import closed_form
from fluid.errors import UnstableWorkloadError
from fluid.workload import RequestType, Workload
from thresholds.conditions import (
    LinearTime,
    at_most,
    segment_kv_tokens,
    segment_new_tokens,
    strictly_above,
    strictly_below,
    wait_conditions,
)
from thresholds.nested import NestedOptions, solve_nested, solve_nested_fixed
from thresholds.segments import LengthDistribution, breakpoints, continue_probs, q_recipe, round_thresholds
from thresholds.wait import require_fluid_stable, solve_wait, solve_wait_batch_cap


def _workload(types, d1_s=1e-4, capacity=10**9, d0_s=0.01) -> Workload:
    return Workload("hand", capacity, AffineBatchTime(d0_s, d1_s), tuple(types))


# --- recipes ----------------------------------------------------------------------------------
def test_wait_batch_cap_recipe_divides_by_the_number_of_stages_l_prime_plus_one():
    # shares 0.75 and 0.25; B = 120: n = round(120·0.75/(9+1)) = 9 and round(120·0.25/(19+1)) = round(1.5) = 2.
    # Dividing by l' instead (9 and 19 stages) would give round(10.0) = 10 and round(1.58) = 2.
    w = _workload([RequestType("a", 10, 9, 3.0), RequestType("b", 10, 19, 1.0)])
    sol = solve_wait_batch_cap(w, 120)
    assert sol.thresholds == (9, 2)
    assert sol.mode == "batch_cap" and sol.batch_cap == 120


def test_wait_batch_cap_recipe_keeps_at_least_one_prompt_per_stage():
    # a rare type: round(10·0.01/(4+1)) = round(0.02) = 0, raised to 1
    w = _workload([RequestType("a", 10, 4, 99.0), RequestType("rare", 10, 4, 1.0)])
    assert solve_wait_batch_cap(w, 10).thresholds == (2, 1)  # round(10·0.99/5) = round(1.98) = 2


def test_segment_token_counts_by_hand():
    # stage 0 is the prefill (l = 10 new tokens), stages 1..5 one token each: 10 + 5 = 15
    assert segment_new_tokens(10, 0, 5) == 15
    # a later segment, stages 6..9: four decode tokens, no prefill
    assert segment_new_tokens(10, 6, 9) == 4
    # KV held at stages 0, 1, 2 with l = 10: 10 + 11 + 12 = 33; at stages 6..9: 16+17+18+19 = 70
    assert segment_kv_tokens(10, 0, 2) == 33
    assert segment_kv_tokens(10, 6, 9) == 70


def test_continuation_probabilities_and_ratios_by_hand():
    dist = LengthDistribution.from_pairs([(4, 1.0), (9, 2.0), (20, 1.0)])
    points = breakpoints(dist, "types")
    assert points == (4, 9, 20)
    # 3 of 4 requests/s decode past 4; of those, 1 of 3 past 9; the last segment is 0 by definition
    assert continue_probs(dist, points) == pytest.approx((0.75, 1 / 3, 0.0), rel=1e-15)
    # q_k = min(p_k + η, 0.99) for every segment but the last
    assert q_recipe((0.75, 1 / 3, 0.0), 0.05) == pytest.approx((0.8, 1 / 3 + 0.05), rel=1e-15)
    assert q_recipe((0.97, 0.0), 0.05) == (0.99,)


@pytest.mark.parametrize(
    ("p", "n1", "expected"),
    [
        (0.98, 1000, 990),  # q = 0.99: ⌈990⌉ = 990 > ⌊980⌋ + 1 = 981
        (0.99, 1000, 991),  # q = p = 0.99: the repair ⌊990⌋ + 1 = 991 keeps n_2/n_1 > p
        (0.995, 1000, 996),  # q = 0.99 < p: the repair ⌊995⌋ + 1 = 996 wins over ⌈990⌉
        (0.995, 100, 100),  # ⌊99.5⌋ + 1 = 100: the ratio 1 > 0.995
        (0.1, 20, 3),  # q = 0.15: 0.15·20 is 3.0000000000000004 in floats; the tolerance keeps ⌈3⌉ = 3
    ],
)
def test_rounding_of_thresholds_near_the_099_cap(p, n1, expected):
    q = q_recipe((p, 0.0), 0.05)
    n = round_thresholds(n1, (p, 0.0), q)
    assert n == (n1, expected)
    assert n[1] / n[0] > p


def test_rounded_thresholds_start_at_least_at_one():
    # n_1 = 0 (a batch cap far below one prompt per stage) still admits one request: (1, 1), not (0, 1)
    assert round_thresholds(0, (0.5, 0.0), (0.6,)) == (1, 1)
    assert round_thresholds(1, (0.5, 0.0), (0.6,)) == (1, 1)


def test_nested_buffer_tail_by_hand_and_zero_where_theta_has_no_root():
    # Σ_{k≥2} (l + l'_{k−1})(n_k + ln-term/θ_k): segment 2 (θ = 0.5) adds (100 + 9)(6 + 2/0.5) = 1090,
    # segment 3 (θ None: n_3 = n_2, never above its threshold) adds (100 + 19)·4 = 476 and no tail
    from thresholds.conditions import nested_buffer_tokens

    bounds = [(0, 9), (10, 19), (20, 29)]
    assert nested_buffer_tokens(100, bounds, [8, 6, 4], [None, 0.5, None], 2.0) == 1090 + 476
    assert nested_buffer_tokens(100, bounds, [8, 6, 4], [None, 0.5, 0.25], 2.0) == 1090 + 119 * (4 + 8)


def test_nested_batch_cap_must_be_a_whole_number_of_requests():
    from fluid.errors import InputError

    with pytest.raises(InputError, match=r"field 'batch_cap'.*positive integer or null, got 2.5"):
        NestedOptions(batch_cap=2.5)
    assert NestedOptions(batch_cap=2).batch_cap == 2 and NestedOptions(batch_cap=None).batch_cap is None


def test_nested_batch_cap_recipe_counts_segment_widths_in_stages():
    # decode lengths 4 and 9 at equal rates: segments (0, 4) and (5, 9), 5 stages each; p_1 = 0.5,
    # q_1 = 0.55. Σ width·ratio = 5·1 + 5·0.55 = 7.75 prompts per unit of n_1, so B = 62 gives
    # n_1 = round(62 / 7.75) = 8 (widths of 4 stages would give round(62 / 6.2) = 10), and
    # n_2 = max(⌈0.55·8⌉, ⌊0.5·8⌋ + 1) = max(5, 5) = 5.
    w = _workload([RequestType("short", 10, 4, 1.0), RequestType("long", 10, 9, 1.0)])
    sol = solve_nested_fixed(w, NestedOptions(batch_cap=62), None)
    (inst,) = sol.instances
    assert inst.bounds == ((0, 4), (5, 9))
    assert inst.continue_probs == (0.5, 0.0)
    assert inst.thresholds == (8, 5)
    # base memory Σ_k n_k Σ_{s∈k}(l+s) = 8·(5·10 + 10) + 5·(5·10 + 35) = 480 + 425
    assert inst.memory_policy_tokens == 905


# --- conditions at the boundary ----------------------------------------------------------------
def test_condition_helpers_at_float_equality():
    assert at_most("x", 0.3, 0.3).holds
    assert at_most("x", 0.1 + 0.2, 0.3).holds  # 0.30000000000000004: within the relative tolerance
    assert not at_most("x", 0.3 * (1 + 1e-9), 0.3).holds
    assert not strictly_below("x", 0.3, 0.3).holds and strictly_below("x", 0.2, 0.3).holds
    assert not strictly_above("x", 0.3, 0.3).holds and strictly_above("x", 0.4, 0.3).holds


def test_wait_conditions_hold_exactly_at_the_boundary():
    # ΔT(n) = 0.5 + 0.125·(n·a) with a = (1+1)(3 + 1/2) = 7, n = 2: 0.5 + 1.75 = 2.25 s; n/λ = 2/λ.
    time = LinearTime(0.5, 0.125, 0.0)
    exact = wait_conditions(time, [("t", 3, 1, 2 / 2.25, 2)], kv_capacity_tokens=14, memory_star_tokens=14.0)
    assert [c.name for c in exact] == ["iteration_time[t]", "memory_at_least_fluid", "memory_within_capacity"]
    assert all(c.holds for c in exact)  # ΔT = n/λ, M* = M^π = C = 14: every ≤ holds with equality
    over = wait_conditions(time, [("t", 3, 1, 2 / 2.25, 2)], kv_capacity_tokens=13, memory_star_tokens=14.0)
    assert [c.holds for c in over] == [True, True, False]


def test_load_factor_exactly_at_the_target_is_refused():
    # L = d1·λ·a = (0.75/9)·1·9 = 0.75 exactly (a = (1+1)(4 + 1/2) = 9): at slack 0.25, ρ = 0.75 = L.
    w = _workload([RequestType("t", 4, 1, 1.0)], d1_s=0.75 / 9)
    assert closed_form(w).load_factor == 0.75
    with pytest.raises(UnstableWorkloadError, match="not below the target"):
        solve_wait(w, slack=0.25)
    assert solve_wait(w, slack=0.2).holds  # ρ = 0.8 > L: solvable


def test_load_factor_exactly_one_is_unstable():
    w = _workload([RequestType("t", 4, 1, 1.0)], d1_s=1 / 9)
    point = closed_form(w)
    assert point.load_factor == 1.0
    with pytest.raises(UnstableWorkloadError, match="unstable"):
        require_fluid_stable(w, point)


def test_continuation_probability_past_the_longest_length_is_zero():
    # a breakpoint beyond the support: nobody enters the second segment, p = 0 (no 0/0)
    dist = LengthDistribution.from_pairs([(4, 1.0), (9, 1.0)])
    assert continue_probs(dist, (9, 12)) == (0.0, 0.0)
    assert continue_probs(dist, (4, 12)) == (0.5, 0.0)


def test_auto_segment_counts_follow_the_instance_with_the_most_lengths():
    # per prefill class: one instance with 1 decode length, one with 3 distinct lengths, so the
    # candidate counts are L = 1, 2, 3 (capped by the larger, not the smaller, number of lengths)
    w = _workload([RequestType("a", 10, 5, 1.0), RequestType("b", 50, 4, 1.0), RequestType("c", 50, 9, 1.0),
                   RequestType("d", 50, 20, 1.0)], d1_s=1e-5, capacity=10**8)
    sol = solve_nested(w, NestedOptions(segments="auto", prefill_mode="per_class", slack=0.1))
    assert [e["segments"] for e in sol.curve] == [1, 2, 3]


def test_a_nested_policy_file_checks_the_solvers_iteration_time():
    # the file's own condition recomputes ΔT(n) from its segments: kv and new tokens of every segment
    from thresholds.build import nested_policy
    from thresholds.policy_parse import nested_file_conditions

    types = (RequestType("short", 10, 4, 1.0), RequestType("long", 10, 9, 1.0))
    w = Workload("hand", 10**6, Linear3BatchTime(0.01, 1e-4, 1e-3), types)
    sol = solve_nested_fixed(w, NestedOptions(batch_cap=62), None)
    conds = {c.name: c for c in nested_file_conditions(nested_policy(w, sol, allow_violations=True))}
    # 8 prompts in segment (0, 4): kv 8·60 = 480, new 8·(10 + 4) = 112; 5 in (5, 9): kv 425, new 25
    assert conds["iteration_time"].lhs == pytest.approx(0.01 + 1e-4 * 905 + 1e-3 * 137, rel=1e-12)
    assert conds["iteration_time"].lhs == pytest.approx(sol.iteration_time_s, rel=1e-12)


def test_equal_width_and_quantile_breakpoints_by_hand():
    dist = LengthDistribution.from_pairs([(4, 1.0), (9, 2.0), (20, 1.0)])
    # L = 2: edges round(k·20/2) = 10, 20; the largest lengths inside are 9 and 20
    assert breakpoints(dist, "equal-width", 2) == (9, 20)
    # L = 4: edges 5, 10, 15, 20 -> 4, 9, 9, 20 (an empty bin is dropped)
    assert breakpoints(dist, "equal-width", 4) == (4, 9, 20)
    # quantiles of the rates (1, 2, 1 of 4): 25 % at 4, 50 % and 75 % at 9, 100 % at 20
    assert breakpoints(dist, "quantile", 4) == (4, 9, 20)
    assert breakpoints(dist, "quantile", 2) == (9, 20)
    assert breakpoints(dist, "equal-width", 1) == (20,)


def test_capped_rule_refuses_a_load_exactly_at_the_target():
    from thresholds.capped_solve import solve_wait_capped

    w = _workload([RequestType("t", 4, 1, 1.0)], d1_s=0.75 / 9)  # L = 0.75 exactly (see above)
    with pytest.raises(UnstableWorkloadError, match="not below the target"):
        solve_wait_capped(w, slack=0.25)
    assert solve_wait_capped(w, slack=0.2) is not None


@pytest.mark.parametrize("count", [None, 0, -2])
def test_a_segment_rule_needs_a_positive_count(count):
    from fluid.errors import InputError

    dist = LengthDistribution.from_pairs([(4, 1.0), (9, 1.0)])
    for rule in ("equal-width", "quantile"):
        with pytest.raises(InputError, match="positive integer number of segments"):
            breakpoints(dist, rule, count)


@pytest.mark.parametrize("classes", [1, 2])
def test_per_class_conditions_are_labelled_by_prefill_from_two_classes_on(classes):
    # two prefill classes give two instances: each one's conditions carry its prefill length, so
    # the two iteration-time conditions have different names; one class keeps plain names
    types = [RequestType("a", 10, 5, 1.0), RequestType("b", 50, 4, 1.0)][:classes]
    w = _workload(types, d1_s=1e-5, capacity=10**8)
    sol = solve_nested_fixed(w, NestedOptions(prefill_mode="per_class", slack=0.1), 1)
    names = [c.name for c in sol.conditions if c.name.startswith("iteration_time")]
    assert names == (["iteration_time[prefill=10]", "iteration_time[prefill=50]"] if classes == 2 else ["iteration_time"])


def test_check_of_a_nested_file_adds_base_memory_and_buffer():
    # `fluidsched check` recomputes the memory condition from the file: M^π + the theorem's buffer
    # of the instance, the same two numbers the solver found
    from thresholds.build import nested_policy
    from thresholds.verify import verify_policy

    w = _workload([RequestType("short", 20, 4, 400.0), RequestType("long", 20, 9, 200.0)], d1_s=1e-6, capacity=10**7)
    sol = solve_nested_fixed(w, NestedOptions(slack=0.1), None)
    inst = sol.instances[0]
    assert inst.thresholds == (8, 4) and inst.thetas[1] is not None and inst.buffer_tokens > 0
    conds = {c.name: c for c in verify_policy(nested_policy(w, sol, allow_violations=True), w)}
    assert conds["memory_within_capacity"].lhs == pytest.approx(inst.memory_policy_tokens + inst.buffer_tokens, rel=1e-9)


@pytest.mark.parametrize("types,prefill", [
    ([("a", 10, 3.0), ("b", 30, 1.0)], 15),  # (3·10 + 1·30) / 4
    ([("a", 1, 3.0), ("b", 2, 1.0)], 1),  # 1.25 rounds to a one-token prompt, the shortest there is
])
def test_representative_prefill_is_the_rate_weighted_mean_rounded(types, prefill):
    from thresholds.nested import instance_specs

    w = _workload([RequestType(n, l, 5 + k, rate) for k, (n, l, rate) in enumerate(types)], capacity=10**8)
    (spec,) = instance_specs(w, "representative")
    assert spec.prefill_tokens == prefill and spec.type_names == ("a", "b")


def test_nested_thresholds_settle_just_below_the_nested_load_limit():
    # Nested WAIT's ΔT grows by Σλ·c per unit of n_1 (its "nested load", above L when η > 0); just
    # below the rate where it reaches ρ the fixed point ΔT = d0 / (1 − load/ρ) is large but exists,
    # and the iteration starts there: a start below it would climb past 1000× the start and give up
    w = _workload([RequestType("s", 100, 10, 4.0), RequestType("l", 100, 100, 1.0)], d1_s=1e-4)
    w = Workload("near", w.kv_capacity_tokens, Linear3BatchTime(0.01, 1e-7, 1e-4), w.types)
    options = NestedOptions(slack=0.1, eta=0.9)

    def over(scale):  # the nested load reaches ρ (L itself stays near 0.55)
        try:
            solve_nested_fixed(w.scaled(scale), options, 2)
        except UnstableWorkloadError as err:
            return "not below the target utilisation" in str(err)
        return False

    lo, hi = 1.0, 16.0
    for _ in range(45):
        lo, hi = (lo, (lo + hi) / 2) if over((lo + hi) / 2) else ((lo + hi) / 2, hi)
    assert closed_form(w.scaled(lo)).load_factor < 0.6
    sol = solve_nested_fixed(w.scaled(lo * 0.9999), options, 2)
    assert sol.iteration_time_s == pytest.approx(0.01 / 1e-4, rel=0.02)  # d0 / (1 − 0.9999)
    assert sol.instances[0].thresholds == (4700, 4653)


def test_check_of_a_per_class_nested_file_gives_the_solvers_conditions():
    # each workload type is listed in the instance of its prefill length: check rebuilds both
    # instances from the file and finds the solver's conditions, instance by instance
    from thresholds.build import nested_policy
    from thresholds.verify import verify_policy

    w = _workload([RequestType("a", 10, 5, 1.0), RequestType("b", 50, 4, 1.0)], d1_s=1e-5, capacity=10**8)
    sol = solve_nested_fixed(w, NestedOptions(prefill_mode="per_class", slack=0.1), 1)
    solved = {c.name: c for c in sol.conditions}
    checked = {c.name: c for c in verify_policy(nested_policy(w, sol, allow_violations=True), w)}
    assert {"iteration_time[prefill=10]", "iteration_time[prefill=50]"} <= set(solved) <= set(checked)
    for name, c in solved.items():
        assert (checked[name].lhs, checked[name].rhs) == pytest.approx((c.lhs, c.rhs), rel=1e-9), name
    # check adds that the file's last stages cover each instance's decode lengths
    assert checked["decode_lengths_covered[prefill=10]"].lhs == 5 and checked["decode_lengths_covered[prefill=50]"].holds


def test_nested_over_memory_error_suggests_a_rate_scale_that_works():
    # M* fits C, the Nested thresholds do not: the message bisects for the largest rate scale
    # whose thresholds fit (from 0, not from 1) and that scale does fit, a little more does not
    import math

    base = _workload([RequestType("a", 20, 10, 300.0), RequestType("b", 20, 30, 100.0)], d1_s=1e-6, d0_s=0.02)
    options = NestedOptions(slack=0.05, segments=2)
    need = solve_nested_fixed(base, options, 2).memory_required_tokens
    cap = math.floor((closed_form(base).memory_star_tokens + need) / 2)
    w = Workload("hand", cap, base.batch_time, base.types)
    with pytest.raises(UnstableWorkloadError) as info:
        solve_nested(w, options)
    text = str(info.value)
    assert f"over by {need - cap:.6g}" in text and f"C ≥ {math.ceil(need)} tokens" in text
    scale = float(text.split("rate scale ≤ ")[1].split()[0])
    assert 0.5 < scale < 1
    assert solve_nested_fixed(w.scaled(scale * 0.999), options, 2).holds
    assert not solve_nested_fixed(w.scaled(min(1.0, scale * 1.01)), options, 2).holds


def test_per_class_instances_come_busiest_first_then_by_shorter_prompt():
    from thresholds.nested import instance_specs

    types = [RequestType("mid", 100, 5, 1.0), RequestType("b50", 50, 6, 2.0), RequestType("a50", 50, 7, 3.0),
             RequestType("big", 200, 8, 5.0)]
    specs = instance_specs(_workload(types, capacity=10**8), "per_class")
    # rates per prefill: 50 → 2 + 3 = 5, 200 → 5, 100 → 1; the tie at 5 goes to the shorter prompt
    assert [(s.prefill_tokens, s.type_names) for s in specs] == [(50, ("b50", "a50")), (200, ("big",)), (100, ("mid",))]


def test_check_of_a_nested_file_counts_new_tokens_and_labels_one_instance_plainly():
    # with a per-new-token cost (d_new = 1e-3) check's ΔT(n) adds the new tokens of every segment:
    # 8·(10 + 4) + 5·5 = 137 (see test_a_nested_policy_file_checks_the_solvers_iteration_time);
    # one instance: its conditions carry no [prefill=…] label
    from thresholds.build import nested_policy
    from thresholds.verify import verify_policy

    types = (RequestType("short", 10, 4, 1.0), RequestType("long", 10, 9, 1.0))
    w = Workload("hand", 10**6, Linear3BatchTime(0.01, 1e-4, 1e-3), types)
    sol = solve_nested_fixed(w, NestedOptions(batch_cap=62), None)
    conds = {c.name: c for c in verify_policy(nested_policy(w, sol, allow_violations=True), w)}
    assert set(conds) == {"decode_lengths_covered", "threshold_ratio[1]", "iteration_time", "memory_within_capacity"}
    assert conds["iteration_time"].lhs == pytest.approx(0.01 + 1e-4 * 905 + 1e-3 * 137, rel=1e-12)
    assert conds["iteration_time"].rhs == pytest.approx(8 / 2.0, rel=1e-12)  # n_1 / Σλ


def _per_class_hand_policy():
    # per prefill class, batch cap 62: prefill 50 (b1: l' = 4, b2: l' = 9, 2/s each) gets (7, 4),
    # prefill 10 (a: l' = 4, 0.5/s) gets (1,); ΔT = 0.01 + 1e-4·(7·260 + 4·285 + 1·60) = 0.312 s
    from thresholds.build import nested_policy

    w = _workload([RequestType("a", 10, 4, 0.5), RequestType("b1", 50, 4, 2.0), RequestType("b2", 50, 9, 2.0)],
                  capacity=10**6)
    sol = solve_nested_fixed(w, NestedOptions(batch_cap=62, prefill_mode="per_class"), None)
    return w, sol, nested_policy(w, sol, allow_violations=True)


def test_check_of_a_per_class_file_by_hand():
    from thresholds.verify import verify_policy

    w, sol, policy = _per_class_hand_policy()
    conds = verify_policy(policy, w)
    assert [(c.name, c.holds) for c in conds] == [
        ("decode_lengths_covered[prefill=50]", True), ("threshold_ratio[prefill=50][1]", True),
        ("iteration_time[prefill=50]", True), ("decode_lengths_covered[prefill=10]", True),
        ("iteration_time[prefill=10]", True), ("memory_within_capacity", True)]
    by_name = {c.name: c for c in conds}
    assert by_name["threshold_ratio[prefill=50][1]"].lhs == 4 / 7 and by_name["threshold_ratio[prefill=50][1]"].rhs == 0.5
    assert by_name["iteration_time[prefill=50]"].lhs == pytest.approx(0.312, rel=1e-12)
    assert (by_name["iteration_time[prefill=50]"].rhs, by_name["iteration_time[prefill=10]"].rhs) == (7 / 4, 1 / 0.5)
    # memory: every instance's M^π + buffer (3020 + the buffers the solver found)
    assert by_name["memory_within_capacity"].lhs == pytest.approx(3020 + sol.buffer_tokens, rel=1e-9)


def test_check_puts_an_unlisted_type_in_the_instance_of_the_nearest_prefill():
    # a type c (prefill 45, l' = 9, 1/s) the file does not list joins the prefill-50 instance: Λ = 5,
    # p_1 = (2 + 1)/5 = 0.6 > n_2/n_1 = 4/7, so that ratio breaks and the buffer (hence memory) is unbounded
    from thresholds.verify import verify_policy

    w, _, policy = _per_class_hand_policy()
    today = Workload("hand", w.kv_capacity_tokens, w.batch_time, w.types + (RequestType("c", 45, 9, 1.0),))
    by_name = {c.name: c for c in verify_policy(policy, today)}
    assert by_name["iteration_time[prefill=50]"].rhs == 7 / 5 and by_name["iteration_time[prefill=10]"].rhs == 2.0
    ratio = by_name["threshold_ratio[prefill=50][1]"]
    assert not ratio.holds and ratio.rhs == pytest.approx(0.6, rel=1e-15)
    assert by_name["memory_within_capacity"].lhs == math.inf and not by_name["memory_within_capacity"].holds


def test_check_of_a_wait_file_needs_a_class_for_every_workload_type():
    from fluid.errors import InputError
    from thresholds.build import wait_policy
    from thresholds.verify import verify_policy

    w = _workload([RequestType("a", 10, 9, 3.0), RequestType("b", 10, 19, 1.0)])
    policy = wait_policy(w, solve_wait_batch_cap(w, 120), allow_violations=True)
    today = _workload([RequestType("a", 10, 9, 3.0), RequestType("new", 5, 5, 1.0)])
    with pytest.raises(InputError, match=r"no class for workload type\(s\) \['new'\]") as err:
        verify_policy(policy, today)
    assert err.value.field == "classes"


def test_wait_conditions_skip_a_type_without_traffic_and_flag_an_unbounded_fluid_memory():
    # a = 7 for (3, 1) as above; the second class has no arrivals (no time bound), and an infinite
    # M* (an unstable workload) can never be at most M^π
    time = LinearTime(0.5, 0.125, 0.0)
    classes = [("t", 3, 1, 2 / 2.25, 2), ("idle", 3, 1, 0.0, 1)]
    conds = wait_conditions(time, classes, kv_capacity_tokens=21, memory_star_tokens=float("inf"))
    assert [c.name for c in conds] == ["iteration_time[t]", "memory_at_least_fluid", "memory_within_capacity"]
    # ΔT = 0.5 + 0.125·(2·7 + 1·7) = 3.125 > 2.25 = n/λ: broken; M^π = 21 = C: holds
    assert conds[0].lhs == 3.125 and conds[0].rhs == pytest.approx(2.25, rel=1e-15) and not conds[0].holds
    assert (conds[1].holds, conds[1].lhs, conds[1].rhs) == (False, math.inf, 21.0)
    assert conds[2].holds and conds[2].lhs == 21.0


def test_length_distribution_merges_equal_lengths_and_counts_longer_strictly():
    dist = LengthDistribution.from_pairs([(9, 2.0), (4, 1.0), (9, 0.5), (20, 1.5)])
    assert dist.lengths == (4, 9, 20) and dist.rates_per_s == (1.0, 2.5, 1.5)  # sorted, the two 9s merged
    assert dist.total_rate_per_s == 5.0
    # prompts that continue past a stage decode longer than it: at stage 9 the 9s have finished
    assert [dist.rate_longer_than(s) for s in (3, 4, 8, 9, 19, 20)] == [5.0, 4.0, 4.0, 1.5, 1.5, 0.0]


def test_quantile_breakpoints_at_exact_cumulative_shares():
    # rates 1, 1, 2 of 4: the 25 % and 50 % targets are reached exactly at 4 and 9, and count there
    dist = LengthDistribution.from_pairs([(4, 1.0), (9, 1.0), (20, 2.0)])
    assert breakpoints(dist, "quantile", 4) == (4, 9, 20)
    assert breakpoints(dist, "quantile", 3) == (9, 20)  # 33 % lands in 9's share, 67 % in 20's
    # three rates of 0.1: the total is 0.30000000000000004, so the 1/3 target 0.10000000000000002 sits a
    # hair above the first share (and 2/3 above the second): the relative 1e-12 tolerance still counts them
    noisy = LengthDistribution.from_pairs([(1, 0.1), (2, 0.1), (3, 0.1)])
    assert noisy.total_rate_per_s * 1 / 3 > 0.1
    assert breakpoints(noisy, "quantile", 3) == (1, 2, 3)


def test_check_of_a_nested_file_without_delta_or_horizon_uses_0_01_and_an_hour():
    # a file that records no δ or horizon is checked at δ = 0.01 over 3600 s, the solver's defaults
    from dataclasses import replace

    from thresholds.build import nested_policy
    from thresholds.verify import verify_policy

    w = _workload([RequestType("short", 20, 4, 400.0), RequestType("long", 20, 9, 200.0)], d1_s=1e-6, capacity=10**7)
    sol = solve_nested_fixed(w, NestedOptions(slack=0.1), None)  # δ = 0.01, horizon 3600 s
    policy = nested_policy(w, sol, allow_violations=True)
    bare = replace(policy, guarantees=replace(policy.guarantees, delta=None, horizon_s=None))
    memory = {c.name: c for c in verify_policy(bare, w)}["memory_within_capacity"].lhs
    inst = sol.instances[0]
    assert memory == pytest.approx(inst.memory_policy_tokens + inst.buffer_tokens, rel=1e-9)


def test_the_wait_batch_cap_recipe_refuses_a_cap_of_zero():
    from fluid.errors import InputError

    w = _workload([RequestType("a", 10, 4, 1.0)])
    with pytest.raises(InputError, match=r"batch_cap"):
        solve_wait_batch_cap(w, 0)
    assert solve_wait_batch_cap(w, 1).thresholds
