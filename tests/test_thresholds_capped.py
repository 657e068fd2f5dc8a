"""The capped service rule's solver (`thresholds/capped_solve.py`, docs/capped-rule.md) on
hand-computed cases: caps, the iteration time, the prefill chunk and the memory bounds."""

from __future__ import annotations

import pytest

from fluid.batch_time import AffineBatchTime
from fluid.errors import UnstableWorkloadError
from fluid.workload import RequestType, Workload
from thresholds.capped_solve import solve_nested_capped, solve_nested_capped_auto, solve_wait_capped
from thresholds.nested import NestedOptions


def test_capped_wait_by_hand_when_the_fluid_caps_already_serve_the_rate():
    # one type, l = 990, l' = 7 (8 stages): a = 8·(990 + 3.5) = 7948 token·iterations, and
    # d1 = 0.025/7948 makes one unit of n add u = 0.025 s. λ = 10: L = 0.25; slack 0.5, ρ = 0.5.
    # x = d0 / (1 − L/ρ) = 0.02 / 0.5 = 0.04 s; n = λx/ρ = 0.8 per stage, cap ⌈0.8·8⌉ = ⌈6.4⌉ = 7,
    # n = 7/8 = 0.875, ΔT = 0.02 + 0.875·0.025 = 0.041875 ≤ ρn/λ = 0.04375: no repair.
    # chunk: λx/ρ·l = 0.8·990 = 792 prefill tokens per iteration → 50 blocks of 16 = 800.
    # (A start below the fluid x would repair up to x = 0.03875, the same cap, and a chunk of 768.)
    w = Workload("one", 10**6, AffineBatchTime(0.02, 0.025 / 7948), (RequestType("t", 990, 7, 10.0),))
    sol = solve_wait_capped(w, slack=0.5)
    assert sol.caps == (7,)
    assert sol.thresholds == (0.875,)
    assert sol.iteration_time_s == pytest.approx(0.041875, rel=1e-12)
    assert sol.prefill_chunk_tokens == 800
    # expected: M* at λ/ρ = 0.8·7948 = 6358.4; worst: 7 residents at l + l' = 997, 6979 tokens;
    # the default 10 % margin (6994.24) is cut at the worst case, a guarantee
    m = sol.memory
    assert m.expected_tokens == pytest.approx(6358.4, rel=1e-12)
    assert m.worst_case_tokens == 6979
    assert m.required_tokens == 6979 and m.margin == 0.1


def test_capped_nested_auto_tries_the_count_equal_to_the_number_of_decode_lengths():
    # two decode lengths (100 and 200): auto tries L = 1 and L = 2. The cap (1154) and the expected
    # memory do not depend on L, the theorem's M^π + buffer does. L = 1 spreads the cap over stages
    # 0..200: M^π = 1154·(100 + 200/2) = 230,800 tokens, no buffer; L = 2 keeps most residents in
    # the short segment and needs about 180,900 with its buffer. At C = 200,000 only L = 2 fits.
    types = (RequestType("s", 100, 100, 990.0), RequestType("l", 100, 200, 10.0))
    options = NestedOptions(slack=0.1, eta=0.05, memory_bound="theorem", segments="auto")
    roomy = Workload("two", 10**9, AffineBatchTime(0.01, 1e-9), types)
    one = solve_nested_capped(roomy, options, 1)
    two = solve_nested_capped(roomy, options, 2)
    assert one.resident_cap == two.resident_cap == 1154
    assert one.memory.required_tokens == pytest.approx(1154 * 200, rel=1e-12)
    assert two.memory.required_tokens < 200_000 < one.memory.required_tokens
    assert solve_nested_capped_auto(roomy, options).num_segments == 2  # the least memory, not the fewest segments
    tight = Workload("two", 200_000, roomy.batch_time, types)
    sol = solve_nested_capped_auto(tight, options)
    assert sol.num_segments == 2 and sol.memory.required_tokens == pytest.approx(two.memory.required_tokens, rel=1e-12)
    with pytest.raises(UnstableWorkloadError, match="memory_within_capacity"):
        solve_nested_capped_auto(tight, NestedOptions(slack=0.1, eta=0.05, memory_bound="theorem", segments=1))
    # every count breaking its conditions: the error says which broke, for each count tried
    tighter = Workload("two", 150_000, roomy.batch_time, types)
    with pytest.raises(UnstableWorkloadError) as err:
        solve_nested_capped_auto(tighter, NestedOptions(slack=0.1, eta=0.05, memory_bound="theorem", segments="auto"))
    assert str(err.value).endswith("(L=1: breaks memory_within_capacity; L=2: breaks memory_within_capacity)")


def test_capped_nested_theorem_memory_by_hand():
    # the two-length case above at L = 2: p_1 = 10/1000 = 0.01, q_1 = 0.06; Σ width·Π q = 101 + 100·0.06
    # = 107, so n_1 = 1154/107 and n_2 = 0.06·n_1. Residents hold on average
    # Σλ(l'+1)(l + l'/2) / Σλ(l'+1) = (990·101·150 + 10·201·200) / (990·101 + 10·201) = 15400500/102000
    # tokens: ΔT = 0.01 + 1154·1e-9·15400500/102000. M^π = n_1·Σ_{s=0..100}(100 + s) + n_2·Σ_{s=101..200}(100 + s)
    # = 15150·n_1 + 25050·n_2; buffer (l + l'_1)(n_2 + ln(m·B/δ)/θ_2) with m = 2, B = 3600 s / ΔT, δ = 0.01.
    import math

    from thresholds.conditions import theta_residual

    types = (RequestType("s", 100, 100, 990.0), RequestType("l", 100, 200, 10.0))
    w = Workload("two", 10**9, AffineBatchTime(0.01, 1e-9), types)
    sol = solve_nested_capped(w, NestedOptions(slack=0.1, eta=0.05, memory_bound="theorem"), 2)
    n1, n2 = 1154 / 107, 0.06 * 1154 / 107
    assert sol.bounds == ((0, 100), (101, 200)) and sol.continue_probs == (0.01, 0.0)
    assert sol.thresholds == pytest.approx((n1, n2), rel=1e-12)
    dt = 0.01 + 1154 * 1e-9 * 15400500 / 102000
    assert sol.iteration_time_s == pytest.approx(dt, rel=1e-12)
    assert sol.base_memory_tokens == pytest.approx(15150 * n1 + 25050 * n2, rel=1e-12)
    theta = sol.thetas[1]
    assert sol.thetas[0] is None and abs(theta_residual(theta, n1, n2, 0.01)) < 1e-12
    buffer = 200 * (n2 + math.log(2 * (3600 / dt) / 0.01) / theta)
    assert sol.buffer_tokens == pytest.approx(buffer, rel=1e-12)
    assert sol.memory.theorem_tokens == sol.memory.required_tokens == pytest.approx(15150 * n1 + 25050 * n2 + buffer, rel=1e-12)


# --- the shared cap and memory rules (thresholds/capped.py, memory_report) --------------------------
def test_caps_round_up_except_within_the_rounding_tolerance():
    from thresholds.capped import cap_of, nested_resident_cap, wait_class_caps

    assert cap_of(2.5, 2) == 5  # exactly 5 requests
    assert cap_of(0.1, 30) == 3  # 0.1·30 = 3.0000000000000004: within 1e-9 of 3
    assert cap_of(3 * (1 + 1e-10), 1) == 3 and cap_of(3 * (1 + 1e-8), 1) == 4  # inside / outside the tolerance
    assert cap_of(0.0, 5) == 1 and cap_of(1e-6, 1) == 1  # at least one resident
    # WAIT: n_j (l'_j + 1) per class; 0.875·8 = 7, 0.25·10 = 2.5 → 3
    assert wait_class_caps([(7, 0.875), (9, 0.25)]) == (7, 3)
    # Nested: Σ_k width_k n_k = 5·0.5 + 5·0.3 + 2·0.2 = 4.4 → 5
    assert nested_resident_cap([(0, 4, 0.5), (5, 9, 0.3), (10, 11, 0.2)]) == 5


def test_littles_law_cap_by_hand():
    from thresholds.capped import littles_law_cap

    # 20 stages/s, 0.005 s per resident: L = 0.1, ρ = 0.5, x = 0.1 / (1 − 0.2) = 0.125 s, cap = 20·0.125/0.5
    # = 5: the step of 5 residents lasts 0.1 + 0.025 = 0.125 = ρ·5/20 exactly (binary fractions): it serves
    assert littles_law_cap(20, 0.005, 0.1, 0.5, max_steps=1) == (5, 0.125)
    # 25 stages/s, 0.01 s, ρ = 0.75: x = 0.1 / (1 − 1/3) = 0.15, cap 5, ΔT = 0.1 + 0.05 = 0.15 = ρ·5/25, but
    # 0.15000000000000002 in floats: within the 1e-12 tolerance, still 5 (not a repair to 6)
    assert littles_law_cap(25, 0.01, 0.1, 0.75, max_steps=1) == (5, pytest.approx(0.15, rel=1e-15))
    # the tolerance's edge is inclusive: d0 = 0.100000000000125 puts ΔT of 5 residents at exactly
    # ρ·5/20·(1 + 1e-12) = 0.125000000000125; a d0 whose ΔT is the next float above it needs 6 residents
    d0, beyond = 0.100000000000125, 0.10000000000012503
    assert d0 + 5 * 0.005 == 0.5 * 5 / 20 * (1 + 1e-12) < beyond + 5 * 0.005
    assert littles_law_cap(20, 0.005, d0, 0.5, max_steps=1)[0] == 5
    assert littles_law_cap(20, 0.005, beyond, 0.5)[0] == 6
    # 37 stages/s, 0.013 s, ρ = 0.7: x = 0.02 / (1 − 0.481/0.7) = 0.0639, cap ⌈3.38⌉ = 4, ΔT = 0.02 + 0.052
    cap, dt = littles_law_cap(37, 0.013, 0.02, 0.7)
    assert cap == 4 and dt == pytest.approx(0.072, rel=1e-12)
    # d0 a hair larger: the fluid cap is 3·(1 + 5e-10), which the tolerance rounds to 3, too few
    # (ΔT = 0.05 + 1e-11 > ρ·3/30): the second step repairs it to 4 residents
    d0 = 0.02 * (1 + 5e-10)
    assert littles_law_cap(30, 0.01, d0, 0.5, max_steps=2) == (4, pytest.approx(0.06, rel=1e-9))
    with pytest.raises(ArithmeticError, match="did not settle in 1 steps"):
        littles_law_cap(30, 0.01, d0, 0.5, max_steps=1)
    with pytest.raises(ValueError, match="must be below"):
        littles_law_cap(50, 0.01, 0.02, 0.5)  # L = ρ = 0.5


@pytest.mark.parametrize(("bound", "margin", "capacity", "required", "margin_used"), [
    ("expected", None, 10**6, 110.0, 0.1),  # the default 10 % margin over the expected 100
    ("expected", None, 105, 105.0, 0.05),  # near C the margin gives way: 105/100 − 1
    ("expected", None, 90, 100.0, 0.0),  # never below 0: the expected memory itself (above C)
    ("expected", 0.5, 105, 120.0, 0.5),  # a given margin is held, capped at the worst case 120
    ("worst", None, 105, 120.0, 0.1),
    ("theorem", None, 105, 130.0, 0.1),
])
def test_memory_report_by_hand(bound, margin, capacity, required, margin_used):
    from thresholds.capped_solve import memory_report

    m = memory_report(bound, margin, 100.0, 120.0, 130.0, capacity)
    assert m.bound == bound and m.required_tokens == pytest.approx(required, rel=1e-12)
    assert m.margin == pytest.approx(margin_used, rel=1e-12, abs=1e-15)
    assert (m.expected_tokens, m.worst_case_tokens, m.theorem_tokens) == (100.0, 120.0, 130.0)


def test_memory_report_without_a_theorem_buffer_refuses_the_theorem_bound():
    from thresholds.capped_solve import memory_report

    with pytest.raises(UnstableWorkloadError, match="no finite value"):
        memory_report("theorem", None, 100.0, 120.0, None, 1000)
    assert memory_report("expected", None, 0.0, 0.0, None, 0).margin == 0.1  # nothing expected: no shrink
    # 1000·1.1 is exactly 1100.0: the default margin fits C = 1100 exactly and stays 0.1 (shrinking it
    # would give 1100/1000 − 1 = 0.10000000000000009)
    at_c = memory_report("expected", None, 1000.0, 2000.0, None, 1100)
    assert at_c.margin == 0.1 and at_c.required_tokens == 1100.0


def test_mean_resident_kv_by_hand():
    from thresholds.capped_solve import mean_resident_kv_tokens

    # Σλ(l'+1)(l + l'/2) / Σλ(l'+1) = (990·101·150 + 10·201·200) / (990·101 + 10·201)
    w = Workload("two", 10**9, AffineBatchTime(0.01, 1e-9),
                 (RequestType("s", 100, 100, 990.0), RequestType("l", 100, 200, 10.0)))
    assert mean_resident_kv_tokens(w) == pytest.approx(15400500 / 102000, rel=1e-15)


def test_check_of_capped_files_by_hand():
    # `fluidsched check` on the capped policies above, against their own workloads and a busier one
    from fluid.equilibrium import closed_form
    from thresholds.build import nested_capped_policy, wait_capped_policy
    from thresholds.verify import verify_policy

    w = Workload("one", 10**6, AffineBatchTime(0.02, 0.025 / 7948), (RequestType("t", 990, 7, 10.0),))
    policy = wait_capped_policy(w, solve_wait_capped(w, slack=0.5))
    conds = {c.name: c for c in verify_policy(policy, w)}
    assert list(conds) == ["iteration_time[t]", "memory_at_least_fluid", "memory_within_capacity"]
    assert conds["iteration_time[t]"].lhs == pytest.approx(0.041875, rel=1e-12) and conds["iteration_time[t]"].rhs == 0.0875
    assert conds["memory_at_least_fluid"].lhs == pytest.approx(closed_form(w).memory_star_tokens, rel=1e-12)
    assert conds["memory_at_least_fluid"].rhs == pytest.approx(0.875 * 7948, rel=1e-12)  # Σ n_j a_j
    assert (conds["memory_within_capacity"].lhs, conds["memory_within_capacity"].rhs) == (6979.0, 10**6)  # the chosen bound
    busier = Workload("one", 6000, w.batch_time, (RequestType("t", 990, 7, 20.0),))
    conds = {c.name: c for c in verify_policy(policy, busier)}
    assert conds["iteration_time[t]"].rhs == 0.875 / 20 and conds["iteration_time[t]"].holds  # 0.041875 ≤ 0.04375
    assert not conds["memory_within_capacity"].holds  # 6979 > 6000

    types = (RequestType("s", 100, 100, 990.0), RequestType("l", 100, 200, 10.0))
    w2 = Workload("two", 200_000, AffineBatchTime(0.01, 1e-9), types)
    options = NestedOptions(slack=0.1, eta=0.05, memory_bound="theorem", segments=2)
    sol = solve_nested_capped(w2, options, 2)
    conds = verify_policy(nested_capped_policy(w2, sol, options), w2)
    # resident cap 1154 at its mean size: ΔT = 0.01 + 1154·1e-9·15400500/102000 ≤ 1154 / Σλ(l'+1) = 1154/102000
    assert [c.name for c in conds] == ["iteration_time", "memory_within_capacity"]
    assert conds[0].lhs == pytest.approx(0.01 + 1154 * 1e-9 * 15400500 / 102000, rel=1e-12)
    assert conds[0].rhs == pytest.approx(1154 / 102000, rel=1e-12) and conds[0].holds
    assert conds[1].lhs == pytest.approx(sol.memory.required_tokens, rel=1e-12) and conds[1].rhs == 200_000
    # with a per-new-token cost each resident also adds d_new times the new tokens per stage:
    # Σλ(l + l') / Σλ(l' + 1) = (990·200 + 10·300) / 102000 = 201000 / 102000
    from fluid.batch_time import Linear3BatchTime

    w3 = Workload("two", 200_000, Linear3BatchTime(0.01, 1e-9, 2e-7), types)
    sol3 = solve_nested_capped(w3, options, 2)
    conds = verify_policy(nested_capped_policy(w3, sol3, options), w3)
    assert sol3.resident_cap == 1208
    assert conds[0].lhs == pytest.approx(0.01 + 1208 * (1e-9 * 15400500 / 102000 + 2e-7 * 201000 / 102000), rel=1e-12)
    assert conds[0].rhs == pytest.approx(1208 / 102000, rel=1e-12) and conds[0].holds


def test_caps_a_hair_above_a_whole_number_are_repaired_upwards_to_the_next_cap():
    # one type, l = 990, l' = 7 (8 stages), λ = 10, d1 = 0.025/7948 (L = 0.25), slack 0: the fluid
    # x = d0 / 0.75 puts 80·x residents in the class. d0 = 0.05625 gives exactly 6 (x = 0.075, ΔT = x):
    # cap 6. 2e-10 more in d0 gives 6.0000000012, which the rounding tolerance (1e-9) reads as 6,
    # but then ΔT = 0.075 (1 + 2e-10) exceeds ρ·n/λ = 0.075: the repair must grow x until the cap
    # is 7 (ΔT = 0.05625 + 0.875 · 0.025 = 0.078125 ≤ 0.0875), not settle or shrink
    def solved(d0):
        return solve_wait_capped(Workload("edge", 10**6, AffineBatchTime(d0, 0.025 / 7948), (RequestType("t", 990, 7, 10.0),)), slack=0.0)

    assert solved(0.05625).caps == (6,)
    edge = solved(0.05625 * (1 + 2e-10))
    assert edge.caps == (7,) and edge.iteration_time_s == pytest.approx(0.078125, rel=1e-9)
