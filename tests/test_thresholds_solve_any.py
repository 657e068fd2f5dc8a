"""`solve` on any stable workload: a policy or a typed error, never a traceback; the automatic slack
never refuses what slack 0 solves; the capped rule solves whenever the fluid point fits.

Random workloads include fluid points within a few percent of C (rates scaled to 0.95–0.999 of the
capacity scale θ*), where the Nested WAIT solver used to raise an OverflowError.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluid.equilibrium import closed_form
from fluid.errors import FluidSchedError, UnstableWorkloadError
from fluid.workload import RequestType, Workload
from fluid.batch_time import AffineBatchTime
from fluid_strategies import workloads
from thresholds.capped_solve import solve_nested_capped_auto, solve_wait_capped
from thresholds.nested import NestedOptions, solve_nested
from thresholds.slack import candidate_slack, choose_slack
from thresholds.wait import solve_wait


@st.composite
def long_workloads(draw):
    """Up to 6 types with prompts and outputs up to 4,000 tokens (the shared strategy stops at 400)."""
    types = tuple(RequestType(f"t{j}", draw(st.integers(1, 4000)), draw(st.integers(1, 4000)), draw(st.floats(0.001, 100.0)))
                  for j in range(draw(st.integers(1, 6))))
    return Workload("long", draw(st.integers(100, 10**7)), AffineBatchTime(draw(st.floats(1e-3, 0.1)), draw(st.floats(1e-10, 1e-5))), types)


@st.composite
def stable_workloads(draw):
    """Stable workloads, a third of them with the fluid point within 5 % of the capacity scale."""
    w = draw(st.one_of(workloads(max_types=4), long_workloads()))
    theta = closed_form(w).capacity_scale
    frac = draw(st.one_of(st.floats(0.05, 0.95), st.floats(0.95, 0.999)))
    return w.scaled(theta * frac)


SOLVERS = {
    "wait": lambda w, s: solve_wait(w, slack=s),
    "nested-types": lambda w, s: solve_nested(w, NestedOptions(slack=s)),
    "nested-auto": lambda w, s: solve_nested(w, NestedOptions(slack=s, segments="auto")),
    "nested-per-class": lambda w, s: solve_nested(w, NestedOptions(slack=s, segments=2, prefill_mode="per_class")),
    "wait-capped": lambda w, s: solve_wait_capped(w, slack=s),
    "nested-capped": lambda w, s: solve_nested_capped_auto(w, NestedOptions(slack=s, eta=0.0)),
}


def _memory(sol) -> float:
    m = getattr(sol, "memory", None)
    if m is not None:
        return m.required_tokens
    return getattr(sol, "memory_required_tokens", sol.memory_policy_tokens)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=stable_workloads())
def test_every_solver_gives_a_policy_or_a_typed_error(name, w):
    solve = SOLVERS[name]
    try:
        zero = solve(w, 0.0)
    except FluidSchedError:
        zero = None  # typed: the CLI prints it and exits 3, no traceback
    try:
        choice = choose_slack(lambda s: solve(w, s), _memory, closed_form(w).load_factor)
    except FluidSchedError:
        assert zero is None, "the automatic slack refused a workload that slack 0 solves"
        return
    assert choice.slack in (0.0, candidate_slack(closed_form(w).load_factor))
    assert choice.reason


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=stable_workloads())
def test_the_capped_rule_solves_whenever_the_fluid_point_fits(w):
    """L < 1 and M* ≤ C: slack 0 gives a capped WAIT and a capped Nested WAIT policy whose
    expected memory is M* (the margin gives way near C) and whose conditions hold."""
    point = closed_form(w)
    assert point.load_factor < 1 and point.memory_star_tokens <= point.kv_capacity_tokens * (1 + 1e-9)
    for sol in (solve_wait_capped(w, slack=0.0), solve_nested_capped_auto(w, NestedOptions(slack=0.0, eta=0.0))):
        assert sol.memory.expected_tokens == pytest.approx(point.memory_star_tokens, rel=1e-9)
        assert sol.memory.required_tokens <= w.kv_capacity_tokens * (1 + 1e-12)
        assert all(c.holds for c in sol.conditions)


def test_the_counterexample_that_slack_0_05_refuses_is_solved_by_default():
    """C = 12, l = l' = 1, λ = 4 per 1 s iteration: M* = C. Slack 0.05 is refused; the rule's
    candidate is (1 − L)/2 capped at 0.05, and slack 0 is always tried."""
    w = Workload("counterexample", 12, AffineBatchTime(1.0, 1e-12), (RequestType("p1d1", 1, 1, 4.0 - 1e-6),))
    with pytest.raises(UnstableWorkloadError):
        solve_wait(w, slack=0.05)
    choice = choose_slack(lambda s: solve_wait(w, slack=s), lambda s: s.memory_policy_tokens, closed_form(w).load_factor)
    assert choice.slack == 0.0 and choice.solution.thresholds == (4,) and "gives no policy" in choice.reason


def test_candidate_slack_is_half_the_headroom_capped_at_five_percent():
    assert candidate_slack(0.98) == pytest.approx(0.01)  # (1 − 0.98)/2, under the cap
    assert candidate_slack(0.9) == pytest.approx(0.05)  # exactly at the cap
    assert candidate_slack(0.5) == 0.05  # capped
    assert candidate_slack(1.0) == 0.0 and candidate_slack(1.2) == 0.0  # no headroom, no slack
    seen = []
    choice = choose_slack(lambda s: seen.append(s) or s, lambda sol: 1.0, 0.98)
    assert seen == [0.0, pytest.approx(0.01)] and choice.slack == pytest.approx(0.01)
    assert choice.reason.startswith("slack 0.01 = min(0.05, ") and choice.reason.endswith("with L = 0.98")


def _fake_solver(memory_by_slack):
    """solve_at for choose_slack: the slack's memory, or UnstableWorkloadError where it is None."""
    def solve_at(slack):
        memory = memory_by_slack[round(slack, 6)]
        if memory is None:
            raise UnstableWorkloadError(f"no policy at slack {slack:g}")
        return (slack, memory)
    return solve_at


@pytest.mark.parametrize(("zero", "candidate", "chosen", "words"), [
    (100.0, 149.99, 0.05, "slack 0.05 = min(0.05, (1 − L)/2)"),  # below 1.5× slack 0's memory: the candidate
    (100.0, 150.0, 0.0, "needs 150 tokens, ≥ 1.5× the 100 of slack 0"),  # exactly 1.5×: slack 0
    (100.0, None, 0.0, "gives no policy (no policy at slack 0.05); slack 0 does"),
    (None, 500.0, 0.05, "slack 0.05 = min"),  # slack 0 fails: the candidate, whatever its memory
])
def test_choose_slack_by_hand(zero, candidate, chosen, words):
    choice = choose_slack(_fake_solver({0.0: zero, 0.05: candidate}), lambda sol: sol[1], 0.5)
    assert choice.slack == chosen and choice.solution[0] == chosen
    assert words in choice.reason


def test_choose_slack_without_headroom_takes_slack_0():
    # L = 1: the candidate is 0 itself, solved once
    seen = []
    choice = choose_slack(lambda s: seen.append(s) or ("zero", s), lambda sol: 1.0, 1.0)
    assert seen == [0.0] and choice.slack == 0.0 and choice.solution == ("zero", 0.0)
    assert choice.reason == "slack 0 = min(0.05, (1 − L)/2) with L = 1"


@pytest.mark.parametrize("load", [0.5, 1.0])
def test_choose_slack_raises_slack_0s_error_when_nothing_solves(load):
    # L = 0.5: candidate 0.05 and 0 both fail; L = 1: the candidate is 0 itself
    with pytest.raises(UnstableWorkloadError, match="no policy at slack 0$"):
        choose_slack(_fake_solver({0.0: None, 0.05: None}), lambda sol: sol[1], load)
