"""The bulk reservation helpers of the schedulers' hot paths agree with one-by-one `try_reserve`."""

from __future__ import annotations

import pytest

from runtime.kv_blocks import KVBlockManager, KVCapacityError
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler


class _Probe(Scheduler):
    name = "probe"

    def add_request(self, request): ...
    def schedule(self, now_s): ...
    def has_unfinished(self): ...


def _decoding(rid: int, prompt: int) -> Request:
    r = Request(rid, 0.0, prompt, 10)
    r.cached_tokens = prompt
    return r


def _grown(kv, requests):
    for r in requests:
        kv.grow(r, 0)
    return requests


def test_reserve_decodes_stops_at_the_first_missing_block_and_matches_try_reserve():
    # 4 blocks of 16: three requests hold one full block each; one block is free
    kv = KVBlockManager(64, 16)
    sched = _Probe(kv)
    reqs = _grown(kv, [_decoding(0, 16), _decoding(1, 16), _decoding(2, 16)])
    batch = Batch()
    assert sched.reserve_decodes(batch, reqs) == 1  # the second finds no free block
    assert [w.request.request_id for w in batch.items] == [0]
    assert kv.free_blocks == 0
    assert batch.shape() == batch._recount()
    assert batch.shape().num_decodes == 1 and batch.shape().kv_tokens == 17


def test_reserve_decodes_stops_at_a_prefill_and_honours_start_and_stop():
    kv = KVBlockManager(1024, 16)
    sched = _Probe(kv)
    reqs = _grown(kv, [_decoding(0, 20), _decoding(1, 20), Request(2, 0.0, 30, 5), _decoding(3, 20)])
    batch = Batch()
    assert sched.reserve_decodes(batch, reqs) == 2  # request 2 still prefills: the caller sizes its chunk
    assert sched.reserve_decodes(batch, reqs, 3) == 4
    assert sched.reserve_decodes(batch, reqs, 0, 0) == 0
    assert [w.request.request_id for w in batch.items] == [0, 1, 3]
    assert batch.shape() == batch._recount() and batch.shape().num_prefills == 0


def test_reserve_all_decodes_raises_when_the_admission_left_no_block():
    kv = KVBlockManager(32, 16)
    sched = _Probe(kv)
    reqs = _grown(kv, [_decoding(0, 16), _decoding(1, 16)])
    with pytest.raises(KVCapacityError):
        sched.reserve_all_decodes(Batch(), reqs)


def test_needs_free_block_stops_after_the_decode_that_took_the_last_block_even_if_the_next_needs_none():
    # 4 blocks of 16: request 0 sits at a block boundary, request 1 has room in its block (20 of 32)
    kv = KVBlockManager(64, 16)
    sched = _Probe(kv)
    reqs = _grown(kv, [_decoding(0, 16), _decoding(1, 20)])  # 1 + 2 blocks held, 1 free
    batch = Batch()
    assert sched.reserve_decodes(batch, reqs, needs_free_block=True) == 1  # vLLM 0.6: no free block left for 1
    assert [w.request.request_id for w in batch.items] == [0] and kv.free_blocks == 0
    assert sched.reserve_decodes(batch, reqs, 1, needs_free_block=True) == 1  # still none free: stops at once
    assert sched.reserve_decodes(batch, reqs, 1) == 2  # without the rule request 1 needs no block and runs
    assert [w.request.request_id for w in batch.items] == [0, 1]
    assert batch.shape() == batch._recount() and batch.shape().kv_tokens == 17 + 21


def test_try_grow_takes_exactly_the_free_blocks_and_one_more_changes_nothing():
    kv = KVBlockManager(64, 16, track_block_ids=True)
    r = Request(0, 0.0, 64, 5)
    assert not kv.try_grow(r, 65) and kv.free_blocks == 4 and kv.blocks_held(r) == 0  # 5 blocks: one short
    assert kv.try_grow(r, 64) and kv.free_blocks == 0 and kv.block_table(r) == [0, 1, 2, 3]  # exactly full
    with pytest.raises(KVCapacityError, match="request 0 needs 1 blocks, 0 free of 4"):
        kv.grow(r, 65)


def test_grow_one_block_gives_the_next_free_block_id():
    kv = KVBlockManager(48, 16, track_block_ids=True)
    r = _decoding(7, 16)
    kv.grow(r, 0)
    kv.grow_one_block(7, kv.blocks_held(r))
    assert kv.blocks_held(r) == 2 and kv.free_blocks == 1 and kv.block_table(r) == [0, 1]
    r.cached_tokens = 32
    kv.audit([r])


def test_reserve_all_decodes_gives_a_prefill_among_them_one_token_and_goes_on_after_it():
    # Orca / MC-SF running lists can hold a request whose cache is still short of its target (one
    # restarted after an eviction): it gets its one token and the decodes after it are served once
    kv = KVBlockManager(1024, 16)
    sched = _Probe(kv)
    reqs = _grown(kv, [_decoding(0, 20), Request(1, 0.0, 30, 5), _decoding(2, 20), _decoding(3, 20)])
    batch = Batch()
    sched.reserve_all_decodes(batch, reqs)
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert batch.shape() == batch._recount() and batch.shape().num_prefills == 1
