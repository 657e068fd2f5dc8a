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
from sim_helpers import run_step


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
