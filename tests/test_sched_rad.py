"""RAD (arXiv 2508.01002): decode or prefill mode, tile-sized chunks of the oldest prompt, LIFO
preemption by recompute."""

from __future__ import annotations

import pytest

from fluid.batch_time import AffineBatchTime
from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.sim import simulate


def _rad(capacity=1000, block=1, **knobs):
    return make_scheduler("rad", KVBlockManager(capacity, block), **knobs)


def _step(s, now_s):
    """One step; (kind of each item: 'p<chunk>' or 'd', request ids)."""
    batch = s.schedule(now_s)
    kinds = [f"p{w.num_new_tokens}" if w.is_prefill else "d" for w in batch.items]
    ids = [w.request.request_id for w in batch.items]
    s.complete_step(batch, now_s, now_s + 1.0)
    return kinds, ids


def test_prefill_mode_runs_one_tile_of_the_oldest_prompt():
    s = _rad(tile_tokens=8, b_col=2)
    s.add_request(Request(0, 0.0, 20, 5))
    s.add_request(Request(1, 0.0, 3, 5))
    assert _step(s, 0.0) == (["p8"], [0])
    assert _step(s, 1.0) == (["p8"], [0])
    assert _step(s, 2.0) == (["p4"], [0])  # the rest of prompt 0 before prompt 1 starts
    assert _step(s, 3.0) == (["p3"], [1])  # 1 decoding < b_col = 2 and a prompt waits: prefill mode


def test_decode_mode_once_b_col_requests_decode():
    s = _rad(tile_tokens=8, b_col=2)
    for i in range(3):
        s.add_request(Request(i, 0.0, 4, 5))
    _step(s, 0.0)
    _step(s, 1.0)
    # two decode now (= b_col) while prompt 2 waits: decode mode, one token each
    assert _step(s, 2.0) == (["d", "d"], [0, 1])
    assert s.stats["decode_steps"] == 1 and s.stats["prefill_steps"] == 2


def test_decode_mode_when_no_prompt_waits():
    s = _rad(tile_tokens=8, b_col=4)
    s.add_request(Request(0, 0.0, 4, 2))
    _step(s, 0.0)
    assert _step(s, 1.0) == (["d"], [0])


def test_default_b_col_is_one_tile():
    assert _rad(tile_tokens=64).b_col == 64


def test_seat_cap_forces_decode_mode():
    s = _rad(tile_tokens=8, b_col=10, max_num_seqs=1)
    s.add_request(Request(0, 0.0, 4, 3))
    s.add_request(Request(1, 0.0, 4, 3))
    _step(s, 0.0)
    assert _step(s, 1.0) == (["d"], [0])


def test_lifo_preemption_when_decodes_run_out_of_memory():
    # C = 10 tokens in blocks of 1: two prompts of 4 decode to 5 each, then cannot both grow
    s = _rad(capacity=10, tile_tokens=8, b_col=2)
    reqs = [Request(0, 0.0, 4, 4), Request(1, 0.0, 4, 4)]
    for r in reqs:
        s.add_request(r)
    _step(s, 0.0)
    _step(s, 1.0)
    _step(s, 2.0)  # decode: 5 + 5 = 10 tokens
    kinds, ids = _step(s, 3.0)
    assert (kinds, ids) == (["d"], [0])  # the newest (1) was preempted so the oldest can grow
    assert reqs[1].restarts == 1 and s.waiting[0] is reqs[1]
    assert s.stats["preemptions"] == 1


def test_simulation_completes_under_memory_pressure():
    reqs = [Request(i, 0.01 * i, 10 + i % 7, 3 + i % 11) for i in range(80)]
    s = _rad(capacity=96, block=16, tile_tokens=16, b_col=4)
    result = simulate(s, reqs, AffineBatchTime(0.01, 1e-5), audit=True)
    assert all(r.finished and r.decode_steps_done == r.output_tokens for r in reqs)
    assert result.peak_kv_tokens <= 96


def test_bad_inputs():
    with pytest.raises(InputError, match="b_col"):
        _rad(b_col=0)
    with pytest.raises(InputError, match="tile_tokens"):
        _rad(tile_tokens=1.5)
    with pytest.raises(InputError, match="needs 12 KV tokens"):
        _rad(capacity=8).add_request(Request(0, 0.0, 10, 2))


@pytest.mark.parametrize(("capacity", "refused"), [(13, True), (14, False)])
def test_refuses_a_request_that_fits_its_prompt_but_not_its_whole_sequence(capacity, refused):
    """C between one prompt (10 + its first token) and one whole request (10 + 4): refused on
    arrival with the capacity named, where it used to end in a deadlock; exactly l + l' runs."""
    s = _rad(capacity=capacity)
    if refused:
        with pytest.raises(InputError, match=r"needs 14 KV tokens at once .* capacity is 13 tokens") as err:
            s.add_request(Request(0, 0.0, 10, 4))
        assert err.value.field == "kv_capacity_tokens"
        assert not s.has_unfinished()
    else:
        result = simulate(s, [Request(0, 0.0, 10, 4)], AffineBatchTime(0.01, 1e-5), audit=True)
        assert result.requests[0].decode_steps_done == 4 and result.peak_kv_tokens <= 14


def test_prefill_chunk_is_a_knob_apart_from_the_tile():
    s = _rad(tile_tokens=8, b_col=2, prefill_chunk_tokens=5)
    s.add_request(Request(0, 0.0, 12, 3))
    assert [_step(s, float(t))[0] for t in range(3)] == [["p5"], ["p5"], ["p2"]]
    with pytest.raises(InputError, match="prefill_chunk_tokens"):
        _rad(prefill_chunk_tokens=0)


def test_after_preempting_the_newest_the_decode_pass_resumes_at_the_request_that_was_short():
    # C = 13 tokens in blocks of 1: three prompts of 4 hold 12, so at the first decode step 0 grows
    # to 5 (the last free block), 1 is short, the newest (2) goes, and the pass resumes at 1:
    # 0 and 1 decode once each (0 is not reserved twice)
    s = _rad(capacity=13, tile_tokens=8, b_col=3)
    reqs = [Request(i, 0.0, 4, 3) for i in range(3)]
    for r in reqs:
        s.add_request(r)
    for t in range(3):
        assert _step(s, float(t)) == (["p4"], [t])
    batch = s.schedule(3.0)
    assert [r.request_id for r in batch.evicted] == [2]
    assert [(w.request.request_id, w.num_new_tokens, w.is_prefill) for w in batch.items] == [(0, 1, False), (1, 1, False)]
    assert batch.shape().new_tokens == 2 and batch.shape().kv_tokens == 10
