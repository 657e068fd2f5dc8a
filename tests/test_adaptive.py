"""Adaptive WAIT / Nested WAIT: estimators, hysteresis, re-solved caps, the policy block, drift runs."""

from __future__ import annotations

import json
import math

import pytest

from fluid.batch_time import Linear3BatchTime
from fluid.errors import InputError
from fluid.workload import RequestType, Workload
from runtime.adaptive import CapController, LengthWindow, RateEstimator
from thresholds.adaptive import AdaptiveSettings, RequestShape, SolveRule, resolve_nested_cap, resolve_wait_caps, upper_rate

BT = Linear3BatchTime(d0_s=0.0093, d_kv_s_per_token=2.6e-7, d_new_s_per_token=4.7e-5)


# --- estimators -----------------------------------------------------------------------------
def test_rate_estimate_fills_the_unseen_part_of_the_window_with_the_prior():
    est = RateEstimator({"a": 2.0}, window_s=10.0)
    for t in (1.0, 2.0, 3.0):
        est.observe("a", t)
    # 5 s seen (3 arrivals), 5 s unseen at the prior 2/s: (3 + 2·5) / 10
    assert est.rates_per_s(5.0)["a"] == pytest.approx(1.3)
    # a whole window seen: the prior is gone; the arrival exactly at now − window has left it
    est.observe("a", 12.0)
    assert est.rates_per_s(13.0)["a"] == pytest.approx(1 / 10)  # 3.0 is at 13 − 10: out; only 12.0 is in


def test_length_window_drops_what_finished_before_the_window():
    w = LengthWindow(5.0)
    w.observe(1.0, 10, 3)
    w.observe(4.0, 20, 7)
    assert w.lengths(6.0) == [(20, 7)]  # 1.0 ≤ 6 − 5


def test_request_shape_by_hand():
    # (prompt 10, output 2): 3 stages holding 10, 11, 12 -> mean 11; (4, 0): 1 stage of 4
    shape = RequestShape.of_lengths([(10, 2), (4, 0)])
    assert shape.stages == pytest.approx(2.0)  # (3 + 1) / 2
    assert shape.resident_kv_tokens == pytest.approx((3 * 11 + 1 * 4) / 4)
    assert shape.new_tokens_per_stage == pytest.approx((12 + 4) / 4)


def test_upper_rate_adds_headroom_and_one_standard_error():
    s = AdaptiveSettings(window_s=100.0, headroom=0.25)
    assert upper_rate(4.0, s) == pytest.approx(4.0 * 1.25 + math.sqrt(4.0 / 100.0))
    assert upper_rate(0.0, s) == 0.0


# --- the controller ---------------------------------------------------------------------------
def _controller(proposals, hysteresis=0.1, period=1.0):
    calls = iter(proposals)
    return CapController(AdaptiveSettings(period_s=period, hysteresis=hysteresis), {"a": 10},
                         lambda now: (next(calls), 1.0))


def test_growth_past_the_hysteresis_applies_at_once_and_smaller_changes_are_held():
    c = _controller([{"a": 11}, {"a": 10}, {"a": 13}])
    assert c.maybe_update(0.5) is None and c.stats["resolves"] == 0  # before the first period
    assert c.maybe_update(1.0) == {"a": 11}  # +10 % is exactly the hysteresis: applied
    assert c.maybe_update(1.5) is None  # within the period: no re-solve
    assert c.maybe_update(2.0) is None  # 11 -> 10 is −9 %: below the hysteresis
    assert c.maybe_update(3.0) == {"a": 13}
    assert c.current == {"a": 13} and [h[1] for h in c.history] == [{"a": 10}, {"a": 11}, {"a": 13}]


def test_a_shrink_needs_two_periods_in_a_row_and_takes_the_milder_one():
    c = _controller([{"a": 5}, {"a": 10}, {"a": 6}, {"a": 4}])
    assert c.maybe_update(1.0) is None  # first shrink proposal: held
    assert c.maybe_update(2.0) is None  # back to 10: the pending shrink is forgotten
    assert c.maybe_update(3.0) is None  # 6: held again
    assert c.maybe_update(4.0) == {"a": 6}  # 4 confirms; the milder of 6 and 4 is applied
    assert c.stats["held_by_hysteresis"] == 2 and c.stats["changes"] == 1


def test_a_backlog_resolves_early_grows_only_and_holds_shrinks_for_a_window():
    proposals = iter([{"a": 20}, {"a": 5}, {"a": 5}, {"a": 5}, {"a": 5}])
    c = CapController(AdaptiveSettings(period_s=1.0, hysteresis=0.1, window_s=10.0, backlog_wait_s=0.25), {"a": 10},
                      lambda now: (next(proposals), 1.0))
    assert c.maybe_update(0.2, backlog=True) is None  # 0.2 s since the start: below backlog_wait_s
    assert c.maybe_update(0.25, backlog=True) == {"a": 20}  # exactly backlog_wait_s: an early re-solve, growth applied
    assert c.stats["backlog_resolves"] == 1
    assert c.maybe_update(0.3, backlog=True) is None and c.stats["resolves"] == 1  # rate-limited
    # the periodic re-solves propose 5, but the estimate is stale for a window after the backlog
    assert c.maybe_update(1.0) is None and c.maybe_update(2.0) is None and c.stats["held_after_backlog"] == 2
    assert c.current == {"a": 20}
    # 10.25 s: the window has refilled; the usual two-period shrink
    assert c.maybe_update(10.3) is None and c.maybe_update(11.3) == {"a": 5}


def test_an_early_backlog_resolve_never_shrinks():
    c = CapController(AdaptiveSettings(period_s=10.0, hysteresis=0.1, backlog_wait_s=0.5), {"a": 10, "b": 10},
                      lambda now: ({"a": 30, "b": 2}, 1.0))
    assert c.maybe_update(1.0, backlog=True) == {"a": 30, "b": 10}  # b's shrink waits for the period's clock


def test_backlog_is_a_binding_cap_with_a_request_waiting_backlog_wait_s(adaptive_policy):
    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import load_policy
    from runtime.request import Request
    from runtime.schedulers import make_scheduler

    cap = make_scheduler("wait-adaptive", KVBlockManager(137_000, 16), policy=load_policy(adaptive_policy)).group_caps["p512d20"]
    # a cache of exactly `cap` requests at their ends (532 tokens: 34 blocks): beyond the cap memory
    # can bind, so the cap binds even work-conserving (docs/capped-rule.md)
    sched = make_scheduler("wait-adaptive", KVBlockManager(cap * 34 * 16, 16), policy=load_policy(adaptive_policy))
    assert sched.group_caps["p512d20"] == cap
    wait = sched.settings.backlog_wait_s
    for i in range(cap + 1):
        sched.add_request(Request(i, 0.0, 512, 20, "p512d20"))
    sched._now_s = 0.0
    sched._admit(__import__("runtime.schedulers.base", fromlist=["Batch"]).Batch())
    assert sched._in_group["p512d20"] == cap and len(sched._waiting["p512d20"]) == 1  # request `cap` waits
    sched._now_s = wait * 0.99
    assert not sched._backlog()
    sched._now_s = wait  # it has waited exactly backlog_wait_s
    assert sched._backlog()
    # a resident finishes: at the next step's start the count is below the cap, but the cap is what
    # held the waiting request at the last admission pass, so the backlog stands (it used to vanish)
    sched.on_finished([sched._resident[0]])
    assert sched._in_group["p512d20"] == cap - 1 and sched._backlog()
    sched.schedule(wait)  # this pass admits it: nobody waits, no backlog
    assert not sched._waiting["p512d20"] and not sched._backlog()


def test_re_solved_caps_move_the_resident_cap_unless_it_was_given(adaptive_policy):
    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import load_policy
    from runtime.schedulers import make_scheduler

    policy = load_policy(adaptive_policy)
    free = make_scheduler("wait-adaptive", KVBlockManager(137_000, 16), policy=policy)
    assert free.resident_cap == sum(free.group_caps.values())
    free._apply({"p512d20": 7})
    assert (free.group_caps["p512d20"], free.resident_cap) == (7, 7)  # the sum of the class caps follows
    given = make_scheduler("wait-adaptive", KVBlockManager(137_000, 16), policy=policy, resident_cap=40)
    given._apply({"p512d20": 7})
    assert (given.group_caps["p512d20"], given.resident_cap) == (7, 40)  # a cap the user set stays


# --- re-solved caps match `solve` ---------------------------------------------------------------
def _workload(rate: float, c: int = 137_000) -> Workload:
    return Workload("w", c, BT, (RequestType("a", 512, 20, rate), RequestType("b", 512, 50, rate / 2)))


@pytest.mark.parametrize("rate", [5.0, 12.0])
def test_wait_caps_are_solves_caps_at_the_estimated_rates(rate):
    from thresholds.capped_solve import solve_wait_capped

    rule = SolveRule(0.0, "expected", None, 137_000, BT)
    caps, scale = resolve_wait_caps([("a", 512, 20), ("b", 512, 50)], {"a": rate, "b": rate / 2}, rule)
    assert scale == 1.0
    assert tuple(caps.values()) == solve_wait_capped(_workload(rate), slack=0.0).caps


def test_beyond_capacity_the_caps_are_those_of_the_largest_scale_that_fits():
    from fluid.equilibrium import closed_form
    from thresholds.capped_solve import solve_wait_capped

    theta = closed_form(_workload(10.0)).capacity_scale
    rule = SolveRule(0.0, "expected", None, 137_000, BT)
    rates = {"a": 10.0 * theta * 1.5, "b": 5.0 * theta * 1.5}
    caps, scale = resolve_wait_caps([("a", 512, 20), ("b", 512, 50)], rates, rule)
    assert scale == pytest.approx(0.95 / 1.5)  # solved at max_capacity_fraction (0.95) of the capacity
    sol = solve_wait_capped(_workload(10.0 * theta * 1.5 * scale), slack=0.0)
    assert tuple(caps.values()) == sol.caps and sol.memory.required_tokens <= 137_000


def test_nested_cap_is_solves_resident_cap_for_one_type():
    from thresholds.capped_solve import solve_nested_capped
    from thresholds.nested import NestedOptions

    w = Workload("w", 137_000, BT, (RequestType("a", 512, 20, 20.0),))
    sol = solve_nested_capped(w, NestedOptions(segments=None, slack=0.0, eta=0.0), None)
    rule = SolveRule(0.0, "expected", None, 137_000, BT)
    cap, scale = resolve_nested_cap(20.0, RequestShape.of_lengths([(512, 20)]), rule, 532)
    assert (cap, scale) == (sol.resident_cap, 1.0)


def test_nested_cap_prices_expected_memory_as_m_star_at_the_rate_by_hand():
    # one type 512/20 at 20 req/s: 21 stages, 522 KV tokens a resident on average, 25.33 new tokens
    # a stage; L = 420 · (2.6e-7 · 522 + 4.7e-5 · 25.33) and ΔT = d0 / (1 − L) = 0.0209971 s, so
    # M = 420 · ΔT · 522 = 4603.41 tokens (worst case 9 residents · 532 = 4788). With no margin a C of
    # ⌈M⌉ fits at the full rate; 2 tokens under M it does not
    shape = RequestShape.of_lengths([(512, 20)])
    m = 420 * (0.0093 / (1 - 420 * (2.6e-7 * 522 + 4.7e-5 * 76 / 3))) * 522
    assert m == pytest.approx(4603.41156, rel=1e-9)
    assert resolve_nested_cap(20.0, shape, SolveRule(0.0, "expected", 0.0, math.ceil(m), BT, 0.999), 532) == (9, 1.0)
    cap, scale = resolve_nested_cap(20.0, shape, SolveRule(0.0, "expected", 0.0, math.floor(m) - 1, BT, 0.999), 532)
    assert scale < 1.0


def test_the_re_solve_rule_keeps_the_policys_memory_bound(tmp_path):
    import dataclasses

    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import load_policy
    from runtime.schedulers.adaptive import _rule
    from validation.cli import main

    path = tmp_path / "worst.json"
    assert main(["solve", "p512d20", "--service-rule", "capped", "--adaptive", "--memory-bound", "worst", "-o", str(path)]) == 0
    policy = load_policy(path)
    kv = KVBlockManager(137_000, 16)
    settings = policy.adaptive
    assert policy.memory_bound == "worst" and _rule(policy, kv, settings).memory_bound == "worst"
    # a policy that records no bound is re-solved with solve's default, the expected one
    assert _rule(dataclasses.replace(policy, memory_bound=None), kv, settings).memory_bound == "expected"


def test_near_c_solves_default_margin_gives_way_and_a_given_margin_holds():
    # C is 5 % above the expected memory at this rate: solve's default 10 % margin gives way to 5 %, so
    # the re-solve with no margin of its own keeps the whole estimate; a margin of 0.1 held fixed cannot.
    # (max_capacity_fraction 0.999: this C puts the rate at ~0.97 of the fluid capacity, memory-bound)
    from thresholds.capped_solve import solve_wait_capped

    expected = solve_wait_capped(_workload(12.0), slack=0.0).memory.expected_tokens
    c = math.floor(expected * 1.05)
    classes, rates = [("a", 512, 20), ("b", 512, 50)], {"a": 12.0, "b": 6.0}
    caps, scale = resolve_wait_caps(classes, rates, SolveRule(0.0, "expected", None, c, BT, 0.999))
    sol = solve_wait_capped(_workload(12.0, c), slack=0.0)
    assert scale == 1.0 and tuple(caps.values()) == sol.caps and sol.memory.margin == pytest.approx(c / expected - 1)
    held, held_scale = resolve_wait_caps(classes, rates, SolveRule(0.0, "expected", 0.1, c, BT, 0.999))
    assert held_scale < 1.0 and sum(held.values()) < sum(caps.values())


def test_prefill_chunk_is_solves_for_the_prefill_per_step_and_never_below_the_policys():
    from thresholds.adaptive import prefill_chunk_for

    assert prefill_chunk_for(208.0, 208) == 208  # exactly 13 blocks: that chunk
    assert prefill_chunk_for(208.5, 208) == 224  # a token more: the next block
    assert prefill_chunk_for(100.0, 208) == 208  # less than the policy's chunk: the policy's
    assert prefill_chunk_for(5000.0, None) is None  # a policy of whole prompts keeps whole prompts


def test_the_nested_adaptive_chunk_follows_the_cap_to_solves_chunk_at_the_peak():
    # Azure conversation lengths: the mean-rate policy chunks prompts at 208 tokens; at the cap that
    # solve gives at the peak rate the chunk is the one that solve pairs with it
    from fluid.workload_io import load_workload
    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import policy_from_dict
    from runtime.schedulers.adaptive import AdaptiveCappedNestedWaitScheduler
    from runtime.schedulers.capped import CappedNestedWaitScheduler
    from validation.drift import solve_capped

    w = load_workload("azure-conv")
    peak = policy_from_dict(solve_capped(w, "nested-wait", 6.0, None))
    sched = AdaptiveCappedNestedWaitScheduler(KVBlockManager(137_000, 16),
                                              policy=policy_from_dict(solve_capped(w, "nested-wait", 4.0, {})))
    start_cap, start_chunk = sched.group_caps["all"], sched.prefill_chunk_tokens
    assert start_chunk == sched.policy.prefill_chunk_tokens and start_chunk is not None
    static = CappedNestedWaitScheduler(KVBlockManager(137_000, 16), policy=peak)
    assert static.group_caps["all"] > start_cap and peak.prefill_chunk_tokens > start_chunk
    sched._apply({"all": static.group_caps["all"]})
    assert sched.prefill_chunk_tokens == peak.prefill_chunk_tokens
    sched._apply({"all": start_cap // 2})  # below the policy's cap: the policy's chunk, not less
    assert sched.prefill_chunk_tokens == start_chunk


def test_nested_adaptive_refuses_the_theorem_bound():
    with pytest.raises(InputError, match="theorem"):
        resolve_nested_cap(1.0, RequestShape.of_lengths([(5, 5)]), SolveRule(0.0, "theorem", None, 1000, BT), 10)


# --- the settings in the policy file ------------------------------------------------------------
@pytest.fixture(scope="module")
def adaptive_policy(tmp_path_factory):
    from validation.cli import main

    path = tmp_path_factory.mktemp("pol") / "p.json"
    # a backlog is a request waiting 1 s behind a binding cap (the default 0.25 s also catches the
    # bursts of the quiet minute of the step test below)
    assert main(["solve", "p512d20", "--service-rule", "capped", "--adaptive", "--adaptive-window-s", "30",
                 "--adaptive-backlog-wait-s", "1", "-o", str(path)]) == 0
    return path


def test_solve_writes_the_adaptive_block_and_the_reader_returns_it(adaptive_policy):
    from runtime.policy_file import load_policy
    from runtime.simrun import policy_scheduler

    block = json.loads(adaptive_policy.read_text())["capped"]["adaptive"]
    assert block == AdaptiveSettings(window_s=30.0, backlog_wait_s=1.0).to_dict()
    policy = load_policy(adaptive_policy)
    assert policy.adaptive == AdaptiveSettings(window_s=30.0, backlog_wait_s=1.0) and policy_scheduler(policy) == "wait-adaptive"


def test_the_re_solve_holds_the_margin_given_to_solve_and_solves_rule_without_one(tmp_path):
    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import load_policy
    from runtime.schedulers.adaptive import AdaptiveCappedWaitScheduler, _rule
    from validation.cli import main

    for given, expected in ((None, None), ("0.2", 0.2)):
        path = tmp_path / f"m{given}.json"
        extra = [] if given is None else ["--memory-margin", given]
        assert main(["solve", "p512d20", "--service-rule", "capped", "--adaptive", *extra, "-o", str(path)]) == 0
        doc = json.loads(path.read_text())
        assert doc["capped"]["adaptive"]["memory_margin"] == expected
        policy = load_policy(path)
        # the policy records the margin solve chose (0.1 by default) but the re-solve keeps solve's rule
        assert policy.memory_margin == pytest.approx(0.1 if given is None else 0.2)
        sched = AdaptiveCappedWaitScheduler(KVBlockManager(137_000, 16), policy=policy)
        assert _rule(sched.policy, sched.kv, sched.settings).memory_margin == expected


@pytest.mark.parametrize(("edit", "field", "words"), [
    ({"max_rate_scale": 0.01}, "max_rate_scale", "below min_rate_scale"),
    ({"window_s": 0}, "window_s", "finite positive number, got 0"),
    ({"min_completions": 0}, "min_completions", "positive integer, got 0"),
    ({"period": 5}, "adaptive", "period"),
    ({"memory_margin": -0.1}, "memory_margin", "got -0.1"),
])
def test_reader_refuses_bad_adaptive_blocks_naming_the_field(adaptive_policy, tmp_path, edit, field, words):
    from runtime.policy_file import load_policy

    doc = json.loads(adaptive_policy.read_text())
    doc["capped"]["adaptive"].update(edit)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        load_policy(bad)
    assert field in (err.value.field or "") and words in str(err.value)


def test_schema_and_reader_agree_on_the_adaptive_block(adaptive_policy, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from runtime.policy_file import load_policy
    from thresholds.policy import SCHEMA_PATH

    schema = json.loads(SCHEMA_PATH.read_text())
    for edit, ok in (({}, True), ({"headroom": -1}, False), ({"window_s": "60"}, False), ({"extra": 1}, False),
                     ({"memory_margin": 0.2}, True), ({"memory_margin": None}, True), ({"memory_margin": -1}, False)):
        doc = json.loads(adaptive_policy.read_text())
        doc["capped"]["adaptive"].update(edit)
        schema_ok = jsonschema.Draft202012Validator(schema).is_valid(doc)
        path = tmp_path / "p.json"
        path.write_text(json.dumps(doc))
        try:
            load_policy(path)
            reader_ok = True
        except InputError:
            reader_ok = False
        assert schema_ok == reader_ok == ok, edit


def test_the_adaptive_flags_help_states_the_settings_defaults():
    import argparse
    import re

    from thresholds.cli_solve import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = AdaptiveSettings().to_dict()
    flags = [a for a in parser._actions if a.option_strings and a.option_strings[0].startswith("--adaptive-")]
    assert len(flags) == 5
    for action in flags:
        stated = float(re.search(r"default ([0-9.]+)$", action.help).group(1))
        assert stated == defaults[action.dest.removeprefix("adaptive_")], action.option_strings[0]


def test_adaptive_flags_without_adaptive_are_refused(capsys):
    from validation.cli import main

    assert main(["solve", "p512d20", "--service-rule", "capped", "--adaptive-period-s", "3", "-o", "/tmp/x.json"]) == 2
    assert "--adaptive-period-s only apply with --adaptive" in capsys.readouterr().err


# --- the scheduler in the simulator ---------------------------------------------------------------
def test_caps_follow_a_step_in_the_rate_and_memory_stays_within_c(adaptive_policy):
    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import load_policy
    from runtime.request import Request
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate
    import numpy as np

    policy = load_policy(adaptive_policy)
    rate = policy.classes[0].rate_per_s
    rng = np.random.default_rng(0)
    # 60 s at 40 % of the solved rate, then 60 s at 100 %
    times = np.concatenate([np.sort(rng.uniform(0, 60, rng.poisson(0.4 * rate * 60))),
                            np.sort(rng.uniform(60, 120, rng.poisson(rate * 60)))])
    reqs = [Request(i, float(t), 512, 20, "p512d20") for i, t in enumerate(times)]
    # caps that always bind (memory never does here, so work-conserving caps would let the step in
    # without a backlog): the controller's reaction to a binding cap is what is tested
    sched = make_scheduler("wait-adaptive", KVBlockManager(137_000, 16), policy=policy, work_conserving=False)
    result = simulate(sched, reqs, BT, audit=False)
    assert all(r.completion_s is not None for r in reqs)
    def cap_at(t_s):  # the cap in force at t_s
        return [caps["p512d20"] for t, caps, _ in sched.cap_history if t <= t_s][-1]

    first = cap_at(0.0)
    assert cap_at(59.0) < first  # the quiet minute shrank the cap
    assert cap_at(119.0) > cap_at(59.0)  # and the step grew it again
    # the first growth after the quiet minute is the backlog's, within 3 s of the step (the 30 s window
    # alone would take tens of seconds), and straight to the largest caps the rules allow
    grown = min(t for t, caps, _ in sched.cap_history if t > 50.0 and caps["p512d20"] > cap_at(59.0))
    assert 60.0 <= grown < 63.0 and sched.controller.stats["backlog_resolves"] >= 1
    assert cap_at(grown) == 87  # what `solve` gives at 0.95 of the capacity (static-peak's cap in docs/adaptive.md)
    assert result.peak_kv_tokens <= 137_000


def test_nested_adaptive_learns_the_lengths_of_finished_requests():
    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import policy_from_dict
    from runtime.request import Request
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate
    from validation.drift import solve_capped
    import numpy as np

    w = Workload("n", 137_000, BT, (RequestType("s", 200, 20, 10.0), RequestType("l", 200, 200, 2.0)))
    doc = solve_capped(w, "nested-wait", 12.0, {"window_s": 20.0, "period_s": 2.0})
    sched = make_scheduler("nested-wait-adaptive", KVBlockManager(137_000, 16), policy=policy_from_dict(doc))
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0, 60, 720))
    reqs = [Request(i, float(t), 200, 20 if rng.random() < 10 / 12 else 200) for i, t in enumerate(times)]
    simulate(sched, reqs, BT)
    assert sched.controller.stats["resolves"] >= 25
    assert len(sched.lengths.lengths(60.0)) >= 50  # finished requests in the window feed the shape


@pytest.fixture(scope="module")
def nested_adaptive_doc():
    from validation.drift import solve_capped

    w = Workload("n", 137_000, BT, (RequestType("s", 200, 20, 10.0), RequestType("l", 200, 200, 2.0)))
    doc = solve_capped(w, "nested-wait", 12.0, {"window_s": 20.0, "period_s": 2.0})
    doc["capped"]["adaptive"].update(max_rate_scale=1.5, min_completions=5)
    return doc


def _nested_adaptive(doc):
    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import policy_from_dict
    from runtime.schedulers import make_scheduler

    return make_scheduler("nested-wait-adaptive", KVBlockManager(137_000, 16), policy=policy_from_dict(doc))


def test_nested_adaptive_clips_a_high_estimate_to_the_largest_rate_a_backlog_gets(nested_adaptive_doc):
    sched = _nested_adaptive(nested_adaptive_doc)
    quiet = sched.controller._resolve(20.0)  # nothing arrived: the solved rate fills the window
    for i in range(2000):  # 100 requests/s against 12 solved for, above max_rate_scale 1.5 × 12
        sched.rates.observe("all", i * 0.01)
    clipped = sched.controller._resolve(20.0)
    sched._backlog = lambda: True  # a backlog re-solves for max_rate_scale × the solved rate
    assert clipped == sched.controller._resolve(20.0) == ({"all": 12}, 1.0)
    assert quiet[0]["all"] < 12


def test_nested_adaptive_uses_the_finished_lengths_from_exactly_min_completions_on(nested_adaptive_doc):
    caps = []
    for finished in (4, 5, 6):  # min_completions = 5
        sched = _nested_adaptive(nested_adaptive_doc)
        for i in range(finished):  # only long requests finished: the shape is (200, 200), not the solved mix
            sched.lengths.observe(1.0 + i, 200, 200)
        caps.append(sched.controller._resolve(10.0)[0]["all"])
    assert caps[0] == _nested_adaptive(nested_adaptive_doc).controller._resolve(10.0)[0]["all"]  # 4: the solved shape
    assert caps[1] == caps[2] != caps[0]



def test_nested_adaptive_prices_the_worst_case_at_the_longest_request_seen(nested_adaptive_doc, monkeypatch):
    # the policy's longest request is 200 + 200 = 400 tokens; a finished request of 100 + 450 = 550
    # raises the worst-case length the re-solve prices; shorter ones never lower it
    import runtime.schedulers.adaptive as adaptive_scheduler

    sched = _nested_adaptive(nested_adaptive_doc)
    priced = []
    real = adaptive_scheduler.resolve_nested_cap
    monkeypatch.setattr(adaptive_scheduler, "resolve_nested_cap",
                        lambda total, shape, rule, longest: priced.append(longest) or real(total, shape, rule, longest))
    sched.controller._resolve(10.0)
    sched.lengths.observe(2.0, 10, 20)
    sched.controller._resolve(10.0)
    sched.lengths.observe(3.0, 100, 450)
    sched.controller._resolve(10.0)
    assert priced == [400, 400, 550]


def test_nested_adaptive_needs_the_rates_the_policy_was_solved_for(nested_adaptive_doc):
    from dataclasses import replace

    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import policy_from_dict
    from runtime.schedulers.adaptive import AdaptiveCappedNestedWaitScheduler

    policy = policy_from_dict(nested_adaptive_doc)
    for ref in (None, replace(policy.solved_for, rates_per_s=())):
        with pytest.raises(InputError, match=r"workload\.rates_per_s"):
            AdaptiveCappedNestedWaitScheduler(KVBlockManager(137_000, 16), policy=replace(policy, solved_for=ref))


def test_the_re_solve_rule_caps_c_at_the_cache_and_flags_override_the_files_settings(adaptive_policy):
    # the file (C = 137,000, window 30 s, backlog 1 s): a smaller cache caps C, a larger one does not
    # raise it; the scheduler's window/period/hysteresis override the file's block, the rest stays
    from dataclasses import replace

    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import load_policy
    from runtime.schedulers.adaptive import AdaptiveCappedWaitScheduler, _rule, _settings

    policy = load_policy(adaptive_policy)
    small = AdaptiveCappedWaitScheduler(KVBlockManager(50_000, 16), policy=policy)
    rule = _rule(small.policy, small.kv, small.settings)
    assert rule.kv_capacity_tokens == 50_000 and rule.slack == 0.0 and rule.memory_bound == "expected"
    big = AdaptiveCappedWaitScheduler(KVBlockManager(500_000, 16), policy=policy)
    assert _rule(big.policy, big.kv, big.settings).kv_capacity_tokens == 137_000
    assert rule.max_capacity_fraction == policy.adaptive.max_capacity_fraction
    assert _settings(policy, None, None, None) == policy.adaptive
    assert _settings(policy, 10.0, 2.0, 0.2) == replace(policy.adaptive, window_s=10.0, period_s=2.0, hysteresis=0.2)
    assert _settings(replace(policy, adaptive=None), None, 3.0, None) == AdaptiveSettings(period_s=3.0)
    with pytest.raises(InputError, match="lacks") as err:
        AdaptiveCappedWaitScheduler(KVBlockManager(50_000, 16), policy=replace(policy, batch_time=None))
    assert err.value.field == "batch_time"

# --- the drift experiments at smoke size ----------------------------------------------------------
@pytest.mark.parametrize("name", ["step", "periodic", "azure-x10"])
def test_drift_experiment_smoke_writes_the_documented_fields(tmp_path, name, capsys):
    from validation.cli import main

    out = tmp_path / f"adaptive-{name}.json"
    assert main(["drift", f"validation/experiments/adaptive/{name}.yaml", "--smoke", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    labels = {r["policy"] for r in data["runs"]}
    assert labels == {"adaptive", "static-mean", "static-peak", "vllm-v1", "sarathi"}
    for r in data["runs"]:
        for key in ("experiment", "policy", "cumulative_throughput_vs_fluid_min", "mean_latency_s",
                    "static_mean_latency_s", "static_peak_mean_latency_s"):
            assert r[key] is not None, key
        assert r["completed"] == r["requests"]  # every request of the smoke run finished
        assert r["peak_kv_tokens"] <= 137_000
        # the benchmark is fed this run's own requests: once both have drained, the same tokens
        c = r["curves"]
        assert c["fluid_generated_decode_tokens"][-1] == pytest.approx(c["generated_decode_tokens"][-1], rel=2e-3)
        # a Poisson profile's expected-rate ODE is kept beside it; a replayed trace has no other
        assert ("cumulative_throughput_vs_expected_fluid_min" in r) == (name != "azure-x10")
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_drift_refuses_an_unknown_key(tmp_path, capsys):
    from validation.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nworkload: p512d20\npolicy: wait\nprofile: {kind: steps, edges_s: [0, 10], scales: [0.5]}\nseed: 1\n")
    assert main(["drift", str(bad), "--out", str(tmp_path / "o.json")]) == 2
    assert "unknown key(s) ['seed']" in capsys.readouterr().err


def test_nested_cap_with_slack_and_a_binding_memory_matches_solve():
    from thresholds.capped_solve import solve_nested_capped
    from thresholds.nested import NestedOptions

    shape = RequestShape.of_lengths([(512, 20)])
    sol = solve_nested_capped(Workload("w", 137_000, BT, (RequestType("a", 512, 20, 20.0),)),
                              NestedOptions(segments=None, slack=0.1, eta=0.0), None)
    assert sol.resident_cap == 12  # ρ = 0.9 (at slack 0 the cap is smaller)
    assert resolve_nested_cap(20.0, shape, SolveRule(0.1, "expected", None, 137_000, BT), 532) == (12, 1.0)
    # C below the expected memory at 20/s (≈ 5946 tokens): the rate is scaled down until it fits
    cap, scale = resolve_nested_cap(20.0, shape, SolveRule(0.1, "expected", None, 5900, BT), 532)
    assert scale < 1
    at = solve_nested_capped(Workload("w", 5900, BT, (RequestType("a", 512, 20, 20.0 * scale),)),
                             NestedOptions(segments=None, slack=0.1, eta=0.0), None)
    assert at.resident_cap == cap and at.memory.expected_tokens <= 5900 < sol.memory.expected_tokens


def test_segment_shape_by_hand_is_the_shape_of_the_lengths_it_ends_at():
    # prefill 10; segments 0..4 (p = 0.5) and 5..9: every request spends stages 0..4 (KV 10..14, 60 in
    # all), half of them also 5..9 (KV 15..19, 85): E[l' + 1] = 5 + 0.5·5 = 7.5 stages, KV per stage
    # (60 + 0.5·85) / 7.5, new tokens (10 + 6.5) / 7.5 = 2.2. Segments that end at the output lengths
    # give exactly the shape of those lengths: half (10, 4), half (10, 9)
    from runtime.schedulers.adaptive import segment_shape
    from thresholds.policy import Segment

    shape = segment_shape(10, (Segment(0, 4, 3, 0.5, None), Segment(5, 9, 2, 0.0, 1.0)))
    assert shape.stages == 7.5
    assert shape.resident_kv_tokens == pytest.approx(102.5 / 7.5, rel=1e-15)
    assert shape.new_tokens_per_stage == pytest.approx(2.2, rel=1e-15)
    lengths = RequestShape.of_lengths([(10, 4), (10, 9)])
    assert (shape.stages, shape.resident_kv_tokens, shape.new_tokens_per_stage) == pytest.approx(
        (lengths.stages, lengths.resident_kv_tokens, lengths.new_tokens_per_stage), rel=1e-15)


def test_wait_adaptive_refuses_a_class_solved_for_no_traffic(adaptive_policy, tmp_path):
    # the estimator starts from the rate each class was solved for: a file with rate 0 (the reader
    # accepts it, a non-negative number) has nothing to start from
    from runtime.kv_blocks import KVBlockManager
    from runtime.policy_file import load_policy
    from runtime.schedulers import make_scheduler

    doc = json.loads(adaptive_policy.read_text())
    doc["classes"][0]["rate_per_s"] = 0
    path = tmp_path / "zero.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"classes\[\]\.rate_per_s") as err:
        make_scheduler("wait-adaptive", KVBlockManager(137_000, 16), policy=load_policy(path))
    assert err.value.field == "classes"


def test_the_settings_defaults_are_the_documented_ones():
    # docs/adaptive.md, "Parameters": what `solve --adaptive` writes when no flag is given
    assert AdaptiveSettings().to_dict() == {
        "window_s": 60.0, "period_s": 5.0, "hysteresis": 0.05, "min_rate_scale": 0.05, "max_rate_scale": 20.0,
        "min_completions": 50, "headroom": 0.25, "max_capacity_fraction": 0.95, "backlog_wait_s": 0.25,
        "memory_margin": None}


@pytest.mark.parametrize(("field", "value", "ok"), [
    ("window_s", 0.0, False), ("period_s", 0.0, False), ("period_s", 1e-9, True),
    ("hysteresis", 0.0, True), ("hysteresis", -0.01, False), ("headroom", 0.0, True), ("headroom", -0.01, False),
    ("min_rate_scale", 0.0, False), ("max_rate_scale", 0.0, False), ("min_completions", 1, True),
    ("min_completions", 0, False), ("max_capacity_fraction", 1.0, False), ("max_capacity_fraction", 0.0, False),
    ("max_capacity_fraction", 0.999, True), ("backlog_wait_s", 0.0, False), ("backlog_wait_s", 0.01, True),
    ("memory_margin", 0.0, True), ("memory_margin", -0.1, False),
])
def test_settings_bounds_at_their_edges(field, value, ok):
    if ok:
        assert getattr(AdaptiveSettings(**{field: value}), field) == value
    else:
        with pytest.raises(InputError) as err:
            AdaptiveSettings(**{field: value})
        assert err.value.field == f"adaptive.{field}"


def test_a_max_rate_scale_of_zero_is_refused_as_not_positive_before_the_order_check():
    # max_rate_scale must be > 0 by itself: 0 is refused as such, not only as below min_rate_scale
    with pytest.raises(InputError, match=r"field 'adaptive.max_rate_scale': must be a finite positive number, got 0.0"):
        AdaptiveSettings(max_rate_scale=0.0)
    with pytest.raises(InputError, match=r"max_rate_scale 0.01 is below min_rate_scale 0.05"):
        AdaptiveSettings(max_rate_scale=0.01)


def test_beyond_capacity_the_nested_cap_is_solved_at_the_capacity_fraction():
    # one type (512, 20): load L = Λ·E[l'+1]·(d_kv·KV + d_new·new) per resident; at 1.5 times the load
    # limit the cap is solved at the scale 0.95 / 1.5 of the estimate (max_capacity_fraction of ρ / L)
    from thresholds.capped import littles_law_cap

    shape = RequestShape.of_lengths([(512, 20)])
    per_resident = 2.6e-7 * shape.resident_kv_tokens + 4.7e-5 * shape.new_tokens_per_stage
    rate = 1.5 / (shape.stages * per_resident)
    cap, scale = resolve_nested_cap(rate, shape, SolveRule(0.0, "expected", None, 10**9, BT), 532)
    assert scale == pytest.approx(0.95 / 1.5, rel=1e-12)
    assert cap == littles_law_cap(rate * scale * shape.stages, per_resident, 0.0093, 1.0)[0]


def test_wait_caps_at_a_slack_are_bounded_by_the_load_limit_at_that_slack():
    # rates at L = 1.2 with C so large that only the load binds: at slack 0.1 the capacity is ρ/L = 0.9/1.2,
    # and the caps are solve's at 0.95 of it
    from fluid.equilibrium import closed_form
    from thresholds.capped_solve import solve_wait_capped

    rate = 1.2 / closed_form(_workload(1.0, 10**9)).load_factor
    classes = [("a", 512, 20), ("b", 512, 50)]
    caps, scale = resolve_wait_caps(classes, {"a": rate, "b": rate / 2}, SolveRule(0.1, "expected", None, 10**9, BT))
    assert scale == pytest.approx(0.95 * 0.9 / 1.2, rel=1e-12)
    assert tuple(caps.values()) == solve_wait_capped(_workload(rate * scale, 10**9), slack=0.1).caps


def test_wait_caps_that_fit_at_no_scale_are_an_error_naming_the_smallest_scale_tried():
    # the worst-case bound of one resident per class (532 + 562 tokens) exceeds C = 100 at every rate;
    # the search starts at 0.95 of the capacity scale θ* at this C and halves it 20 times
    from fluid.equilibrium import closed_form
    from fluid.errors import UnstableWorkloadError

    start = 0.95 * closed_form(_workload(1.0, 100)).capacity_scale
    assert start < 1
    with pytest.raises(UnstableWorkloadError) as err:
        resolve_wait_caps([("a", 512, 20), ("b", 512, 50)], {"a": 1.0, "b": 0.5}, SolveRule(0.0, "worst", None, 100, BT))
    assert str(err.value) == f"adaptive WAIT: no scale of the estimated rates down to {start / 2**20:.2g} gives caps that fit"


def test_settings_and_rule_refuse_unknown_input_naming_the_field():
    with pytest.raises(InputError) as err:
        SolveRule(0.0, "typical", None, 1000, BT)
    assert err.value.field == "memory_bound" and "expected, worst, theorem" in str(err.value)
    with pytest.raises(InputError) as err:
        RequestShape.of_lengths([])
    assert err.value.field == "lengths"
    with pytest.raises(InputError) as err:
        AdaptiveSettings.from_dict([("window_s", 5)])
    assert err.value.field == "adaptive" and "must be a mapping" in str(err.value)
    with pytest.raises(InputError, match=r"unknown key\(s\) \['windows'\]"):
        AdaptiveSettings.from_dict({"windows": 5})
    assert AdaptiveSettings.from_dict({"window_s": 5.0}) == AdaptiveSettings(window_s=5.0)
    assert AdaptiveSettings.from_dict(AdaptiveSettings(headroom=0.5).to_dict()) == AdaptiveSettings(headroom=0.5)
