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
