"""The policy tables of `solve`, `show` and `check` (`thresholds/report.py`) on hand-computed policies:
stage load λ·ΔT(n)/n per WAIT class, Λ_k·ΔT(n)/n_k per Nested segment, memory and its share."""

from __future__ import annotations

from dataclasses import replace

from fluid.batch_time import AffineBatchTime
from fluid.workload import RequestType, Workload
from thresholds.build import nested_policy, wait_policy
from thresholds.nested import NestedOptions, solve_nested_fixed
from thresholds.report import policy_text
from thresholds.wait import solve_wait_batch_cap


def _rows(text: str, first_header: str) -> list[list[str]]:
    """The cells of the table whose header starts with `first_header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_wait_table_by_hand():
    # the batch-cap recipe's (9, 2) (tests/test_thresholds_recipes.py): a_a = 10·(10 + 4.5) = 145,
    # a_b = 20·(10 + 9.5) = 390, M^π = 9·145 + 2·390 = 1305 + 780 = 2085, ΔT = 0.01 + 1e-4·2085 = 0.2185 s.
    # Stage loads 3·0.2185/9 = 0.0728 and 1·0.2185/2 = 0.109; shares 1305/2085 = 62.6 %, 37.4 %.
    w = Workload("hand", 10**9, AffineBatchTime(0.01, 1e-4), (RequestType("a", 10, 9, 3.0), RequestType("b", 10, 19, 1.0)))
    text = policy_text(wait_policy(w, solve_wait_batch_cap(w, 120), allow_violations=True))
    assert "policy: ΔT(n) = 0.2185 s" in text
    assert _rows(text, "class") == [
        ["a", "10", "9", "3", "9", "0.073", "1305", "62.6%"],
        ["b", "10", "19", "1", "2", "0.109", "780", "37.4%"],
    ]


def _per_class_policy():
    # per prefill class, batch cap 62: prefill 50 (b1: l' = 4, b2: l' = 9, 2/s each; Λ = 4, p_1 = 0.5)
    # gets thresholds (7, 4), prefill 10 (a: l' = 4, 0.5/s) gets (1,)
    w = Workload("hand", 10**6, AffineBatchTime(0.01, 1e-4),
                 (RequestType("a", 10, 4, 0.5), RequestType("b1", 50, 4, 2.0), RequestType("b2", 50, 9, 2.0)))
    policy = nested_policy(w, solve_nested_fixed(w, NestedOptions(batch_cap=62, prefill_mode="per_class"), None),
                           allow_violations=True)
    assert [[s.threshold for s in i.segments] for i in policy.instances] == [[7, 4], [1]]
    return policy


def test_per_class_nested_table_by_hand():
    # memory: 7·Σ_{s=0..4}(50 + s) = 7·260 = 1820, 4·Σ_{s=5..9}(50 + s) = 4·285 = 1140, 1·Σ_{s=0..4}(10 + s) = 60;
    # ΔT = 0.01 + 1e-4·3020 = 0.312 s. Stage loads: 4·0.312/7 = 0.178; the second segment sees the
    # rate that continues, 4·0.5 = 2: 2·0.312/4 = 0.156; prefill 10: 0.5·0.312/1 = 0.156.
    text = policy_text(_per_class_policy())
    rows = _rows(text, "prefill")
    assert [[r[0], r[1], r[2], r[3], r[4], r[6], r[7], r[8]] for r in rows] == [
        ["50", "1", "0..4", "7", "0.5000", "0.178", "1820", "60.3%"],
        ["50", "2", "5..9", "4", "0.0000", "0.156", "1140", "37.7%"],
        ["10", "1", "0..4", "1", "0.0000", "0.156", "60", "2.0%"],
    ]
    assert [r[5] for r in rows][0::2] == ["-", "-"]  # no θ for a first segment


def test_a_type_missing_from_the_files_rates_adds_no_load_to_its_instance():
    # a hand-edited file whose instance names a type its workload rates do not list: that type
    # carries no traffic (rate 0), so the instance's stage load is 0; the other rows are unchanged
    policy = _per_class_policy()
    edited = replace(policy, workload=replace(policy.workload, rates_per_s=(("b1", 2.0), ("b2", 2.0))))
    rows = _rows(policy_text(edited), "prefill")
    assert [r[6] for r in rows] == ["0.178", "0.156", "0.000"]


def test_capped_policy_text_states_its_memory_bounds_caps_and_chunk():
    # the hand-computed capped WAIT policy of tests/test_thresholds_capped.py: expected 0.8·7948 = 6358.4
    # tokens, worst case 7·997 = 6979, which the default 10 % margin is cut to; one class capped at 7
    from thresholds.build import wait_capped_policy
    from thresholds.capped_solve import solve_wait_capped

    w = Workload("one", 10**6, AffineBatchTime(0.02, 0.025 / 7948), (RequestType("t", 990, 7, 10.0),))
    text = policy_text(wait_capped_policy(w, solve_wait_capped(w, slack=0.5)))
    assert ("memory (capped rule, docs/capped-rule.md): expected 6,358 tokens (an expectation), worst case 6,979 "
            "(a guarantee), theorem M^π + buffer n/a; must fit C = 1000000: expected × (1 + 0.1) = 6,994, cut to the worst case = "
            "6,979 (0.7%)") in text
    assert "caps: per class t 7 (resident 7), prefill chunk 800 tokens" in text
    assert "policy (capped service)" not in text and text.startswith("policy wait (capped service), mode fluid")


def test_an_overloaded_workloads_fluid_point_reads_unbounded():
    from thresholds.build import wait_policy

    hot = Workload("hot", 10**9, AffineBatchTime(0.01, 1e-3), (RequestType("a", 10, 10, 100.0),))
    text = policy_text(wait_policy(hot, solve_wait_batch_cap(hot, 64), allow_violations=True))
    assert "fluid: M* = unbounded tokens, ΔT* = unbounded, throughput* = 1000 tokens/s, load factor L = 16.5" in text
