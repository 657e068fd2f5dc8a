"""Exact boundaries of memory and token budgets: the equality case of every `≤` the policies use.

Each test puts a request exactly at a limit (all free blocks, the whole token budget, the decode
count that switches a mode) and one token or one request past it, and asserts which requests
run. Block size 1 unless the blocks are the point.
"""

from __future__ import annotations

import pytest

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager, KVCapacityError
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.schedulers.base import Batch
from sim_helpers import build_scheduler, registered_names, run_step, small_workload


def _ids(batch) -> list[tuple[int, int]]:
    return [(w.request.request_id, w.num_new_tokens) for w in batch.items]


# --- KV blocks -------------------------------------------------------------------------------
def test_a_request_needing_exactly_all_free_blocks_fits_and_one_token_more_does_not():
    kv = KVBlockManager(64, block_size=16)  # 4 blocks
    r = Request(0, 0.0, prompt_tokens=64, output_tokens=1)
    assert kv.blocks_needed(r, 64) == 4 and kv.can_grow(r, 64)
    assert not kv.can_grow(r, 65) and kv.blocks_needed(r, 65) == 5
    with pytest.raises(KVCapacityError, match="needs 5 blocks, 4 free of 4"):
        kv.grow(r, 65)
    assert kv.free_blocks == 4  # a refused grow takes nothing
    kv.grow(r, 64)
    assert kv.free_blocks == 0 and kv.blocks_held(r) == 4 and kv.used_tokens == 64


def test_blocks_already_held_count_towards_the_need():
    kv = KVBlockManager(64, block_size=16)
    r = Request(0, 0.0, prompt_tokens=40, output_tokens=1)
    kv.grow(r, 17)  # 2 blocks held for 17 tokens
    assert kv.blocks_held(r) == 2 and kv.free_blocks == 2
    assert kv.blocks_needed(r, 64) == 2 and kv.can_grow(r, 64)  # 4 blocks in all, 2 held
    assert kv.blocks_needed(r, 32) == 0 and kv.can_grow(r, 32)
    kv.grow(r, 32)  # within the held blocks: nothing changes
    assert kv.free_blocks == 2
    kv.release(r)
    assert kv.free_blocks == 4 and kv.blocks_held(r) == 0


def test_try_reserve_at_exactly_the_free_blocks():
    s = make_scheduler("fcfs", KVBlockManager(32, block_size=16))
    r = Request(0, 0.0, prompt_tokens=32, output_tokens=1)
    batch = Batch()
    assert not s.try_reserve(batch, r, 33)
    assert batch.items == [] and s.kv.free_blocks == 2
    assert s.try_reserve(batch, r, 32)
    assert _ids(batch) == [(0, 32)] and s.kv.free_blocks == 0
    assert batch.shape().new_tokens == 32 and batch.shape().num_prefills == 1


# --- token budgets -------------------------------------------------------------------------------
def test_v0_longest_prefill_exactly_the_fixed_budget_is_accepted():
    # longest prefill = l + l' (a recompute after the last-but-one decode prefills l + (l' − 1) + 1)
    s = make_scheduler("vllm-v0", KVBlockManager(1000, block_size=1), max_num_batched_tokens=8)
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=3))  # 5 + 3 = 8
    with pytest.raises(InputError, match="longest prefill"):
        s.add_request(Request(1, 0.0, prompt_tokens=5, output_tokens=4))  # 9 > 8


@pytest.mark.parametrize(("second_prompt", "admitted"), [(3, [(0, 5), (1, 3)]), (4, [(0, 5)])])
def test_v0_prefills_fill_the_budget_exactly(second_prompt, admitted):
    s = make_scheduler("vllm-v0", KVBlockManager(1000, block_size=1), max_num_batched_tokens=8, watermark=0.0)
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=1))
    s.add_request(Request(1, 0.0, prompt_tokens=second_prompt, output_tokens=1))
    assert _ids(s.schedule(0.0)) == admitted


@pytest.mark.parametrize(("prompt", "chunks"), [(8, [8]), (9, [8, 1])])
def test_v1_a_prompt_exactly_the_budget_is_one_chunk(prompt, chunks):
    s = make_scheduler("vllm-v1", KVBlockManager(1000, block_size=1), max_num_batched_tokens=8)
    s.add_request(Request(0, 0.0, prompt_tokens=prompt, output_tokens=2))
    got = [_ids(run_step(s, float(t)))[0][1] for t in range(len(chunks))]
    assert got == chunks


def test_v1_admission_takes_exactly_the_budget_left_after_the_decodes():
    s = make_scheduler("vllm-v1", KVBlockManager(1000, block_size=1), max_num_batched_tokens=8)
    s.add_request(Request(0, 0.0, prompt_tokens=3, output_tokens=5))
    run_step(s, 0.0)
    s.add_request(Request(1, 1.0, prompt_tokens=7, output_tokens=1))  # 1 decode + 7 = 8
    s.add_request(Request(2, 1.0, prompt_tokens=1, output_tokens=1))  # no budget left
    assert _ids(s.schedule(1.0)) == [(0, 1), (1, 7)]


def test_sarathi_a_prompt_exactly_the_chunk_takes_the_whole_budget():
    s = make_scheduler("sarathi", KVBlockManager(1000, block_size=1), chunk_size=8, watermark=0.0)
    s.add_request(Request(0, 0.0, prompt_tokens=8, output_tokens=2))
    s.add_request(Request(1, 0.0, prompt_tokens=1, output_tokens=2))
    assert _ids(s.schedule(0.0)) == [(0, 8)]


# --- worst-case reservations and projections --------------------------------------------------------
@pytest.mark.parametrize(("second_output", "admitted"), [(5, [0, 1]), (6, [0])])
def test_orca_admits_a_worst_case_exactly_the_free_blocks(second_output, admitted):
    s = make_scheduler("orca", KVBlockManager(20, block_size=1))
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=5))  # reserves 10
    s.add_request(Request(1, 0.0, prompt_tokens=5, output_tokens=second_output))  # 10 left
    assert [rid for rid, _ in _ids(s.schedule(0.0))] == admitted


def test_orca_refuses_a_worst_case_one_token_over_the_capacity():
    s = make_scheduler("orca", KVBlockManager(20, block_size=1))
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=15))  # exactly C
    with pytest.raises(InputError, match="needs 21 KV tokens"):
        s.add_request(Request(1, 0.0, prompt_tokens=5, output_tokens=16))


@pytest.mark.parametrize(("second_prompt", "admitted"), [(5, [0, 1]), (6, [0])])
def test_mc_sf_admits_when_the_projected_peak_is_exactly_the_capacity(second_prompt, admitted):
    # both end at step 5; at that instant request 0 holds 5 + 5 = 10 tokens, request 1 p + 5
    s = make_scheduler("mc-sf", KVBlockManager(20, block_size=1))
    s.add_request(Request(0, 0.0, prompt_tokens=5, output_tokens=5))
    s.add_request(Request(1, 0.0, prompt_tokens=second_prompt, output_tokens=5))
    assert [rid for rid, _ in _ids(s.schedule(0.0))] == admitted


# --- mode switches ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("decoding", "mode"), [(2, "d"), (1, "p")])
def test_rad_decodes_once_exactly_b_col_requests_decode(decoding, mode):
    s = make_scheduler("rad", KVBlockManager(1000, block_size=1), b_col=2, tile_tokens=8)
    for rid in range(decoding):
        s.add_request(Request(rid, 0.0, prompt_tokens=4, output_tokens=5))
        run_step(s, float(rid))  # one tile prefills it whole
    s.add_request(Request(9, 5.0, prompt_tokens=4, output_tokens=5))
    batch = s.schedule(5.0)
    kinds = {"p" if w.is_prefill else "d" for w in batch.items}
    assert kinds == {mode}
    assert len(s.resident) == decoding


def test_v1_decodes_beyond_the_budget_wait_with_their_cache():
    s = make_scheduler("vllm-v1", KVBlockManager(1000, block_size=1), max_num_batched_tokens=8)
    for rid in range(3):
        s.add_request(Request(rid, 0.0, prompt_tokens=1, output_tokens=5))
    run_step(s, 0.0)  # three prefills of one token
    s.max_num_batched_tokens = 2  # now fewer tokens than decoding requests
    batch = run_step(s, 1.0)
    assert _ids(batch) == [(0, 1), (1, 1)]
    assert s.kv.blocks_held(s.running[2]) == 1 and list(s.running) == [0, 1, 2]


# --- Batch bookkeeping and the first-scheduled stamp --------------------------------------------------
def test_batch_add_keeps_the_shape_of_prefills_and_decodes():
    prefill = Request(0, 0.0, prompt_tokens=10, output_tokens=3)
    decode = Request(1, 0.0, prompt_tokens=4, output_tokens=3)
    decode.cached_tokens = 4  # prompt cached: its next step is a decode
    from runtime.schedulers.base import ScheduledWork

    batch = Batch()
    batch.add(ScheduledWork(prefill, 6, 0))
    batch.add(ScheduledWork(decode, 1, 4))
    shape = batch.shape()
    assert (shape.new_tokens, shape.kv_tokens, shape.num_decodes, shape.num_prefills) == (7, 6 + 5, 1, 1)
    assert shape == batch._recount()


def test_batch_shape_recounts_after_work_added_through_add_is_removed_directly():
    # `add` counts what it appends, so shape() knows when `items` was changed directly (allowed:
    # shape() then recounts) even where the count of items happens to match again. Work added by
    # `add` and then dropped from `items`: emptied, the empty shape, not the 7 new tokens still in
    # the running totals; the prefill dropped beside a decode `reserve` added, that decode alone
    from fluid.batch_time import BatchShape
    from runtime.schedulers.base import ScheduledWork

    prefill = Request(0, 0.0, prompt_tokens=10, output_tokens=3)
    decode = Request(1, 0.0, prompt_tokens=4, output_tokens=3)
    decode.cached_tokens = 4
    batch = Batch()
    batch.add(ScheduledWork(prefill, 6, 0))
    batch.add(ScheduledWork(decode, 1, 4))
    batch.items.clear()
    assert batch.shape() == BatchShape(0, 0, 0, 0, 0, 0)
    other = Request(2, 0.0, prompt_tokens=4, output_tokens=3)
    other.cached_tokens = 4
    s = make_scheduler("fcfs", KVBlockManager(100, block_size=1))
    batch = Batch()
    batch.add(ScheduledWork(prefill, 6, 0))
    s.reserve(batch, other, 1)
    del batch.items[0]  # the prefill goes; request 2's decode (4 cached + 1 new) stays
    assert batch.shape() == BatchShape(1, 5, 1, 0, 0, 1)  # context 4 alone: ⌈5/64⌉ = 1 key tile


def test_first_scheduled_is_the_start_of_the_first_step_only():
    s = make_scheduler("fcfs", KVBlockManager(100, block_size=1))
    r = Request(0, 0.0, prompt_tokens=2, output_tokens=3)
    s.add_request(r)
    for t in (0.5, 2.0, 3.0, 4.0):  # the prefill, then 3 decodes
        batch = s.schedule(t)
        s.complete_step(batch, t, t + 0.5)
    assert r.first_scheduled_s == 0.5 and r.finished


# --- WAIT's progress guarantee at exactly the free blocks -------------------------------------------
@pytest.mark.parametrize(("prompt", "capacity"), [(5, 10), (6, 12), (4, 10)])
def test_wait_admits_the_largest_fitting_prefix_of_a_deferred_cohort(prompt, capacity):
    # a cohort of 3 prompts does not fit whole and nothing else runs, so the longest prefix that
    # fits is admitted: two prompts, exactly all the free blocks for (5, C = 10) and (6, C = 12)
    from runtime.policy_file import RuntimeClass, RuntimePolicy

    policy = RuntimePolicy("wait", "cohort", 0.0, classes=(RuntimeClass("a", prompt, 2, 3),))
    s = make_scheduler("wait", KVBlockManager(capacity, block_size=1), policy=policy)
    for rid in range(3):
        s.add_request(Request(rid, 0.0, prompt, 2, "a"))
    s.on_arrivals_ended()
    batch = s.schedule(0.0)
    assert _ids(batch) == [(0, prompt), (1, prompt)]
    assert s.stats["partial_cohorts"] == 1 and s.stats["admissions"] == 1
    # nothing was resident, so nothing was blocked: no decode counts as paused, nobody was evicted
    assert s.stats["decodes_paused"] == 0 and s.stats["evictions"] == 0 and s.stats["admissions_deferred"] == 1


def test_wait_prefill_chunk_of_one_token_is_allowed_and_zero_is_not():
    from runtime.policy_file import RuntimeClass, RuntimePolicy

    policy = RuntimePolicy("wait", "cohort", 0.0, classes=(RuntimeClass("a", 3, 2, 1),))
    s = make_scheduler("wait", KVBlockManager(100, block_size=1), policy=policy, prefill_chunk_tokens=1)
    s.add_request(Request(0, 0.0, 3, 2, "a"))
    assert _ids(s.schedule(0.0)) == [(0, 1)]
    with pytest.raises(InputError, match="positive integer"):
        make_scheduler("wait", KVBlockManager(100, block_size=1), policy=policy, prefill_chunk_tokens=0)


def test_v0_default_budget_is_2048_tokens_for_short_sequences():
    # vLLM v0: max(max_model_len, 2048); sequences shorter than 2048 leave it at 2048, so two
    # prompts of 1024 fill one step exactly and a third prompt of one token waits
    s = make_scheduler("vllm-v0", KVBlockManager(10_000, block_size=1), watermark=0.0)
    for rid, prompt in ((0, 1024), (1, 1024), (2, 1)):
        s.add_request(Request(rid, 0.0, prompt_tokens=prompt, output_tokens=4))
    assert s.max_num_batched_tokens == 2048
    assert _ids(s.schedule(0.0)) == [(0, 1024), (1, 1024)]


@pytest.mark.parametrize("name", [n for n in registered_names() if not n.endswith(("-capped", "-adaptive"))])
def test_one_request_left_is_unfinished_work_for_every_policy(name):
    w = small_workload([(4, 3)], [1.0], capacity_tokens=1000)
    s = build_scheduler(name, w, block_size=1)
    assert not s.has_unfinished()
    r = Request(0, 0.0, 4, 3, "t0")
    s.add_request(r)
    assert s.has_unfinished()  # exactly one request: still work to do
    s.on_arrivals_ended()
    t = 0.0
    while s.has_unfinished() and t < 20:
        batch = s.schedule(t)
        s.complete_step(batch, t, t + 1.0)
        t += 1.0
    assert r.finished and not s.has_unfinished()


def test_reserve_decodes_keeps_the_batch_shape():
    s = make_scheduler("fcfs", KVBlockManager(100, block_size=1))
    reqs = [Request(rid, 0.0, prompt_tokens=3 + rid, output_tokens=4) for rid in range(3)]
    for r in reqs:
        r.cached_tokens = r.prompt_tokens  # decoding
    batch = Batch()
    assert s.reserve_decodes(batch, reqs) == 3
    shape = batch.shape()
    assert (shape.new_tokens, shape.kv_tokens, shape.num_decodes) == (3, 4 + 5 + 6, 3)
    assert shape == batch._recount()


def test_fitting_alone_counts_the_blocks_admission_keeps_free():
    kv = KVBlockManager(64, block_size=16)  # 4 blocks
    assert kv.fits_alone(64) and not kv.fits_alone(65)
    assert kv.fits_alone(48, kept_free_blocks=1) and not kv.fits_alone(49, kept_free_blocks=1)  # 3 usable blocks
    assert kv.fits_alone(16, kept_free_blocks=3) and not kv.fits_alone(17, kept_free_blocks=3)


def test_a_cache_of_exactly_one_block_is_accepted_and_less_is_refused():
    assert KVBlockManager(16, block_size=16).num_blocks == 1
    with pytest.raises(ValueError, match="16"):
        KVBlockManager(15, block_size=16)
