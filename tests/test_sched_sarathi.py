"""Sarathi-Serve (arXiv 2403.02310): stall-free batches under a token budget."""

from __future__ import annotations

import random

import pytest
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
    # decodes are not held to the budget (Sarathi-Serve counts them without a check); prefills are
    steps = result.steps
    assert all(new <= max(chunk_size, dec) for new, dec in zip(steps.new_tokens, steps.num_decodes))
    assert all(p == 0 or new <= chunk_size for new, p in zip(steps.new_tokens, steps.num_prefills))
    assert all(r.decode_steps_done == r.output_tokens and r.completion_s is not None for r in result.requests)
    assert result.peak_kv_tokens <= kv.capacity_tokens


def _items(batch):
    return [(w.request.request_id, w.num_new_tokens) for w in batch.items]


def test_a_decode_needs_a_free_block_even_inside_its_last_block():
    """Sarathi-Serve's `can_append_slot` is `free blocks > 0`: with none free the newest arrival is
    preempted though the decode's token fits in the block it holds (vLLM v1 would preempt nothing).
    The victim is reset only after the scheduler returns, so in that step it offers no prefill
    and admission stops; its recompute (6 + 1 tokens, 2 blocks) is admitted the next step (as the
    real Sarathi-Serve code does, run on the same case)."""
    s = make_scheduler("sarathi", KVBlockManager(16, block_size=4), watermark=0.0)
    s.add_request(Request(0, 0.0, prompt_tokens=6, output_tokens=3))
    s.add_request(Request(1, 0.0, prompt_tokens=6, output_tokens=3))
    assert _items(run_step(s, 0.0)) == [(0, 6), (1, 6)]  # 2 blocks each: 4 of 4
    batch = run_step(s, 1.0)
    assert [r.request_id for r in batch.evicted] == [1]
    assert _items(batch) == [(0, 1)]
    assert _items(run_step(s, 2.0)) == [(0, 1), (1, 7)]
    v1 = make_scheduler("vllm-v1", KVBlockManager(16, block_size=4))
    for rid in range(2):
        v1.add_request(Request(rid, 0.0, prompt_tokens=6, output_tokens=3))
    run_step(v1, 0.0)
    batch = v1.schedule(1.0)
    assert not batch.evicted and _items(batch) == [(0, 1), (1, 1)]


def test_running_requests_are_ordered_by_arrival_not_admission():
    """Shortest-prompt-first admits the later, shorter prompt first; under memory pressure the
    newest ARRIVAL is preempted (Sarathi-Serve sorts running requests by arrival every step)."""
    s = make_scheduler("sarathi", KVBlockManager(10, block_size=1), watermark=0.0, order="spf")
    s.add_request(Request(0, 0.0, prompt_tokens=8, output_tokens=2))
    s.add_request(Request(1, 0.1, prompt_tokens=2, output_tokens=2))
    assert _items(run_step(s, 1.0)) == [(1, 2), (0, 8)]  # shortest first: admission order 1, 0
    batch = run_step(s, 2.0)  # 10 of 10 in use: 0 (oldest arrival) asks first, 1 is the victim
    assert [r.request_id for r in batch.evicted] == [1]
    assert _items(batch) == [(0, 1)]


def test_decodes_are_not_held_to_the_token_budget():
    s = make_scheduler("sarathi", KVBlockManager(1000, block_size=1), chunk_size=8)
    for rid in range(3):
        s.add_request(Request(rid, 0.0, prompt_tokens=2, output_tokens=4))
    run_step(s, 0.0)  # all three prefilled
    s.chunk_size = 2
    s.add_request(Request(3, 3.0, prompt_tokens=2, output_tokens=4))
    assert _items(run_step(s, 3.0)) == [(0, 1), (1, 1), (2, 1)]  # 3 decodes > 2; no prefill fits


@pytest.mark.parametrize(("prompt", "chunks"), [(8, [8]), (9, [8, 1])])
def test_a_prompt_exactly_the_budget_prefills_in_one_step(prompt, chunks):
    s = make_scheduler("sarathi", KVBlockManager(1000, block_size=1), chunk_size=8)
    s.add_request(Request(0, 0.0, prompt_tokens=prompt, output_tokens=2))
    got = [_items(run_step(s, float(t)))[0][1] for t in range(len(chunks))]
    assert got == chunks


@pytest.mark.parametrize(("second_prompt", "admitted"), [(49, True), (50, False)])
def test_admission_needs_the_whole_prompt_with_the_watermark_spare(second_prompt, admitted):
    """100 blocks of 1, watermark 1 block: after request 0 (50) the second may take 50 − 1 blocks."""
    s = make_scheduler("sarathi", KVBlockManager(100, block_size=1), chunk_size=200)
    s.add_request(Request(0, 0.0, prompt_tokens=50, output_tokens=1))
    s.add_request(Request(1, 0.0, prompt_tokens=second_prompt, output_tokens=1))
    assert [rid for rid, _ in _items(s.schedule(0.0))] == ([0, 1] if admitted else [0])


def test_shortest_prompt_first_keeps_queue_order_among_equal_lengths_restarts_in_front():
    from runtime.schedulers.waiting_order import WaitingOrder

    q = WaitingOrder(by_length=True)
    a, b, c, d = (Request(i, float(i), p, 3) for i, p in enumerate((5, 3, 5, 3)))
    for r in (a, b, c):
        q.append(r)
    d.token_times_s.append(0.0)
    d.evict()  # a restart of 3 + 0 + 1 = 4 tokens
    q.appendleft(d)
    q.appendleft(Request(9, 9.0, 5, 3))  # another restart to the front, length 5: before a and c
    assert q.peek().request_id == q[0].request_id == 1 and len(q) == 5  # the head, left in place
    assert [q.popleft().request_id for _ in range(5)] == [1, 3, 9, 0, 2]


def test_a_partial_prefill_preempted_this_step_is_admitted_again_with_its_old_remainder():
    """Sarathi-Serve resets a victim only after scheduling: a partial prefill preempted this
    step offers its old remainder (12 − 1 = 11 tokens) and is admitted again at once, its chunk
    then running from the start (as the real code does on the same case)."""
    s = make_scheduler("sarathi", KVBlockManager(24, block_size=4), watermark=0.0, chunk_size=10)
    s.add_request(Request(0, 0.0, prompt_tokens=9, output_tokens=4))
    s.add_request(Request(1, 0.1, prompt_tokens=12, output_tokens=4))
    assert _items(run_step(s, 0.0)) == [(0, 9), (1, 1)]  # 3 + 3 blocks reserved: 6 of 6
    batch = run_step(s, 1.0)  # 0's decode fits its block but finds none free: 1 is the victim
    assert [r.request_id for r in batch.evicted] == [1]
    assert _items(batch) == [(0, 1), (1, 9)]  # 1 back at once: chunk min(12 − 1, 10 − 1) = 9
    assert (s.running[1].cached_tokens, s.running[1].prefill_remaining) == (9, 3)


def test_admits_up_to_exactly_max_num_seqs_in_one_step():
    s = make_scheduler("sarathi", KVBlockManager(1000, block_size=1), chunk_size=64, max_num_seqs=3)
    for rid in range(5):
        s.add_request(Request(rid, 0.0, prompt_tokens=3, output_tokens=4))
    assert _items(run_step(s, 0.0)) == [(0, 3), (1, 3), (2, 3)]  # the budget has room for all five: the cap stops 3, 4
    assert [r.request_id for r in s.waiting] == [3, 4]
    assert _items(run_step(s, 1.0)) == [(0, 1), (1, 1), (2, 1)]  # three running: still none admitted
