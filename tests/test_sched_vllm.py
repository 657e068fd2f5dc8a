"""vLLM v0 and v1 styles: rules on hand-made states, and invariants over random workloads."""

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


def random_requests(seed: int, n: int, max_prompt: int, max_output: int, rate_per_s: float) -> list[Request]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate_per_s)
        out.append(Request(i, t, rng.randint(1, max_prompt), rng.randint(1, max_output)))
    return out


# --- vLLM v0 -----------------------------------------------------------------------------------
def test_v0_never_mixes_prefill_and_decode_and_respects_the_token_budget():
    kv = KVBlockManager(4000, block_size=16)
    scheduler = make_scheduler("vllm-v0", kv, max_num_batched_tokens=700, max_num_seqs=64)
    result = simulate(scheduler, random_requests(1, 400, 350, 120, 40.0), AffineBatchTime(0.02, 1e-5))
    log = result.steps
    assert sum(r.restarts for r in result.requests) > 0  # the run does reach memory pressure
    assert any(p > 1 for p in log.num_prefills)
    for prefills, decodes, new in zip(log.num_prefills, log.num_decodes, log.new_tokens):
        assert prefills == 0 or decodes == 0
        assert prefills == 0 or new <= 700
    assert all(r.completion_s is not None for r in result.requests)


def test_v0_prefill_priority_stalls_decodes():
    s = make_scheduler("vllm-v0", KVBlockManager(1000, block_size=1))
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=4))
    run_step(s, 0.0)
    s.add_request(Request(1, 1.0, prompt_tokens=5, output_tokens=4))
    batch = s.schedule(1.0)
    assert [(w.request.request_id, w.is_prefill) for w in batch.items] == [(1, True)]


@pytest.mark.parametrize(("second_prompt", "admitted"), [(49, True), (50, False)])
def test_v0_watermark_keeps_one_percent_of_blocks_free(second_prompt, admitted):
    s = make_scheduler("vllm-v0", KVBlockManager(100, block_size=1))  # watermark: 1 block
    s.add_request(Request(0, 0.0, prompt_tokens=50, output_tokens=1))
    s.add_request(Request(1, 0.0, prompt_tokens=second_prompt, output_tokens=1))
    batch = s.schedule(0.0)
    assert [w.request.request_id for w in batch.items] == ([0, 1] if admitted else [0])


def test_v0_decode_pass_preempts_the_newest_and_requeues_it_first():
    s = make_scheduler("vllm-v0", KVBlockManager(200, block_size=16), watermark=0.0)  # 12 blocks
    for rid in range(3):
        s.add_request(Request(rid, 0.0, prompt_tokens=64, output_tokens=20))  # 4 blocks each: all 12
    run_step(s, 0.0)
    s.add_request(Request(3, 1.0, prompt_tokens=1, output_tokens=1))
    batch = run_step(s, 1.0)  # nothing admissible, so a decode step; request 0 needs a 5th block
    assert [r.request_id for r in batch.evicted] == [2]
    assert [w.request.request_id for w in batch.items] == [0, 1]
    assert [r.request_id for r in s.waiting] == [2, 3]


def test_v0_default_budget_follows_the_longest_sequence_and_a_fixed_one_refuses_longer():
    s = make_scheduler("vllm-v0", KVBlockManager(10_000, block_size=16))
    s.add_request(Request(0, 0.0, prompt_tokens=3000, output_tokens=10))
    assert s.max_num_batched_tokens == 3010
    assert [w.num_new_tokens for w in s.schedule(0.0).items] == [3000]
    fixed = make_scheduler("vllm-v0", KVBlockManager(10_000, block_size=16), max_num_batched_tokens=2048)
    with pytest.raises(InputError, match="max_num_batched_tokens = 2048"):
        fixed.add_request(Request(0, 0.0, prompt_tokens=3000, output_tokens=10))


def test_bad_knobs_are_input_errors():
    with pytest.raises(InputError, match="max_num_seqs"):
        make_scheduler("vllm-v0", KVBlockManager(100, block_size=1), max_num_seqs=0)
    with pytest.raises(InputError, match="watermark"):
        make_scheduler("vllm-v0", KVBlockManager(100, block_size=1), watermark=1.5)
    with pytest.raises(InputError, match="max_num_batched_tokens"):
        make_scheduler("vllm-v1", KVBlockManager(100, block_size=1), max_num_batched_tokens=2.5)


# --- vLLM v1 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("reserve_full_isl", [False, True])
def test_v1_admits_nothing_in_a_step_that_preempted(reserve_full_isl):
    s = make_scheduler("vllm-v1", KVBlockManager(10, block_size=1), reserve_full_isl=reserve_full_isl)
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=5))
    s.add_request(Request(1, 0.0, prompt_tokens=5, output_tokens=5))
    run_step(s, 0.0)  # both prefilled: memory full
    s.add_request(Request(2, 1.0, prompt_tokens=2, output_tokens=1))
    s.max_num_batched_tokens = 3  # a small budget: a chunk of 2 would fit in the 4 tokens the eviction frees
    batch = s.schedule(1.0)
    assert [r.request_id for r in batch.evicted] == [1]
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1)]
    assert [r.request_id for r in s.waiting] == [1, 2]
    assert s.waiting[0].prefill_target_tokens == 6  # its prompt and the token it had sampled
    s.complete_step(batch, 1.0, 2.0)
    batch = s.schedule(2.0)  # nothing preempted now: admission resumes, the restart first, chunked to fit
    if reserve_full_isl:  # its whole 6-token sequence needs 6 free blocks; 3 are free: nothing is admitted
        assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1)]
    else:  # only the chunk's 2 blocks must be free
        assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1), (1, 2)]


def test_v1_a_prefill_chunk_inside_its_held_block_runs_with_no_block_free():
    # block 16, C = 32 (2 blocks), budget 8: request 0 (prompt 8) takes one block at t = 0; at t = 1
    # it decodes and request 1 (prompt 20) is admitted with a chunk of 7, the last free block. At
    # t = 2 none is free, but request 1's next chunk of 7 (tokens 8..14) stays inside the block it
    # holds: it runs, and nobody is preempted for it
    s = make_scheduler("vllm-v1", KVBlockManager(32, block_size=16), max_num_batched_tokens=8, reserve_full_isl=False)
    s.add_request(Request(0, 0.0, prompt_tokens=8, output_tokens=5))
    s.add_request(Request(1, 0.0, prompt_tokens=20, output_tokens=1))
    assert [(w.request.request_id, w.num_new_tokens) for w in run_step(s, 0.0).items] == [(0, 8)]
    assert [(w.request.request_id, w.num_new_tokens) for w in run_step(s, 1.0).items] == [(0, 1), (1, 7)]
    assert s.kv.free_blocks == 0
    batch = run_step(s, 2.0)
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1), (1, 7)]
    assert batch.evicted == [] and list(s.running) == [0, 1] and s.kv.free_blocks == 0


def test_v1_the_decode_a_preemption_makes_room_for_spends_the_budget_like_any_other():
    # block 1, C = 12: four 3-token prompts fill the cache at t = 0. With a budget of 2 at t = 1,
    # request 0 finds no block, request 3 (the newest) is preempted for it, and 0's token leaves one
    # of the budget: request 1 decodes, request 2 is not reached (paused with its cache)
    s = make_scheduler("vllm-v1", KVBlockManager(12, block_size=1))
    for rid in range(4):
        s.add_request(Request(rid, 0.0, prompt_tokens=3, output_tokens=4))
    assert len(run_step(s, 0.0).items) == 4 and s.kv.free_blocks == 0
    s.max_num_batched_tokens = 2
    batch = s.schedule(1.0)
    assert [r.request_id for r in batch.evicted] == [3]
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1), (1, 1)]
    assert list(s.running) == [0, 1, 2] and [r.request_id for r in s.waiting] == [3]


def test_v1_running_first_then_chunked_admissions_within_the_budget():
    s = make_scheduler("vllm-v1", KVBlockManager(1000, block_size=1), max_num_batched_tokens=10)
    s.add_request(Request(0, 0.0, prompt_tokens=14, output_tokens=3))
    s.add_request(Request(1, 0.0, prompt_tokens=6, output_tokens=3))
    assert [(w.request.request_id, w.num_new_tokens) for w in run_step(s, 0.0).items] == [(0, 10)]
    assert [(w.request.request_id, w.num_new_tokens) for w in run_step(s, 1.0).items] == [(0, 4), (1, 6)]
    assert [(w.request.request_id, w.num_new_tokens) for w in run_step(s, 2.0).items] == [(0, 1), (1, 1)]


def test_v1_never_exceeds_its_budget_and_finishes_under_pressure():
    kv = KVBlockManager(3000, block_size=16)
    scheduler = make_scheduler("vllm-v1", kv, max_num_batched_tokens=256, max_num_seqs=64)
    result = simulate(scheduler, random_requests(2, 300, 400, 150, 30.0), AffineBatchTime(0.02, 1e-5))
    assert max(result.steps.new_tokens) <= 256
    assert sum(r.restarts for r in result.requests) > 0
    assert any(p and d for p, d in zip(result.steps.num_prefills, result.steps.num_decodes))  # mixed batches
    assert all(r.completion_s is not None for r in result.requests)


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(["vllm-v0", "vllm-v1"]),
    lengths=st.lists(st.tuples(st.integers(1, 60), st.integers(1, 30), st.floats(0, 20)), min_size=1, max_size=40),
    block_size=st.sampled_from([1, 16]),
)
def test_random_workloads_finish_exactly_within_memory(name, lengths, block_size):
    kv = KVBlockManager(160, block_size=block_size)
    requests = [Request(i, t, l, o) for i, (l, o, t) in enumerate(lengths)]
    knobs = {"max_num_batched_tokens": 32} if name == "vllm-v1" else {}
    result = simulate(make_scheduler(name, kv, **knobs), requests, AffineBatchTime(0.5, 0.01), audit=True)
    assert all(r.decode_steps_done == r.output_tokens and r.completion_s is not None for r in result.requests)
    assert result.peak_kv_tokens <= kv.capacity_tokens and kv.free_blocks == kv.num_blocks


# --- the rules settled against vLLM's sources (docs/baselines.md) ------------------------------
def _items(batch):
    return [(w.request.request_id, w.num_new_tokens) for w in batch.items]


def test_v0_decode_needs_a_free_block_even_inside_its_last_block():
    """vLLM 0.6's `can_append_slots` counts one touched block per decode: with none free the
    newest admission is preempted though the token fits in the block the decode holds."""
    s = make_scheduler("vllm-v0", KVBlockManager(16, block_size=4), watermark=0.0)
    s.add_request(Request(0, 0.0, prompt_tokens=6, output_tokens=3))
    s.add_request(Request(1, 0.0, prompt_tokens=6, output_tokens=3))
    assert _items(run_step(s, 0.0)) == [(0, 6), (1, 6)]  # 4 of 4 blocks
    batch = run_step(s, 1.0)
    assert [r.request_id for r in batch.evicted] == [1]
    assert _items(batch) == [(0, 1)]
    assert s.waiting[0].prefill_target_tokens == 7  # recompute: 6 prompt + 1 sampled token


@pytest.mark.parametrize(("prompt", "first_step"), [(8, [(0, 8)]), (9, [(0, 8)])])
def test_v1_a_prompt_exactly_the_budget_is_one_chunk(prompt, first_step):
    s = make_scheduler("vllm-v1", KVBlockManager(1000, block_size=1), max_num_batched_tokens=8)
    s.add_request(Request(0, 0.0, prompt_tokens=prompt, output_tokens=3))
    assert _items(run_step(s, 0.0)) == first_step
    # exactly the budget: the prefill is done and the next step decodes; one more: a chunk of 1
    assert _items(run_step(s, 1.0)) == [(0, 1)]
    assert s.running[0].decode_steps_done == (1 if prompt == 8 else 0)


@pytest.mark.parametrize(("reserve_full_isl", "free_blocks", "admitted"), [
    (True, 4, True), (True, 3, False), (False, 1, True), (False, 0, False)])
def test_v1_admission_needs_exactly_all_free_blocks_for_the_whole_sequence(reserve_full_isl, free_blocks, admitted):
    """A 16-token prompt in blocks of 4 is 4 blocks; the budget lets only a 4-token chunk in."""
    kv = KVBlockManager(40, block_size=4)  # 10 blocks
    s = make_scheduler("vllm-v1", kv, max_num_batched_tokens=64, reserve_full_isl=reserve_full_isl)
    # ends 1 token short of its blocks, so its decode takes no new block
    hog = Request(0, 0.0, prompt_tokens=4 * (10 - free_blocks) - 1, output_tokens=1)
    s.add_request(hog)
    run_step(s, 0.0)
    assert kv.free_blocks == free_blocks
    s.max_num_batched_tokens = 5  # the hog's decode + a 4-token chunk
    s.add_request(Request(1, 1.0, prompt_tokens=16, output_tokens=1))
    batch = run_step(s, 1.0)
    assert _items(batch) == ([(0, 1), (1, 4)] if admitted else [(0, 1)])
    assert not batch.evicted
    if admitted:  # only the chunk's block is allocated, whatever the gate checked
        assert kv.blocks_held(s.running[1]) == 1
    else:
        assert [r.request_id for r in s.waiting] == [1]
