"""SLAI as the authors' code runs it (github agrimUT/SLAI, slai_scheduler.py): LST computed once
per served decode with the cumulative mean batch time, the dynamic offset on reserved blocks,
(LST, arrival) order, batch order under the token budget, shortest-prompt-first, tiers only under
`user_priority`, round-robin paused prefills, whole-prompt reservation with a watermark and a
seat cap, preemption of the last paused prefill else the decode itself, and clean refusals."""

from __future__ import annotations

import pytest

from fluid.batch_time import AffineBatchTime
from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.sim import simulate


def _slai(capacity=1000, block=1, **knobs):
    return make_scheduler("slai", KVBlockManager(capacity, block), **knobs)


def _step(s, now_s, dt_s=1.0):
    """One step; the items as (request id, tokens, 'p' or 'd') in batch order."""
    batch = s.schedule(now_s)
    items = [(w.request.request_id, w.num_new_tokens, "p" if w.is_prefill else "d") for w in batch.items]
    s.complete_step(batch, now_s, now_s + dt_s)
    return items


def test_lst_is_fixed_when_the_decode_is_served_with_the_cumulative_mean():
    s = _slai(default_tbt_slo_s=0.2)
    r = Request(0, 0.0, 4, 5)
    s.add_request(r)
    _step(s, 0.0, dt_s=0.01)  # prefill ends at 0.01: mean 0.01
    assert s.last_schedulable_time_s(r) == pytest.approx(0.01 + 0.2 - 5 * 0.01)
    _step(s, 0.01, dt_s=0.03)  # decode ends at 0.04: mean (0.01 + 0.03) / 2
    assert s.mean_batch_time_s == pytest.approx(0.02)
    assert s.last_schedulable_time_s(r) == pytest.approx(0.04 + 0.2 - 5 * 0.02)
    for start in (0.04, 1.04, 2.04):  # the mean is over every batch, not a window
        _step(s, start, dt_s=1.0)
    assert s.mean_batch_time_s == pytest.approx((0.01 + 0.03 + 3.0) / 5)


def test_a_queued_decode_keeps_the_lst_it_was_given():
    """The official code computes the LST once; a decode left out keeps it though Θ·mean changes."""
    s = _slai(token_budget=3, max_decodes=1, offset=1.0, default_tbt_slo_s=10.0)
    for i in range(2):
        s.add_request(Request(i, 0.0, 1, 9))
    _step(s, 0.0, dt_s=1.0)  # both prefilled at 1.0: LST 1 + 10 − 1·1 = 10 for both
    assert s.last_schedulable_time_s(s.resident[1]) == pytest.approx(10.0)
    assert _step(s, 1.0, dt_s=5.0) == [(0, 1, "d")]  # one decode a batch; tie on LST: arrival, then id
    assert s.last_schedulable_time_s(s.resident[1]) == pytest.approx(10.0)  # unchanged, mean is now 3
    assert s.last_schedulable_time_s(s.resident[0]) == pytest.approx(6.0 + 10.0 - 3.0)


def test_dynamic_offset_reads_the_blocks_reserved_for_whole_prompts():
    s = _slai(capacity=100, token_budget=10, watermark=0.0)
    s.add_request(Request(0, 0.0, 96, 3))
    batch = s.schedule(0.0)
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 10)]
    assert s.kv.used_blocks == 96  # the whole prompt is reserved at admission
    assert s.theta() == 10  # 96 % in use: the high offset, though only 10 tokens are cached
    assert _slai(capacity=100, offset=2.5).theta() == 2.5


@pytest.mark.parametrize(("prompt", "theta"), [(95, 5), (96, 10)])
def test_the_offset_switches_exactly_at_96_percent(prompt, theta):
    s = _slai(capacity=100, token_budget=200, watermark=0.0)
    s.add_request(Request(0, 0.0, prompt, 3))
    s.schedule(0.0)
    assert s.theta() == theta


def test_batch_order_urgent_decodes_then_paused_prefills_then_new_prompts_then_the_rest():
    s = _slai(token_budget=6, offset=0.0, default_tbt_slo_s=1.0)
    s.add_request(Request(0, 0.0, 2, 9))
    s.add_request(Request(1, 0.0, 3, 9))
    assert _step(s, 0.0) == [(0, 2, "p"), (1, 3, "p")]  # shortest prompt first
    s.add_request(Request(2, 1.0, 10, 9))
    # LST of 0 and 1 = 1.0 + 1.0 = 2.0 > now: the new prompt takes the whole budget, they wait
    assert _step(s, 1.0) == [(2, 6, "p")]
    s.add_request(Request(3, 2.0, 1, 9))
    # 0 and 1 are past their LST: first; then the paused prefill (4 left); the budget is spent
    assert _step(s, 2.0) == [(0, 1, "d"), (1, 1, "d"), (2, 4, "p")]
    # nothing urgent (LSTs 4.0, 4.0, 4.0): new prompt 3 first, then the other decodes by (LST, arrival)
    assert _step(s, 3.0) == [(3, 1, "p"), (0, 1, "d"), (1, 1, "d"), (2, 1, "d")]


def test_paused_prefills_take_turns():
    s = _slai(token_budget=4, order="fcfs")
    s.add_request(Request(0, 0.0, 10, 3))
    s.add_request(Request(1, 0.0, 10, 3))
    assert _step(s, 0.0) == [(0, 4, "p")]
    assert _step(s, 1.0) == [(0, 4, "p")]  # the only paused prefill; 1 gets no budget
    s2 = _slai(token_budget=6, order="fcfs")
    for i in range(2):
        s2.add_request(Request(i, 0.0, 10, 3))
    assert _step(s2, 0.0) == [(0, 6, "p")]
    assert _step(s2, 1.0) == [(0, 4, "p"), (1, 2, "p")]
    assert _step(s2, 2.0) == [(0, 1, "d"), (1, 5, "p")]  # 0's prefill ended; 1 continues


@pytest.mark.parametrize(("order", "first"), [("spf", 1), ("fcfs", 0)])
def test_new_prompt_order(order, first):
    s = _slai(token_budget=5, order=order)
    s.add_request(Request(0, 0.0, 5, 3))
    s.add_request(Request(1, 0.5, 2, 3))
    assert _step(s, 1.0)[0][0] == first


@pytest.mark.parametrize(("user_priority", "first"), [(False, 0), (True, 1)])
def test_tier_goes_first_only_under_user_priority(user_priority, first):
    s = _slai(token_budget=5, user_priority=user_priority)
    s.add_request(Request(0, 0.0, 1, 3, tier=1))
    s.add_request(Request(1, 0.0, 5, 3, tier=0))
    assert _step(s, 0.0)[0][0] == first


def test_at_most_max_decodes_per_batch_and_the_rest_keep_their_cache():
    s = _slai(max_decodes=2, token_budget=100)
    for i in range(3):
        s.add_request(Request(i, 0.0, 2, 5))
    _step(s, 0.0)
    items = _step(s, 1.0)
    assert [(i, k) for i, _, k in items] == [(0, "d"), (1, "d")]
    assert s.kv.used_tokens == 2 + 2 * 3  # the third waits with its 2 cached tokens


def test_seat_cap_counts_requests_holding_memory():
    s = _slai(max_num_seqs=2, token_budget=100)
    for i in range(3):
        s.add_request(Request(i, 0.0, 2, 5))
    assert [i for i, _, _ in _step(s, 0.0)] == [0, 1]


@pytest.mark.parametrize(("second_prompt", "admitted"), [(98, True), (99, False)])
def test_admission_keeps_the_watermark_free(second_prompt, admitted):
    s = _slai(capacity=200, token_budget=500, order="fcfs")  # watermark int(0.01 · 200) = 2 blocks
    s.add_request(Request(0, 0.0, 100, 3))
    s.add_request(Request(1, 0.0, second_prompt, 3))
    batch = s.schedule(0.0)  # request 1 is admitted iff 200 − 100 − prompt ≥ 2
    assert [w.request.request_id for w in batch.items] == ([0, 1] if admitted else [0])


def test_memory_pressure_preempts_the_last_paused_prefill_then_the_decode_itself():
    s = _slai(capacity=10, token_budget=4, watermark=0.0, order="fcfs", offset=0.0, default_tbt_slo_s=0.5)
    s.add_request(Request(0, 0.0, 2, 3))
    s.add_request(Request(1, 0.0, 3, 3))
    s.add_request(Request(2, 0.0, 5, 3))
    assert _step(s, 0.0) == [(0, 2, "p"), (1, 2, "p")]  # all of 1's 3 blocks reserved: 5 in use
    assert _step(s, 1.0) == [(1, 1, "p"), (2, 3, "p")]  # 2 reserves its 5 blocks: memory full
    # at 2.0 request 0 is urgent (LST 1.0 + 0.5) and finds no free block: the paused prefill
    # added last (2) is preempted; 1 (LST 2.5) then runs as a non-urgent decode
    batch = s.schedule(2.0)
    assert [r.request_id for r in batch.evicted] == [2]
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1), (1, 1)]
    assert s.waiting[0].request_id == 2 and s.waiting[0].prefill_target_tokens == 5  # it had sampled nothing


def test_a_decode_with_no_free_block_and_no_paused_prefill_preempts_itself():
    s = _slai(capacity=16, block=4, token_budget=12, watermark=0.0, default_tbt_slo_s=100.0)
    s.add_request(Request(0, 0.0, 6, 3))
    s.add_request(Request(1, 0.0, 6, 3))
    assert _step(s, 0.0) == [(0, 6, "p"), (1, 6, "p")]  # 2 blocks each: 4 of 4 in use
    batch = s.schedule(1.0)
    # the first decode popped finds no free block, though its 7th token fits in its 2nd block
    assert [r.request_id for r in batch.evicted] == [0]
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(1, 1)]
    assert s.waiting[0].prefill_target_tokens == 7  # its recompute: prompt + the sampled token


def test_everything_completes_under_memory_pressure():
    reqs = [Request(i, 0.005 * i, 20 + (i * 13) % 40, 5 + (i * 7) % 30, tier=i % 2) for i in range(120)]
    s = _slai(capacity=256, block=16)
    result = simulate(s, reqs, AffineBatchTime(0.01, 1e-5), audit=True)
    assert all(r.finished and r.decode_steps_done == r.output_tokens for r in reqs)
    assert result.peak_kv_tokens <= 256
    assert s.stats["preemptions"] > 0


def test_tight_slo_requests_are_served_on_time_under_light_load():
    reqs = [Request(i, 0.02 * i, 30, 20, tbt_slo_s=0.1 if i % 2 else 0.5) for i in range(40)]
    s = _slai(capacity=5000, block=16)
    simulate(s, reqs, AffineBatchTime(0.01, 1e-6))
    gaps = [b - a for r in reqs if r.tbt_slo_s == 0.1 for a, b in zip(r.token_times_s, r.token_times_s[1:])]
    assert max(gaps) <= 0.1


@pytest.mark.parametrize(("capacity", "refused"), [(13, True), (14, False)])
def test_refuses_a_request_that_fits_its_prompt_but_not_its_whole_sequence(capacity, refused):
    """C between one prompt (10) and one whole request (10 + 4): refused on arrival, not run forever."""
    s = _slai(capacity=capacity, watermark=0.0)
    r = Request(0, 0.0, 10, 4)
    if refused:
        with pytest.raises(InputError, match="needs 14 KV tokens at once") as err:
            s.add_request(r)
        assert err.value.field == "kv_capacity_tokens"
        assert not s.has_unfinished()
    else:
        s.add_request(r)
        result = simulate(s, [Request(1, 0.0, 10, 4)], AffineBatchTime(0.01, 1e-5), audit=True)
        assert result.requests[0].finished


def test_bad_knobs():
    with pytest.raises(InputError, match="order"):
        _slai(order="lifo")
    with pytest.raises(InputError, match="token_budget"):
        _slai(token_budget=0)
    with pytest.raises(InputError, match="offset"):
        _slai(offset=-1)
    with pytest.raises(InputError, match="high_kv_use_fraction"):
        _slai(high_kv_use_fraction=1.5)
    with pytest.raises(InputError, match="user_priority"):
        _slai(user_priority="yes")
    with pytest.raises(InputError, match="watermark"):
        _slai(watermark=1.0)


def test_knob_boundaries_zero_and_one_are_on_the_side_each_rule_says():
    # the KV-use threshold is a fraction in (0, 1]: 0 is refused, 1 (only a full cache is high) taken
    with pytest.raises(InputError, match="high_kv_use_fraction"):
        _slai(high_kv_use_fraction=0.0)
    assert _slai(high_kv_use_fraction=1.0).high_kv_use_fraction == 1.0
    # offsets may be 0; the SLO, the budget and the decode cap must be positive
    s = _slai(offset=0.0, offset_low=0.0, offset_high=0.0, token_budget=1, max_decodes=1, max_num_seqs=1)
    assert (s.offset, s.offset_low, s.offset_high, s.token_budget, s.max_decodes, s.max_num_seqs) == (0.0, 0.0, 0.0, 1, 1, 1)
    for knob in ("default_tbt_slo_s", "token_budget", "max_decodes", "max_num_seqs"):
        with pytest.raises(InputError, match=knob):
            _slai(**{knob: 0})
    with pytest.raises(InputError, match="offset_low"):
        _slai(offset_low=-0.5)
    for knob in ("token_budget", "max_decodes", "max_num_seqs"):  # counts: whole numbers only
        with pytest.raises(InputError, match=f"field '{knob}': must be a positive integer, got 1.5") as err:
            _slai(**{knob: 1.5})
        assert err.value.field == knob
    assert _slai(watermark=0.0).admission_free_blocks == 0


def test_earliest_lst_first_when_the_budget_is_short():
    s = _slai(token_budget=10, offset=0.0)
    s.add_request(Request(0, 0.0, 2, 9, tbt_slo_s=1.0))
    s.add_request(Request(1, 0.0, 3, 9, tbt_slo_s=0.5))
    _step(s, 0.0)  # both first tokens at 1.0: LSTs 2.0 and 1.5
    s.token_budget = 1
    assert _step(s, 1.0) == [(1, 1, "d")]  # none urgent yet: LST order picks the tighter SLO
    assert _step(s, 2.0) == [(0, 1, "d")]  # 0 is late (LST 2.0), 1 is not (LST 2.5)


# --- the LST rule through the scheduling path (not only `last_schedulable_time_s`) -------------------
@pytest.mark.parametrize(("now_s", "urgent"), [(0.75, True), (0.625, False)])
def test_a_decode_is_urgent_from_its_lst_on_in_the_scheduling_path(now_s, urgent):
    # Θ = 2, one step of 0.25 s: mean 0.25, shift Θ·mean = 0.5. Request 0's first token came at
    # 0.25, so LST = 0.25 + 1.0 − 0.5 = 0.75 (exact in binary). From 0.75 on (equality included)
    # it is urgent and runs before a new prompt that would take the whole budget; before, the
    # prompt takes the budget and the decode waits. With the shift's sign flipped it would not be
    # urgent before 1.75.
    s = _slai(token_budget=8, offset=2.0, default_tbt_slo_s=1.0)
    r = Request(0, 0.0, 2, 9)
    s.add_request(r)
    _step(s, 0.0, dt_s=0.25)
    assert s.last_schedulable_time_s(r) == 0.75
    s.add_request(Request(1, now_s, 8, 3))
    items = _step(s, now_s)
    if urgent:
        assert items == [(0, 1, "d"), (1, 7, "p")]
        assert s.stats["urgent_decodes"] == 1
    else:
        assert items == [(1, 8, "p")]
        assert s.stats["urgent_decodes"] == 0


@pytest.mark.parametrize(("hog_prompt", "urgent"), [(94, True), (93, False)])
def test_urgent_decodes_follow_the_lst_with_the_dynamic_offset_at_96_percent(hog_prompt, urgent):
    # C = 100. The first batch admits r (2) and the hog, whose whole prompt is reserved: 96 (or
    # 95) blocks in use when the batch ends at 0.25, so r's LST is fixed with Θ = 10 (or 5):
    # 0.25 + 2.0 − 10·0.25 = −0.25, urgent at 0.25 (or 0.25 + 2.0 − 5·0.25 = 1.0, not yet).
    s = _slai(capacity=100, token_budget=8, default_tbt_slo_s=2.0)
    r = Request(0, 0.0, 2, 9)
    s.add_request(r)
    s.add_request(Request(7, 0.0, hog_prompt, 3))
    assert _step(s, 0.0, dt_s=0.25) == [(0, 2, "p"), (7, 6, "p")]
    assert s.kv.used_blocks == 2 + hog_prompt
    assert s.last_schedulable_time_s(r) == pytest.approx(-0.25 if urgent else 1.0)
    if urgent:  # served first, then the paused prefill with the budget left
        assert _step(s, 0.25) == [(0, 1, "d"), (7, 7, "p")]
    else:  # the paused prefill comes before non-urgent decodes and takes the whole budget
        assert _step(s, 0.25) == [(7, 8, "p")]
    assert s.stats["urgent_decodes"] == (1 if urgent else 0)


def test_memory_preemption_takes_the_decode_itself_when_no_prefill_is_paused():
    # shortest prompt first: 1 (3 tokens), 2 (3), then 0 (4) are admitted, filling C = 10. At the
    # next step no decode is urgent; decode 1 pops first (LST tie, arrival tie, batch order),
    # finds no free block and no paused prefill: it preempts itself (the official rule, not the
    # newest admission), and 2 and 0 decode in its freed blocks.
    s = _slai(capacity=10, token_budget=100, offset=0.0)
    for rid, prompt in ((0, 4), (1, 3), (2, 3)):
        s.add_request(Request(rid, 0.0, prompt, 5))
    assert _step(s, 0.0) == [(1, 3, "p"), (2, 3, "p"), (0, 4, "p")]
    batch = s.schedule(1.0)
    assert [r.request_id for r in batch.evicted] == [1]
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(2, 1), (0, 1)]
    assert s.stats["preemptions"] == 1 and list(s.resident) == [2, 0]
    assert s.waiting[0].request_id == 1  # back in the queue for a restart

def test_a_paused_prefill_preempted_this_step_is_admitted_again_with_its_old_remainder():
    """The official code resets a victim only after scheduling: the paused prefill preempted for
    an urgent decode offers its old remainder (12 − 7 = 5) and is admitted again at once, that
    chunk then running from the start (a fresh admission would take 12)."""
    s = _slai(capacity=24, block=4, token_budget=16, watermark=0.0, order="fcfs", offset=0.0, default_tbt_slo_s=0.5)
    s.add_request(Request(0, 0.0, 9, 4))
    s.add_request(Request(1, 0.0, 12, 4))
    assert _step(s, 0.0) == [(0, 9, "p"), (1, 7, "p")]  # 3 + 3 blocks reserved: 6 of 6
    batch = s.schedule(2.0)  # 0 is urgent (LST 1.5), finds no free block: the paused prefill goes
    assert [r.request_id for r in batch.evicted] == [1]
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 1), (1, 5)]


def test_a_decode_that_preempts_itself_does_not_count_against_max_decodes():
    # as above, with max_decodes = 2: decode 1 pops first and preempts itself, so it is not one of
    # the two decodes of the batch; 2 and 0 both still decode
    s = _slai(capacity=10, token_budget=100, offset=0.0, max_decodes=2)
    for rid, prompt in ((0, 4), (1, 3), (2, 3)):
        s.add_request(Request(rid, 0.0, prompt, 5))
    assert _step(s, 0.0) == [(1, 3, "p"), (2, 3, "p"), (0, 4, "p")]
    batch = s.schedule(1.0)
    assert [r.request_id for r in batch.evicted] == [1]
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(2, 1), (0, 1)]


def test_a_lone_decode_that_preempts_itself_is_admitted_again_in_the_same_schedule_call():
    # C = 32 in blocks of 16, one request of prompt 16, output 3: its prefill takes one block, its
    # first decode the other; its next decode finds no free block and no paused prefill, so it
    # preempts itself. The batch is then empty, so the scheduler schedules again (as the official
    # engine does): its recompute of 16 + 1 + 1 = 18 tokens is admitted in the same call
    s = _slai(capacity=32, block=16, watermark=0.0)
    r = Request(0, 0.0, 16, 3)
    s.add_request(r)
    assert _step(s, 0.0) == [(0, 16, "p")]
    assert _step(s, 1.0) == [(0, 1, "d")]
    assert s.kv.free_blocks == 0
    batch = s.schedule(2.0)
    assert [x.request_id for x in batch.evicted] == [0]
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 18)]
    assert s.stats["preemptions"] == 1 and list(s.resident) == [0]
    # a whole run: the recompute fills both blocks, so the next decode preempts itself again and
    # the second recompute (19 tokens, its last position sampling the last token) completes it
    s2 = _slai(capacity=32, block=16, watermark=0.0)
    r2 = Request(0, 0.0, 16, 3)
    simulate(s2, [r2], AffineBatchTime(1.0, 0.0), audit=True)
    assert r2.finished and r2.decode_steps_done == 3 and r2.completion_s == 4.0
    assert r2.restarts == 2 and r2.eviction_times_s == [2.0, 3.0] and r2.token_times_s == [1.0, 2.0, 3.0, 4.0]


def test_a_decode_preempted_this_step_offers_no_prefill_and_stops_admission_even_after_decoding():
    # a decode's stale remainder is 0 right after its prefill and negative once it has decoded
    # (prefill_remaining = target − cached): either way admission stops at it, and no work item of
    # 0 or fewer tokens is ever scheduled
    s = _slai(capacity=32, block=16, watermark=0.0)
    s.add_request(Request(0, 0.0, 16, 5))
    _step(s, 0.0)
    _step(s, 1.0)  # one decode: 17 cached, both blocks held
    batch = s.schedule(2.0)
    assert [x.request_id for x in batch.evicted] == [0]
    assert all(w.num_new_tokens > 0 for w in batch.items)


def test_the_last_token_of_the_budget_starts_the_next_prompt():
    # budget 4: request 0's whole prompt (3) leaves exactly 1 token, and request 1 starts its
    # prefill with a one-token chunk; the next step its decode and the rest of request 1's prompt
    s = _slai(token_budget=4, watermark=0.0)
    s.add_request(Request(0, 0.0, 3, 2))
    s.add_request(Request(1, 0.0, 5, 2))
    assert _step(s, 0.0) == [(0, 3, "p"), (1, 1, "p")]
    assert _step(s, 1.0) == [(0, 1, "d"), (1, 3, "p")]
