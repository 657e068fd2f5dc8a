"""WAIT (arXiv 2504.11320): cohort eligibility, stage caps, drain timer, both service rules,
memory safety, class matching, and agreement with the fluid benchmark below capacity."""

from __future__ import annotations

import math

import pytest

from fluid.batch_time import AffineBatchTime, Linear3BatchTime
from fluid.equilibrium import closed_form
from fluid.errors import InputError
from fluid.workload import RequestType, Workload
from runtime.arrivals import make_requests
from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import RuntimeClass, RuntimePolicy, RuntimeSegment
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.sim import simulate


def _policy(*classes, rule="cohort", max_wait_s=math.inf):
    return RuntimePolicy("wait", rule, max_wait_s, classes=tuple(RuntimeClass(*c) for c in classes))


def _wait(policy, capacity=10_000, block=1, **knobs):
    return make_scheduler("wait", KVBlockManager(capacity, block), policy=policy, **knobs)


def _req(rid, arrival_s=0.0, prompt=4, output=3, type_name="a"):
    return Request(rid, arrival_s, prompt, output, type_name)


def _step(s, now_s, dt_s=1.0):
    """Run one step; return the sorted stages its items ran (0 = prefill) and the batch."""
    batch = s.schedule(now_s)
    stages = sorted(0 if w.is_prefill else w.request.decode_steps_done + 1 for w in batch.items)
    s.complete_step(batch, now_s, now_s + dt_s)
    return stages, batch


def _stages(step):
    return step[0]


def test_a_class_waits_for_a_full_cohort():
    s = _wait(_policy(("a", 4, 3, 3)))
    s.add_request(_req(0))
    s.add_request(_req(1))
    assert s.schedule(0.0).items == []
    assert s.next_wakeup_s() is None  # no drain timer in this policy
    s.add_request(_req(2))
    batch = s.schedule(0.0)
    assert [w.num_new_tokens for w in batch.items] == [4, 4, 4]  # whole prompts, one cohort
    assert s.stats["admissions"] == 1


def test_each_stage_serves_at_most_the_threshold():
    s = _wait(_policy(("a", 4, 3, 2)))
    for i in range(7):
        s.add_request(_req(i))
    assert _stages(_step(s, 0.0)) == [0, 0]
    # stage 1 holds 2, and 5 wait: the class is eligible; 2 from each of stages 0 and 1
    assert _stages(_step(s, 1.0)) == [0, 0, 1, 1]
    assert _stages(_step(s, 2.0)) == [0, 0, 1, 1, 2, 2]
    # only 1 waits now (< n = 2): the class is not eligible and its decodes wait with their caches
    assert _step(s, 3.0)[1].items == []
    assert s.kv.used_tokens > 0


def test_an_ineligible_class_leaves_other_classes_running():
    s = _wait(_policy(("a", 4, 3, 2), ("b", 2, 1, 1)))
    s.add_request(_req(0))
    s.add_request(_req(1, type_name="b"))
    batch = s.schedule(0.0)
    assert [w.request.request_id for w in batch.items] == [1]


def test_drain_timer_admits_a_partial_cohort_and_wakes_the_simulator():
    s = _wait(_policy(("a", 4, 3, 3), max_wait_s=0.5))
    s.add_request(_req(0, arrival_s=0.2))
    assert s.schedule(0.3).items == []
    assert s.next_wakeup_s() == pytest.approx(0.7)
    assert s.schedule(0.69).items == []
    batch = s.schedule(0.7)
    assert len(batch.items) == 1 and s.stats["partial_cohorts"] == 1


def test_simulation_drains_stranded_prompts_by_timer_and_at_the_end():
    # 7 prompts for a cohort of 3: the last one is stranded without the drain rule
    reqs = [_req(i, arrival_s=0.1 * i) for i in range(7)]
    s = _wait(_policy(("a", 4, 3, 3), max_wait_s=2.0))
    result = simulate(s, reqs, AffineBatchTime(0.05, 0.0))
    assert all(r.finished for r in reqs)
    # the same without a timer: arrivals ending drains it
    reqs = [_req(i, arrival_s=0.1 * i) for i in range(7)]
    s = _wait(_policy(("a", 4, 3, 3)))
    simulate(s, reqs, AffineBatchTime(0.05, 0.0))
    assert all(r.finished for r in reqs)
    assert result.num_steps > 0


def test_continuous_rule_runs_every_resident_decode_every_step():
    s = _wait(_policy(("a", 4, 3, 2), rule="continuous"))
    for i in range(3):
        s.add_request(_req(i))
    assert _stages(_step(s, 0.0)) == [0, 0]
    # one waits (< n): no admission, but the residents decode anyway
    assert _stages(_step(s, 1.0)) == [1, 1]
    s.add_request(_req(3))
    assert _stages(_step(s, 2.0)) == [0, 0, 2, 2]


def test_continuous_rule_serves_every_decode_after_one_that_finds_no_block():
    # blocks of 4, C = 20 (5 blocks): a cohort of 3 takes 1 + 2 + 2 blocks, all of them. Request 0
    # (prompt 4) needs a second block for its first decode and finds none; 1 and 2 (prompt 5) decode
    # inside their second blocks: both still run, in admission order, and 0 waits with its cache
    s = _wait(_policy(("a", 5, 3, 3), rule="continuous"), capacity=20, block=4)
    for rid, prompt in ((0, 4), (1, 5), (2, 5)):
        s.add_request(_req(rid, prompt=prompt))
    _step(s, 0.0)
    assert s.kv.free_blocks == 0
    stages, batch = _step(s, 1.0)
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(1, 1), (2, 1)]
    assert s.stats["decodes_paused"] == 1 and s.stats["evictions"] == 0
    assert [r.cached_tokens for r in s._running] == [4, 6, 6]


def test_chunked_prefill_knob_splits_each_prompt():
    s = _wait(_policy(("a", 10, 2, 1)), prefill_chunk_tokens=4)
    s.add_request(_req(0, prompt=10, output=2))
    chunks = [_step(s, float(t))[1].items[0].num_new_tokens for t in range(3)]
    assert chunks == [4, 4, 2]
    assert _step(s, 3.0)[1].items == []  # cohort rule: nobody waits, the class is not eligible
    s.on_arrivals_ended()
    assert _stages(_step(s, 4.0)) == [1]


def test_a_prefill_chunk_that_finds_no_free_block_counts_as_a_paused_step():
    # C = 10 blocks of 1 token, chunks of 4: a cohort of prompts 2 and 8 fits whole (10 blocks) and
    # is admitted. t = 0: request 0 prefills its 2 tokens, request 1 its first 4 (6 held); t = 1,
    # 2, 3: request 0 decodes (7, 8, 9 held) and request 1's next chunk of 4 finds 3, 2, then 1
    # free block: it waits with its cache, one paused step each time (3 in all, no eviction);
    # request 0 finishes at t = 3, so at t = 4 the chunk runs and at t = 5 request 1 decodes
    s = _wait(_policy(("a", 8, 3, 2), rule="continuous"), capacity=10, prefill_chunk_tokens=4)
    s.add_request(_req(0, prompt=2, output=3))
    s.add_request(_req(1, prompt=8, output=2))
    work = [[(w.request.request_id, w.num_new_tokens) for w in _step(s, float(t))[1].items] for t in range(6)]
    assert work == [[(0, 2), (1, 4)], [(0, 1)], [(0, 1)], [(0, 1)], [(1, 4)], [(1, 1)]]
    assert s.stats["decodes_paused"] == 3 and s.stats["evictions"] == 0


def test_a_cohort_that_does_not_fit_is_deferred_not_overflowed():
    # capacity 10 tokens: one cohort of 2 prompts of 4 fits, a second does not while the first decodes
    s = _wait(_policy(("a", 4, 3, 2)), capacity=10)
    for i in range(4):
        s.add_request(_req(i))
    _step(s, 0.0)
    assert _stages(_step(s, 1.0)) == [1, 1]
    assert s.stats["admissions_deferred"] == 1
    assert s.kv.used_tokens <= 10


def test_lifo_eviction_when_nothing_can_grow():
    # block size 1, C = 5: two prompts of 2 tokens decode to 3 each -> 6 > 5
    reqs = [_req(0, prompt=2, output=3), _req(1, prompt=2, output=3)]
    s = _wait(_policy(("a", 2, 3, 2), rule="continuous"), capacity=7)
    result = simulate(s, reqs, AffineBatchTime(1.0, 0.0), audit=True)
    assert all(r.finished for r in reqs)
    # by hand: t = 0 both prefill (4 tokens), t = 1 both decode (6), t = 2 only 0 finds a block (7),
    # t = 3 neither does: 1, the newest, is evicted and 0 takes its last decode; 1 recomputes its
    # 2 + 1 + 1 = 4 tokens at t = 4 (sampling stage 2's token) and decodes its last stage at t = 5
    assert s.stats["evictions"] == 1 and s.stats["decodes_paused"] == 3
    assert reqs[1].restarts == 1 and reqs[0].restarts == 0  # the newest admitted goes first
    assert (reqs[0].completion_s, reqs[1].completion_s, reqs[1].eviction_times_s) == (4.0, 6.0, [3.0])
    assert result.peak_kv_tokens == 7


def test_requests_match_classes_by_name_then_by_lengths():
    s = _wait(_policy(("a", 4, 3, 1), ("b", 6, 5, 1)))
    s.add_request(Request(0, 0.0, 6, 5))  # no type name: (6, 5) is class b
    assert s._group_for(Request(1, 0.0, 6, 5)).name == "b"
    with pytest.raises(InputError, match=r"request 7 .*matches no class.*\['a', 'b'\]"):
        s.add_request(Request(7, 0.0, 9, 9, "zzz"))


def test_a_request_larger_than_the_cache_is_rejected_on_arrival():
    s = _wait(_policy(("a", 4, 3, 1)), capacity=6)
    with pytest.raises(InputError, match="needs 7 KV tokens"):
        s.add_request(_req(0))


def test_wrong_policy_kind_and_bad_knobs():
    nested = RuntimePolicy("nested_wait", "cohort", segments=(RuntimeSegment(0, 5, 1),))
    with pytest.raises(InputError):
        _wait(nested)
    with pytest.raises(InputError, match="service_rule"):
        _wait(_policy(("a", 4, 3, 1)), service_rule="eager")
    with pytest.raises(InputError, match="prefill_chunk_tokens"):
        _wait(_policy(("a", 4, 3, 1)), prefill_chunk_tokens=0)


# --- against the fluid benchmark ------------------------------------------------------------------
def _thresholds_with_slack(workload: Workload) -> list[int]:
    """Smallest integers n with ΔT(n) ≤ n_j/λ_j (arXiv 2504.11320, §WAIT), by fixed point from n*."""
    fluid = closed_form(workload)
    n = [max(1, math.ceil(x)) for x in fluid.prompts_per_stage]
    d0, d1, _ = workload.batch_time.linear_coefficients()
    for _ in range(100):
        dt = d0 + d1 * sum(k * t.footprint_token_iterations for k, t in zip(n, workload.types))
        bigger = [max(k, math.ceil(t.rate_per_s * dt)) for k, t in zip(n, workload.types)]
        if bigger == n:
            return n
        n = bigger
    raise AssertionError("no thresholds with slack")


@pytest.mark.parametrize("rule, block", [("cohort", 1), ("continuous", 1), ("cohort", 16)])
def test_below_capacity_wait_matches_the_fluid_throughput_and_memory(rule, block):
    types = (RequestType("a", 10, 10, 100.0), RequestType("b", 10, 20, 100.0))
    workload = Workload("two", 5000, AffineBatchTime(0.005, 1e-5), types)
    fluid = closed_form(workload)
    assert fluid.stable
    n = _thresholds_with_slack(workload)
    policy = _policy(*[(t.name, t.prefill, t.decode, k) for t, k in zip(types, n)], rule=rule, max_wait_s=1.0)
    m_policy = sum(k * t.footprint_token_iterations for k, t in zip(n, types))
    s = make_scheduler("wait", KVBlockManager(workload.kv_capacity_tokens, block), policy=policy)
    reqs = make_requests(workload, 12_000, 7)
    result = simulate(s, reqs, workload.batch_time)
    last_arrival_s = max(r.arrival_s for r in reqs)
    warmup_s, end_s = 5.0, last_arrival_s
    tokens = sum(1 for r in reqs for t in r.token_times_s[1:] if warmup_s <= t < end_s)
    throughput = tokens / (end_s - warmup_s)
    assert throughput == pytest.approx(fluid.throughput_star_tokens_per_s, rel=0.02)
    residents = sum(k * (t.decode + 1) for k, t in zip(n, types))
    assert result.peak_kv_tokens <= m_policy + (block - 1) * residents
    assert s.stats["evictions"] == 0 and all(r.restarts == 0 for r in reqs)


def test_linear3_batch_time_is_accepted():
    types = (RequestType("a", 8, 4, 20.0),)
    workload = Workload("one", 2000, Linear3BatchTime(0.01, 1e-5, 2e-5), types)
    s = make_scheduler("wait", KVBlockManager(2000, 16), policy=_policy(("a", 8, 4, 1), max_wait_s=0.1))
    reqs = make_requests(workload, 300, 3)
    simulate(s, reqs, workload.batch_time, audit=True)
    assert all(r.finished for r in reqs)


def test_a_cohort_larger_than_the_cache_is_admitted_in_parts_when_nothing_else_runs():
    # n = 3 prompts of 4 tokens (+3 decodes) never fit whole in 10 tokens: progress by parts
    reqs = [_req(i, prompt=4, output=3) for i in range(6)]
    s = _wait(_policy(("a", 4, 3, 3), rule="continuous"), capacity=10)
    result = simulate(s, reqs, AffineBatchTime(1.0, 0.0), audit=True)
    assert all(r.finished for r in reqs)
    assert s.stats["partial_cohorts"] >= 2 and result.peak_kv_tokens <= 10


def test_an_evicted_request_goes_back_ahead_of_one_that_arrived_while_it_ran():
    # the run above with request 2 (same class) arriving at t = 2.5, before request 1's eviction at
    # t = 3: request 1 re-enters at the head of the queue. By hand: at t = 4 request 1 recomputes its
    # 4 tokens with request 2's prefill beside it (6 of 7); at t = 5 request 1 decodes into the 7th
    # and request 2 finds no block; request 1 leaves at 6 and request 2 decodes at t = 6, 7, 8
    reqs = [_req(0, prompt=2, output=3), _req(1, prompt=2, output=3), _req(2, arrival_s=2.5, prompt=2, output=3)]
    s = _wait(_policy(("a", 2, 3, 2), rule="continuous"), capacity=7)
    simulate(s, reqs, AffineBatchTime(1.0, 0.0), audit=True)
    assert all(r.finished for r in reqs) and s.stats["evictions"] == 1 and reqs[1].eviction_times_s == [3.0]
    assert reqs[1].token_times_s == [1.0, 2.0, 5.0, 6.0] and reqs[1].completion_s == 6.0
    assert reqs[2].token_times_s == [5.0, 7.0, 8.0, 9.0]
