"""The paper's counterexample (arXiv 2504.11320, §WAIT): l = l' = 1, λ = 4 prompts per
iteration, 1 s iterations, C = 12 tokens (= M*), token-level blocks, an imbalanced start. WAIT
(n = 4) completes 4 prompts per iteration without a restart; FCFS evicts and restarts forever
and loses at least 5 % of the throughput."""

from __future__ import annotations

import importlib.util

import pytest

from fluid.batch_time import AffineBatchTime
from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import RuntimeClass, RuntimePolicy
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.sim import simulate

ITERATIONS = 150
WARMUP_S = 20.0
BURST = 8  # extra prompts at t = 0: the imbalanced start
ONE_SECOND = AffineBatchTime(d0_s=1.0, d1_s_per_token=0.0)
WAIT_POLICY = RuntimePolicy("wait", "cohort", classes=(RuntimeClass("p1d1", 1, 1, 4, 4.0),))


def _arrivals() -> list[Request]:
    requests, rid = [], 0
    for t in range(ITERATIONS):
        for _ in range(4 + (BURST if t == 0 else 0)):
            requests.append(Request(rid, float(t), 1, 1, "p1d1"))
            rid += 1
    return requests


def _run(name: str, **knobs):
    requests = _arrivals()
    scheduler = make_scheduler(name, KVBlockManager(12, block_size=1), **knobs)
    result = simulate(scheduler, requests, ONE_SECOND, horizon_s=float(ITERATIONS))
    done = sum(1 for r in requests if r.completion_s is not None and r.completion_s > WARMUP_S)
    return done / (result.end_s - WARMUP_S), requests, result


@pytest.mark.parametrize("rule", ["cohort", "continuous"])
def test_wait_completes_four_per_iteration_without_restarts(rule):
    policy = RuntimePolicy("wait", rule, classes=WAIT_POLICY.classes)
    rate, requests, result = _run("wait", policy=policy)
    assert rate == pytest.approx(4.0, abs=0.05)
    assert sum(r.restarts for r in requests) == 0
    # every step after the first holds the whole memory (4 decodes at 2 tokens + 4 prompts at 1),
    # before its finished requests are released: the peak is C = 12 (it read 4 when taken after)
    assert result.peak_kv_tokens == 12
    assert result.steps.kv_used_tokens[1:] == [12] * (len(result.steps) - 1)


@pytest.mark.skipif(
    importlib.util.find_spec("runtime.schedulers.fcfs") is None,
    reason="runtime/schedulers/fcfs.py (the FCFS baseline) is not in the tree yet",
)
def test_fcfs_loses_at_least_five_percent_on_the_same_arrivals():
    wait_rate, _, _ = _run("wait", policy=WAIT_POLICY)
    fcfs_rate, requests, result = _run("fcfs", recompute="paper")  # the paper's eviction (docs/baselines.md)
    assert fcfs_rate <= 0.95 * wait_rate
    assert sum(r.restarts for r in requests) > 0
    assert result.peak_kv_tokens <= 12
