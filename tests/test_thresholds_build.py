"""Policy dataclasses from a solution (`thresholds/build.py`): the fluid summary, the drain rule, options."""

from __future__ import annotations

import pytest

from fluid.batch_time import AffineBatchTime
from fluid.errors import InputError
from fluid.workload import RequestType, Workload
from thresholds.build import DRAIN_ITERATIONS, fluid_summary, wait_policy
from thresholds.wait import solve_wait_batch_cap


def _hand():
    # the batch-cap recipe's (9, 2) at ΔT(n) = 0.01 + 1e-4·2085 = 0.2185 s (tests/test_thresholds_report.py)
    w = Workload("hand", 10**9, AffineBatchTime(0.01, 1e-4), (RequestType("a", 10, 9, 3.0), RequestType("b", 10, 19, 1.0)))
    return w, solve_wait_batch_cap(w, 120)


def test_the_drain_waits_20_iterations_unless_a_wait_is_given():
    w, sol = _hand()
    policy = wait_policy(w, sol, allow_violations=True)
    assert DRAIN_ITERATIONS == 20
    assert policy.drain.max_wait_s == pytest.approx(20 * 0.2185, rel=1e-12)
    assert policy.options["drain_iterations"] == 20 and policy.options["iteration_time_s"] == pytest.approx(0.2185, rel=1e-12)
    given = wait_policy(w, sol, max_wait_s=0.0, allow_violations=True)  # 0: admit a partial cohort at once
    assert given.drain.max_wait_s == 0.0 and given.options["drain_iterations"] is None
    with pytest.raises(InputError) as err:
        wait_policy(w, sol, max_wait_s=-1.0)
    assert err.value.field == "max_wait_s"
    with pytest.raises(InputError) as err:
        wait_policy(w, sol, service_rule="greedy")
    assert err.value.field == "service_rule"


def test_the_policy_records_the_workload_its_rates_and_the_recipe():
    w, sol = _hand()
    policy = wait_policy(w, sol, rate_scale=2.0, slack_rule="0 (batch-cap recipe)", allow_violations=True)
    assert policy.workload.rates_per_s == (("a", 3.0), ("b", 1.0))
    assert [(c.name, c.threshold, c.rate_per_s) for c in policy.classes] == [("a", 9, 3.0), ("b", 2, 1.0)]
    o = policy.options
    assert (o["mode"], o["batch_cap"], o["rate_scale"], o["slack_rule"], o["allow_violations"]) == (
        "batch_cap", 120, 2.0, "0 (batch-cap recipe)", True)
    assert o["linear_batch_time"] == {"d0_s": 0.01, "d_kv_s_per_token": 1e-4, "d_new_s_per_token": 0.0}
    assert policy.guarantees.memory_policy_tokens == policy.guarantees.memory_required_tokens == 2085
    assert policy.guarantees.buffer_tokens == 0.0


def test_the_fluid_summary_of_an_overloaded_workload_has_no_fluid_point():
    # L = 1e-3·100·(10 + 1)·(10 + 5) > 1: no finite M* or ΔT*, written as null
    w = Workload("hot", 10**9, AffineBatchTime(0.01, 1e-3), (RequestType("a", 10, 10, 100.0),))
    f = fluid_summary(w)
    assert f.memory_star_tokens is None and f.iteration_time_star_s is None
    assert f.load_factor == pytest.approx(16.5, rel=1e-12) and f.throughput_star_tokens_per_s == 1000.0
