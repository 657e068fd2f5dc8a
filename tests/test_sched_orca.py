"""Orca (OSDI'22): worst-case KV reservation, never preempts, whole prefills mixed with decodes."""

from __future__ import annotations

import random

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


def drive_checking_reservations(scheduler, requests) -> int:
    """Run to completion; after every schedule, the worst cases of the running set fit in C exactly."""
    kv = scheduler.kv
    for r in requests:
        scheduler.add_request(r)
    t, steps = 0.0, 0
    while scheduler.has_unfinished():
        batch = scheduler.schedule(t)
        assert batch.items and not batch.evicted
        worst_case_blocks = sum(kv.blocks_for_tokens(scheduler.reserved_tokens(r)) for r in scheduler.running.values())
        assert worst_case_blocks == kv.used_blocks <= kv.num_blocks
        scheduler.complete_step(batch, t, t + 1.0)
        t, steps = t + 1.0, steps + 1
    return steps


def test_never_preempts_and_reserved_worst_case_never_exceeds_capacity():
    rng = random.Random(5)
    requests = [Request(i, 0.0, rng.randint(1, 300), rng.randint(1, 200)) for i in range(150)]
    scheduler = make_scheduler("orca", KVBlockManager(2000, block_size=16), max_num_seqs=64)
    drive_checking_reservations(scheduler, requests)
    assert all(r.restarts == 0 and r.decode_steps_done == r.output_tokens for r in requests)


def test_reserves_prompt_plus_output_and_admits_fcfs_without_skipping():
    kv = KVBlockManager(30, block_size=1)
    s = make_scheduler("orca", kv)
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=15))  # reserves 20 of 30
    s.add_request(Request(1, 0.0, prompt_tokens=5, output_tokens=10))  # needs 15: waits
    s.add_request(Request(2, 0.0, prompt_tokens=1, output_tokens=1))  # would fit, waits its turn
    batch = run_step(s, 0.0)
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 5)]
    assert kv.used_blocks == 20
    batch = s.schedule(1.0)  # decode and (still) no admission: mixed batching needs room
    assert [(w.request.request_id, w.is_prefill) for w in batch.items] == [(0, False)]


def test_mixes_whole_prefills_with_decodes():
    s = make_scheduler("orca", KVBlockManager(100, block_size=1))
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=4))
    run_step(s, 0.0)
    s.add_request(Request(1, 1.0, prompt_tokens=30, output_tokens=4))
    batch = s.schedule(1.0)
    assert [(w.request.request_id, w.num_new_tokens, w.is_prefill) for w in batch.items] == [(0, 1, False), (1, 30, True)]


def test_max_tokens_knob_sets_the_reservation_and_refuses_longer_outputs():
    kv = KVBlockManager(100, block_size=1)
    s = make_scheduler("orca", kv, max_tokens=40)
    s.add_request(Request(0, 0.0, prompt_tokens=10, output_tokens=5))
    s.schedule(0.0)
    assert kv.used_blocks == 50
    with pytest.raises(InputError, match="max_tokens = 40"):
        s.add_request(Request(1, 0.0, prompt_tokens=10, output_tokens=41))
    s.add_request(Request(3, 0.0, prompt_tokens=10, output_tokens=40))  # exactly max_tokens: accepted
    with pytest.raises(InputError, match=r"needs 110 KV tokens at once \(its worst-case reservation") as err:
        s.add_request(Request(2, 0.0, prompt_tokens=70, output_tokens=5))  # 70 + 40 > 100
    assert err.value.field == "max_tokens"


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 60), st.integers(1, 40), st.floats(0, 20)), min_size=1, max_size=40),
    block_size=st.sampled_from([1, 16]),
)
def test_random_workloads_finish_without_restarts(lengths, block_size):
    kv = KVBlockManager(160, block_size=block_size)
    requests = [Request(i, t, l, o) for i, (l, o, t) in enumerate(lengths)]
    result = simulate(make_scheduler("orca", kv), requests, AffineBatchTime(0.5, 0.01), audit=True)
    assert all(r.decode_steps_done == r.output_tokens and r.restarts == 0 for r in result.requests)
    assert sum(result.steps.num_evicted) == 0 and result.peak_kv_tokens <= kv.capacity_tokens
