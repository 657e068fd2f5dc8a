"""Sarathi-Serve (arXiv 2403.02310): stall-free batches under a token budget."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fluid.batch_time import AffineBatchTime
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.sim import simulate
from sim_helpers import run_step


def test_decodes_then_partial_prefills_then_new_prompts_each_chunked_to_the_budget():
    s = make_scheduler("sarathi", KVBlockManager(1000, block_size=1), chunk_size=8)
    s.add_request(Request(0, 0.0, prompt_tokens=3, output_tokens=5))
    s.add_request(Request(1, 0.0, prompt_tokens=12, output_tokens=5))
    assert [(w.request.request_id, w.num_new_tokens) for w in run_step(s, 0.0).items] == [(0, 3), (1, 5)]
    s.add_request(Request(2, 1.0, prompt_tokens=4, output_tokens=5))
    batch = run_step(s, 1.0)  # decode of 0, 1's last 7 prefill tokens fill the budget, 2 waits
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1), (1, 7)]
    batch = run_step(s, 2.0)
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1), (1, 1), (2, 4)]


def test_whole_prompt_blocks_are_reserved_at_admission():
    kv = KVBlockManager(1600, block_size=16)
    s = make_scheduler("sarathi", kv, chunk_size=64)
    r = Request(0, 0.0, prompt_tokens=300, output_tokens=5)
    s.add_request(r)
    batch = s.schedule(0.0)
    assert [w.num_new_tokens for w in batch.items] == [64]
    assert kv.blocks_held(r) == kv.blocks_for_tokens(300)


def test_preempts_the_newest_when_a_decode_cannot_grow():
    s = make_scheduler("sarathi", KVBlockManager(12, block_size=1), watermark=0.0)
    for rid in range(3):
        s.add_request(Request(rid, 0.0, prompt_tokens=4, output_tokens=3))
    run_step(s, 0.0)  # 12 of 12 tokens
    batch = run_step(s, 1.0)
    assert [r.request_id for r in batch.evicted] == [2]
    assert [r.request_id for r in s.waiting] == [2]


def test_every_decode_runs_every_step_when_memory_allows():
    """With ample memory no decode is ever left out, and no batch exceeds the budget."""
    s = make_scheduler("sarathi", KVBlockManager(100_000, block_size=16), chunk_size=64, max_num_seqs=32)
    rng = random.Random(3)
    pending = [Request(i, 0.0, rng.randint(1, 200), rng.randint(1, 60)) for i in range(120)]
    for r in pending:
        s.add_request(r)
    t, steps = 0.0, 0
    while s.has_unfinished():
        decoding = {rid for rid, r in s.running.items() if r.cached_tokens == r.prompt_tokens + r.decode_steps_done}
        batch = s.schedule(t)
        assert not batch.evicted
        assert {w.request.request_id for w in batch.items if not w.is_prefill} == decoding
        assert sum(w.num_new_tokens for w in batch.items) <= 64
        assert len(s.running) <= 32
        s.complete_step(batch, t, t + 1.0)
        t += 1.0
        steps += 1
    assert all(r.decode_steps_done == r.output_tokens for r in pending) and steps > 100


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 90), st.integers(1, 40), st.floats(0, 20)), min_size=1, max_size=40),
    chunk_size=st.integers(1, 64),
    max_num_seqs=st.integers(1, 80),
    block_size=st.sampled_from([1, 16]),
)
def test_never_exceeds_its_budget_nor_memory(lengths, chunk_size, max_num_seqs, block_size):
    kv = KVBlockManager(160, block_size=block_size)
    requests = [Request(i, t, l, o) for i, (l, o, t) in enumerate(lengths)]
    scheduler = make_scheduler("sarathi", kv, chunk_size=chunk_size, max_num_seqs=max_num_seqs, watermark=0.0)
    result = simulate(scheduler, requests, AffineBatchTime(0.5, 0.01), audit=True)
    assert max(result.steps.new_tokens) <= chunk_size
    assert all(r.decode_steps_done == r.output_tokens and r.completion_s is not None for r in result.requests)
    assert result.peak_kv_tokens <= kv.capacity_tokens
