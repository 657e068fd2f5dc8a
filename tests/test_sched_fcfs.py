"""FCFS (the counterexample policy of arXiv 2504.11320): rules on hand-made states and the paper's loss."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluid.batch_time import AffineBatchTime
from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.sim import simulate
from sim_helpers import run_step

ONE_SECOND_STEPS = AffineBatchTime(d0_s=1.0, d1_s_per_token=0.0)


def counterexample_run(burst: int, iterations: int = 120, recompute: str = "paper"):
    """l = l' = 1, 4 arrivals per 1 s iteration, C = 12 tokens in blocks of 1, `burst` extra at t = 0."""
    requests, rid = [], 0
    for t in range(iterations):
        for _ in range(4 + (burst if t == 0 else 0)):
            requests.append(Request(rid, float(t), prompt_tokens=1, output_tokens=1))
            rid += 1
    scheduler = make_scheduler("fcfs", KVBlockManager(12, block_size=1), recompute=recompute)
    return simulate(scheduler, requests, ONE_SECOND_STEPS, horizon_s=float(iterations))


def completions_per_iteration(result, warmup_s: float) -> float:
    done = [r for r in result.requests if r.completion_s is not None and r.completion_s > warmup_s]
    return len(done) / (result.end_s - warmup_s)


def test_counterexample_imbalanced_start_loses_throughput_to_restarts():
    result = counterexample_run(burst=8)
    rate = completions_per_iteration(result, warmup_s=20.0)
    assert rate <= 0.95 * 4  # a loss of at least 5 % against λ = 4 per iteration
    assert rate >= 2.5  # the paper reports 3–3.5: FCFS still serves most of the load
    assert sum(r.restarts for r in result.requests) > 0
    assert result.peak_kv_tokens <= 12


def test_counterexample_loss_needs_the_papers_recompute():
    """With the engines' recompute an eviction after the prefill re-prefills 2 tokens, which
    samples the only output token: the evicted prompt completes in that step and FCFS keeps up."""
    rate = completions_per_iteration(counterexample_run(burst=8, recompute="engine"), warmup_s=20.0)
    assert rate == pytest.approx(4.0, abs=0.05)


def test_counterexample_balanced_start_keeps_up():
    """The same load from an empty start fits exactly (4 prefills + 4 decodes of 2 = 12 = C)."""
    result = counterexample_run(burst=0)
    assert completions_per_iteration(result, warmup_s=20.0) == pytest.approx(4.0, abs=0.05)
    assert sum(r.restarts for r in result.requests) == 0


def test_mixes_prefill_and_decode_in_one_iteration():
    s = make_scheduler("fcfs", KVBlockManager(100, block_size=1))
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=3))
    run_step(s, 0.0)
    s.add_request(Request(1, 1.0, prompt_tokens=5, output_tokens=3))
    batch = s.schedule(1.0)
    assert [(w.request.request_id, w.is_prefill) for w in batch.items] == [(0, False), (1, True)]


def test_admission_stops_at_the_first_prompt_that_does_not_fit_now():
    s = make_scheduler("fcfs", KVBlockManager(10, block_size=1))
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=3))
    run_step(s, 0.0)  # 5 of 10 tokens used
    s.add_request(Request(1, 1.0, prompt_tokens=5, output_tokens=1))  # needs 5, only 4 left after the decode
    s.add_request(Request(2, 1.0, prompt_tokens=1, output_tokens=1))  # would fit, but waits its turn
    batch = run_step(s, 1.0)
    assert [w.request.request_id for w in batch.items] == [0]
    assert [r.request_id for r in s.waiting] == [1, 2]


def test_no_look_ahead_then_lifo_eviction_to_the_front_of_the_queue():
    s = make_scheduler("fcfs", KVBlockManager(9, block_size=1))
    for rid in range(3):
        s.add_request(Request(rid, 0.0, prompt_tokens=3, output_tokens=4))
    run_step(s, 0.0)  # all three admitted: memory full now, no look-ahead at their growth
    s.add_request(Request(3, 1.0, prompt_tokens=1, output_tokens=1))
    batch = run_step(s, 1.0)
    assert batch.evicted and batch.evicted[0].request_id == 2  # the newest admitted
    assert [w.request.request_id for w in batch.items] == [0, 1]
    assert [r.request_id for r in s.waiting] == [2, 3]  # the evicted request goes first
    assert s.waiting[0].restarts == 1 and s.waiting[0].cached_tokens == 0


def test_request_larger_than_capacity_is_refused_on_arrival():
    s = make_scheduler("fcfs", KVBlockManager(12, block_size=1))
    with pytest.raises(InputError, match=r"needs 13 KV tokens.*capacity is 12 tokens"):
        s.add_request(Request(0, 0.0, prompt_tokens=7, output_tokens=6))


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30), st.floats(0, 20)), min_size=1, max_size=40),
    block_size=st.sampled_from([1, 4, 16]),
)
def test_random_workloads_finish_exactly_within_memory(lengths, block_size):
    kv = KVBlockManager(80, block_size=block_size)
    requests = [Request(i, t, l, o) for i, (l, o, t) in enumerate(lengths)]
    result = simulate(make_scheduler("fcfs", kv), requests, AffineBatchTime(0.5, 0.01), audit=True)
    assert all(r.decode_steps_done == r.output_tokens and r.completion_s is not None for r in result.requests)
    assert result.peak_kv_tokens <= kv.capacity_tokens and kv.free_blocks == kv.num_blocks
