"""SLAI (arXiv 2508.01002): LST arithmetic, dynamic and fixed offset, batch order under the token
budget, shortest-prompt-first or FCFS, paying tier first, the decode cap, memory safety."""

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


def test_lst_is_last_token_plus_slo_minus_theta_times_mean_batch_time():
    s = _slai(default_tbt_slo_s=0.2)
    r = Request(0, 0.0, 4, 5)
    s.add_request(r)
    _step(s, 0.0, dt_s=0.01)
    _step(s, 0.01, dt_s=0.03)
    assert s.mean_batch_time_s == pytest.approx(0.02)
    assert s.theta() == 5
    assert s.last_schedulable_time_s(r) == pytest.approx(0.04 + 0.2 - 5 * 0.02)
    tight = Request(1, 0.0, 4, 5, tbt_slo_s=0.1)
    tight.token_times_s.append(1.0)
    assert s.last_schedulable_time_s(tight) == pytest.approx(1.0 + 0.1 - 5 * 0.02)


def test_mean_batch_time_is_a_window_of_recent_steps():
    s = _slai(mean_window_steps=2)
    for i in range(4):
        s.add_request(Request(i, 0.0, 1, 9))
    for start, dt in ((0.0, 1.0), (1.0, 2.0), (3.0, 4.0)):
        _step(s, start, dt)
    assert s.mean_batch_time_s == pytest.approx(3.0)


def test_dynamic_offset_switches_at_96_percent_kv_use_and_fixed_offset_overrides():
    s = _slai(capacity=100)
    hog = Request(0, 0.0, 95, 1)
    s.kv.grow(hog, 95)
    assert s.theta() == 5
    s.kv.grow(hog, 96)
    assert s.theta() == 10
    assert _slai(capacity=100, offset=2.5).theta() == 2.5


def test_batch_order_urgent_decodes_then_started_prefills_then_new_prompts():
    s = _slai(token_budget=6, offset=0.0, default_tbt_slo_s=1.0)
    s.add_request(Request(0, 0.0, 2, 9))
    s.add_request(Request(1, 0.0, 3, 9))
    assert _step(s, 0.0) == [(0, 2, "p"), (1, 3, "p")]  # shortest prompt first
    s.add_request(Request(2, 1.0, 10, 9))
    # LST of 0 and 1 = 1.0 + 1.0 = 2.0 > now: the new prompt takes the whole budget, they wait
    assert _step(s, 1.0) == [(2, 6, "p")]
    s.add_request(Request(3, 2.0, 1, 9))
    # now 0 and 1 are past their LST: first; then the started prefill (4 left); the budget is spent
    assert _step(s, 2.0) == [(0, 1, "d"), (1, 1, "d"), (2, 4, "p")]
    # nothing urgent (all LSTs are 3.0 + 1.0): new prompt 3 first, then the other decodes
    assert _step(s, 3.0) == [(3, 1, "p"), (0, 1, "d"), (1, 1, "d"), (2, 1, "d")]
    # request 3's first token came at 4.0, the others' at 4.0 too; at 5.5 all of 0, 1, 2 are late
    # (LST 5.0) but 3 is as well: all four run, the urgent ones in LST order
    assert sorted(i for i, _, _ in _step(s, 5.5)) == [0, 1, 2, 3]


@pytest.mark.parametrize("order, first", [("spf", 1), ("fcfs", 0)])
def test_new_prompt_order(order, first):
    s = _slai(token_budget=5, order=order)
    s.add_request(Request(0, 0.0, 5, 3))
    s.add_request(Request(1, 0.5, 2, 3))
    assert _step(s, 1.0)[0][0] == first


def test_paying_tier_first():
    s = _slai(token_budget=5)
    s.add_request(Request(0, 0.0, 1, 3, tier=1))
    s.add_request(Request(1, 0.0, 5, 3, tier=0))
    assert _step(s, 0.0) == [(1, 5, "p")]


def test_at_most_max_decodes_per_batch_and_the_rest_keep_their_cache():
    s = _slai(max_decodes=2, token_budget=100)
    for i in range(3):
        s.add_request(Request(i, 0.0, 2, 5))
    _step(s, 0.0)
    items = _step(s, 1.0)
    assert [k for _, _, k in items] == ["d", "d"]
    assert s.kv.used_tokens == 2 + 2 * 3  # the third waits with its 2 cached tokens


def test_memory_pressure_preempts_lifo_and_everything_completes():
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


def test_bad_knobs():
    with pytest.raises(InputError, match="order"):
        _slai(order="lifo")
    with pytest.raises(InputError, match="token_budget"):
        _slai(token_budget=0)
    with pytest.raises(InputError, match="offset"):
        _slai(offset=-1)
    with pytest.raises(InputError, match="high_kv_use_fraction"):
        _slai(high_kv_use_fraction=1.5)


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


def test_urgent_decodes_follow_the_lst_with_the_dynamic_offset_above_96_percent():
    # C = 100: above 96 blocks in use Θ = 10, so the shift is 10·0.25 = 2.5 s and a decode whose
    # last token came at 0.25 is urgent at 0.25 + 1.0 − 2.5 < 0; below it Θ = 5 (shift 1.25 s).
    s = _slai(capacity=100, token_budget=8, default_tbt_slo_s=1.0)
    r = Request(0, 0.0, 2, 9)
    s.add_request(r)
    _step(s, 0.0, dt_s=0.25)
    assert s.theta() == 5 and s.last_schedulable_time_s(r) == 0.0
    hog = Request(7, 0.0, 94, 1)
    s.kv.grow(hog, 94)  # 96 of 100 blocks in use
    assert s.theta() == 10 and s.last_schedulable_time_s(r) == -1.25
    s.add_request(Request(1, 0.25, 2, 3))
    assert _step(s, 0.25) == [(0, 1, "d"), (1, 2, "p")]
    assert s.stats["urgent_decodes"] == 1


def test_memory_preemption_takes_the_newest_admitted_request_outside_the_batch():
    # shortest prompt first: 1 (3 tokens), 2 (3), then 0 (4) are admitted, filling C = 10. At the
    # next step decode 1 finds no free block: the newest admitted (0) is preempted, not the
    # oldest, and 1 and 2 decode in its freed blocks.
    s = _slai(capacity=10, token_budget=100, offset=0.0)
    reqs = [Request(rid, 0.0, prompt, 5) for rid, prompt in ((0, 4), (1, 3), (2, 3))]
    for r in reqs:
        s.add_request(r)
    assert _step(s, 0.0) == [(1, 3, "p"), (2, 3, "p"), (0, 4, "p")]
    batch = s.schedule(1.0)
    assert [r.request_id for r in batch.evicted] == [0]
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(1, 1), (2, 1)]
    assert s.stats["preemptions"] == 1 and list(s.resident) == [1, 2]
    assert s.waiting[0][3].request_id == 0  # back in the queue for a restart
    s.complete_step(batch, 1.0, 2.0)
    t = 2.0
    while s.has_unfinished() and t < 50:  # the restart decodes again (its old queue entry is skipped once)
        batch = s.schedule(t)
        s.complete_step(batch, t, t + 1.0)
        t += 1.0
    assert not s.has_unfinished() and reqs[0].restarts >= 1  # C = 10 is tight: more restarts follow
    assert all(r.finished and r.decode_steps_done == 5 for r in reqs)
