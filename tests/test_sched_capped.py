"""The capped service rule (docs/capped-rule.md): resident and class caps at their boundary,
continuous decode, per-request chunked prefill, pause with the cache kept, the last-resort
eviction, and the memory derivation against simulated occupancy."""

from __future__ import annotations

import math

import pytest

from fluid.batch_time import AffineBatchTime
from fluid.equilibrium import closed_form
from fluid.errors import InputError
from fluid.workload import RequestType, Workload
from runtime.arrivals import make_requests
from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import RuntimeClass, RuntimePolicy, RuntimeSegment, runtime_policy
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.sim import simulate
from thresholds.build import nested_capped_policy, wait_capped_policy
from thresholds.capped import cap_of, littles_law_cap, nested_resident_cap, wait_class_caps
from thresholds.capped_solve import solve_nested_capped_auto, solve_wait_capped
from thresholds.nested import NestedOptions


def _wait(classes, capacity=10_000, **knobs):
    policy = RuntimePolicy("wait", "capped", classes=tuple(RuntimeClass(*c) for c in classes))
    return make_scheduler("wait-capped", KVBlockManager(capacity, 1), policy=policy, **knobs)


def _nested(segments, capacity=10_000, **knobs):
    policy = RuntimePolicy("nested_wait", "capped", segments=tuple(RuntimeSegment(*s) for s in segments))
    return make_scheduler("nested-wait-capped", KVBlockManager(capacity, 1), policy=policy, **knobs)


def _req(rid, arrival_s=0.0, prompt=4, output=3, type_name="a"):
    return Request(rid, arrival_s, prompt, output, type_name)


def _step(s, now_s):
    batch = s.schedule(now_s)
    work = sorted((w.request.request_id, w.num_new_tokens) for w in batch.items)
    s.complete_step(batch, now_s, now_s + 1.0)
    return work


def test_caps_round_n_times_width_up_and_an_exact_product_is_not_rounded():
    assert cap_of(0.12, 1001) == 121 and cap_of(0.5, 4) == 2 and cap_of(1 / 3, 3) == 1 and cap_of(1e-6, 5) == 1
    assert wait_class_caps([(999, 0.107), (3, 0.5)]) == (107, 2)
    assert nested_resident_cap([(0, 9, 0.3), (10, 19, 0.1)]) == 4


def test_the_resident_cap_admits_exactly_that_many_first_come_first_served():
    # cap ⌈3 · 0.5⌉ = 2 (unpaced, and binding though memory is ample: the cap alone)
    s = _nested([(0, 2, 0.5)], pace=False, work_conserving=False)
    assert s.resident_cap == 2
    for i in range(3):
        s.add_request(_req(i, arrival_s=0.1 * i, output=2))
    assert _step(s, 0.0) == [(0, 4), (1, 4)]  # requests 0 and 1, whole prompts; 2 waits
    assert _step(s, 1.0) == [(0, 1), (1, 1)]  # both decode; still 2 resident
    assert _step(s, 2.0) == [(0, 1), (1, 1)]  # their second decode stage: both finish
    assert _step(s, 3.0) == [(2, 4)]  # room: request 2 is admitted
    assert s.stats["admissions"] == 3 and s.stats["evictions"] == 0


def test_a_class_at_its_cap_waits_while_a_later_request_of_another_class_is_admitted():
    # caps ⌈4·0.25⌉ = 1 and ⌈8·0.125⌉ = 1, binding though memory is ample
    s = _wait([("a", 4, 3, 0.25), ("b", 4, 7, 0.125)], work_conserving=False)
    assert s.group_caps == {"a": 1, "b": 1}
    s.add_request(_req(0, 0.0, type_name="a"))
    s.add_request(_req(1, 0.1, type_name="a"))
    s.add_request(_req(2, 0.2, output=7, type_name="b"))
    assert _step(s, 0.0) == [(0, 4), (2, 4)]  # a's second request waits; b's is admitted past it


def _admitted(work, prompt=4):
    return [rid for rid, tokens in work if tokens == prompt]


def _staggered(capacity, steps=5, **knobs):
    """Class a (prompt 4, output 7, n = 0.5: cap 4, pace 0.5 a step, credit at most 1.5), block 1;
    request t arrives just before step t. Each ends at 11 tokens."""
    s = _wait([("a", 4, 7, 0.5)], capacity=capacity, **knobs)
    out = []
    for t in range(steps):
        s.add_request(_req(t, float(t), output=7, type_name="a"))
        out.append(_admitted(_step(s, float(t))))
    return s, out


def test_the_pace_holds_a_request_only_when_the_residents_ends_do_not_fit_and_one_credit_admits():
    # credit 1.5 → 0.5 (request 0), 1.0 → 0 (request 1), 0.5 → 0 (request 2: 3 × 11 = 33 ≤ C, every
    # end fits, so no pace). Step 3: four ends, 44 > C = 43, and credit 0.5: request 3 waits although
    # the look-ahead would pass it (the unpaced rule admits it). Step 4: credit exactly 1.0 admits it.
    s, out = _staggered(43)
    assert out == [[0], [1], [2], [], [3]]
    assert s.stats["admissions_paced"] == 1 and s.stats["admissions_deferred"] == 0
    assert _staggered(43, pace=False)[1] == [[0], [1], [2], [3], []]
    assert s.pace_per_step("a") == 0.5


def test_ends_exactly_at_the_cache_size_are_not_paced():
    s, out = _staggered(44)  # four ends of 11 tokens: exactly C
    assert out == [[0], [1], [2], [3], []] and s.stats["admissions_paced"] == 0


def test_a_class_out_of_pace_does_not_hold_back_another_class():
    # class a: request 0 at step 0, request 1 at step 1 (credit a spent). Step 2: a's request 2
    # (arrival 1.9) would make three ends of 33 > C = 31 with credit 0.5, so it waits; b's later
    # request 3 (arrival 1.95; class b has its full credit and the look-ahead peak 30 fits) goes past it.
    s = _wait([("a", 4, 7, 0.5), ("b", 4, 7, 0.5)], capacity=31)
    assert s.group_caps == {"a": 4, "b": 4}
    s.add_request(_req(0, 0.0, output=7, type_name="a"))
    assert _admitted(_step(s, 0.0)) == [0]
    s.add_request(_req(1, 1.0, output=7, type_name="a"))
    assert _admitted(_step(s, 1.0)) == [1]
    s.add_request(_req(2, 1.9, output=7, type_name="a"))
    s.add_request(_req(3, 1.95, output=7, type_name="b"))
    assert _admitted(_step(s, 2.0)) == [3]
    assert s.stats["admissions_paced"] == 1


def test_pace_must_be_a_boolean():
    with pytest.raises(InputError, match="pace"):
        _nested([(0, 9, 0.5)], pace=1)


def test_prefill_is_chunked_per_request_while_residents_decode():
    s = _nested([(0, 9, 1.0)], prefill_chunk_tokens=32)  # cap 10
    s.add_request(_req(0, prompt=8, output=5))
    assert _step(s, 0.0) == [(0, 8)]
    s.add_request(_req(1, prompt=100, output=2))
    assert _step(s, 1.0) == [(0, 1), (1, 32)]
    assert _step(s, 2.0) == [(0, 1), (1, 32)]
    assert _step(s, 3.0) == [(0, 1), (1, 32)]
    assert _step(s, 4.0) == [(0, 1), (1, 4)]  # the last chunk: 100 = 3·32 + 4


def test_a_decode_with_no_free_block_pauses_with_its_cache_kept_and_no_one_is_evicted():
    # C = 9 tokens, block 1: after both prefills 8 are held; request 0 takes the last block and
    # finishes, request 1 finds none and waits a step with its 4 tokens, then decodes
    s = _nested([(0, 3, 1.0)], capacity=9, look_ahead=False)  # the authors' rule: no look-ahead
    s.add_request(_req(0, prompt=4, output=1))
    s.add_request(_req(1, prompt=4, output=3))
    assert _step(s, 0.0) == [(0, 4), (1, 4)]
    r1 = s._resident[1]
    assert _step(s, 1.0) == [(0, 1)]  # 9 of 9 tokens: request 1 is paused
    assert r1.cached_tokens == 4 and s.stats["decodes_paused"] == 1
    assert _step(s, 2.0) == [(1, 1)]  # request 0 finished and freed its blocks
    assert s.stats["evictions"] == 0 and r1.restarts == 0


def test_when_every_resident_is_paused_the_newest_is_evicted_as_a_last_resort():
    s = _nested([(0, 19, 1.0)], capacity=10, look_ahead=False)  # cap 20; C = 10 tokens
    s.add_request(_req(0, prompt=4, output=5))
    s.add_request(_req(1, prompt=4, output=5))
    assert _step(s, 0.0) == [(0, 4), (1, 4)]
    assert _step(s, 1.0) == [(0, 1), (1, 1)]  # 10 tokens: full
    assert _step(s, 2.0) == [(0, 1)]  # nobody fits: request 1 (the newest) is evicted, 0 decodes
    assert s.stats["evictions"] == 1 and s._resident.keys() == {0}
    # the evicted request comes back and recomputes its prefix (l + s + 1 tokens) in chunks, then finishes
    now, done = 3.0, set()
    while s.has_unfinished() and now < 60:
        batch = s.schedule(now)
        done |= {r.request_id for r in s.complete_step(batch, now, now + 1.0)}
        now += 1.0
    assert done == {0, 1} and not s.has_unfinished()


def test_look_ahead_admits_exactly_when_the_future_peak_fits_the_cache():
    # WAIT, known lengths, block 1: request 0 (prompt 4, output 4) ends at 8 tokens. Request 1
    # (prompt 4, output 3) admitted with it: at t = 3 both are alive, 0 at 4 + 3 = 7 and 1 at
    # 4 + 3 = 7, peak 14; then 0 grows to 8 alone. So C = 14 admits both, C = 13 only request 0.
    for capacity, admitted in ((14, [0, 1]), (13, [0])):
        s = _wait([("a", 4, 4, 1.0), ("b", 4, 3, 1.0)], capacity=capacity)
        s.add_request(_req(0, prompt=4, output=4, type_name="a"))
        s.add_request(_req(1, prompt=4, output=3, type_name="b"))
        assert [rid for rid, _ in _step(s, 0.0)] == admitted, capacity
        assert s.stats["admissions_deferred"] == (0 if capacity == 14 else 1)
    # run to the end at C = 13: request 1 waits for request 0's departure, and nobody ever pauses
    now, done = 1.0, set()
    while s.has_unfinished() and now < 40:
        batch = s.schedule(now)
        done |= {r.request_id for r in s.complete_step(batch, now, now + 1.0)}
        now += 1.0
    assert done == {0, 1} and s.stats["decodes_paused"] == 0 and s.stats["evictions"] == 0


def _wait_blocks(classes, capacity, block, **knobs):
    policy = RuntimePolicy("wait", "capped", classes=tuple(RuntimeClass(*c) for c in classes))
    return make_scheduler("wait-capped", KVBlockManager(capacity, block), policy=policy, **knobs)


@pytest.mark.parametrize("capacity, admitted", [(16, [0, 1]), (12, [0])])
def test_look_ahead_counts_block_aligned_ends_as_exactly_full_blocks(capacity, admitted):
    # block 4: two requests of prompt 4, output 4 each end at 8 tokens, exactly 2 blocks each,
    # so the peak is 16 tokens: C = 16 (4 blocks) holds both, exactly full; C = 12 only one.
    # (A mean reserve of (B − 1)/2 tokens a resident would project 19 and defer request 1 at C = 16.)
    s = _wait_blocks([("a", 4, 4, 1.0)], capacity, 4, pace=False)
    for rid in (0, 1):
        s.add_request(_req(rid, prompt=4, output=4))
    assert [rid for rid, _ in _step(s, 0.0)] == admitted
    assert s.stats["admissions_deferred"] == (0 if capacity == 16 else 1)


def test_look_ahead_counts_a_line_one_token_into_a_block_as_the_whole_block():
    # block 4, C = 20 (5 blocks): prompt 4, output 1 ends at 5 tokens, which holds 2 blocks (8
    # tokens), so three such requests need 24 > 20 and only two are admitted at once; request 2
    # waits with no decode ever paused. (A mean reserve would project 3 × 6.5 = 19.5 ≤ 20 and admit
    # all three, and then one decode would pause for want of a block.)
    s = _wait_blocks([("a", 4, 1, 3.0)], 20, 4, pace=False)
    for rid in range(3):
        s.add_request(_req(rid, prompt=4, output=1))
    assert [rid for rid, _ in _step(s, 0.0)] == [0, 1]
    assert s.stats["admissions_deferred"] == 1
    now = 1.0
    while s.has_unfinished() and now < 20:
        batch = s.schedule(now)
        s.complete_step(batch, now, now + 1.0)
        now += 1.0
    assert not s.has_unfinished() and s.stats["decodes_paused"] == 0


def test_block_peak_matches_a_direct_count_at_every_departure():
    import numpy as np

    from runtime.schedulers.capped import _peak_blocks_tokens

    rng = np.random.default_rng(7)
    for trial in range(300):
        n, block = int(rng.integers(1, 25)), int(rng.choice([1, 3, 16]))
        e = rng.integers(0, 50, n).astype(float)
        if trial % 2:
            e += rng.random(n)  # Nested WAIT's expected remaining stages are fractional
        k = rng.integers(1, 90, n).astype(float)
        direct = max(sum(block * math.ceil((k[r] + t) / block) for r in range(n) if e[r] >= t) for t in e)
        order = np.argsort(-e, kind="stable")
        assert _peak_blocks_tokens(e[order], k[order], block) == pytest.approx(direct, abs=1e-9), (trial, block)


@pytest.mark.parametrize("capacity, work_conserving, admitted", [
    (14, True, [0, 1]),  # two ends of 7 tokens: exactly C, so the cap does not bind
    (13, True, [0]),  # one token short: memory can bind, the cap binds
    (14, False, [0]),  # caps that always bind (the authors' rule)
])
def test_a_cap_binds_only_where_the_residents_ends_do_not_fit(capacity, work_conserving, admitted):
    # class cap ⌈0.25 × (3 + 1)⌉ = 1; prompt 4, output 3: each request ends at 7 tokens
    s = _wait([("a", 4, 3, 0.25)], capacity=capacity, work_conserving=work_conserving)
    assert s.group_caps["a"] == 1
    for rid in (0, 1):
        s.add_request(_req(rid))
    assert _admitted(_step(s, 0.0)) == admitted
    assert s.stats["admissions_paced"] == 0 and s.stats["admissions_deferred"] == 0


def test_the_resident_cap_binds_only_where_the_residents_ends_do_not_fit():
    # Nested WAIT, resident cap 2 (one segment, threshold 0.5 over stages 0..3); every request is
    # expected to end at 4 + 4 = 8 tokens (stage 3 is the last). C = 24: three ends fit exactly, so
    # request 2 goes past the resident cap; request 3 would make 32 > 24 and waits.
    s = _nested([(0, 3, 0.5)], capacity=24, work_conserving=True)
    assert s.resident_cap == 2
    for rid in range(4):
        s.add_request(_req(rid, output=4))
    assert _admitted(_step(s, 0.0)) == [0, 1, 2]
    assert len(s._waiting["all"]) == 1 and s._waiting["all"][0].request_id == 3


def test_caps_bind_by_default():
    # the rule as solved: a second request past a cap of 1 waits although C = 14 holds both ends
    s = _wait([("a", 4, 3, 0.25)], capacity=14)
    assert s.work_conserving is False
    for rid in (0, 1):
        s.add_request(_req(rid))
    assert _admitted(_step(s, 0.0)) == [0]


def test_work_conserving_must_be_a_boolean():
    with pytest.raises(InputError, match="work_conserving"):
        _wait([("a", 4, 3, 1.0)], work_conserving="yes")


def test_look_ahead_of_nested_wait_uses_the_expected_length_given_the_stage():
    from runtime.schedulers.capped import expected_end_stages

    # two segments: stages 0..2 end there w.p. 1 − 0.25, else go on to stage 6
    segs = (RuntimeSegment(0, 2, 1.0, 0.25), RuntimeSegment(3, 6, 1.0, 0.0))
    assert expected_end_stages(segs) == (3.0, 3.0, 3.0, 6.0, 6.0, 6.0, 6.0)


def test_a_cohort_rule_policy_refuses_fractional_thresholds():
    with pytest.raises(InputError, match="capped rule"):
        RuntimePolicy("wait", "cohort", classes=(RuntimeClass("a", 4, 3, 0.5),))
    with pytest.raises(InputError, match="positive integer"):
        _wait([("a", 4, 3, 1)], resident_cap=0)


def _workload(seed: int) -> Workload:
    """A seeded random workload of 1–3 types at 0.8 of its capacity scale."""
    import random

    rng = random.Random(seed)
    types = tuple(RequestType(f"t{i}", rng.randint(8, 400), rng.randint(4, 200), rng.uniform(0.2, 3.0))
                  for i in range(rng.randint(1, 3)))
    w = Workload("occupancy", rng.randint(8_000, 80_000), AffineBatchTime(rng.uniform(0.005, 0.03), rng.uniform(1e-7, 3e-6)), types)
    return w.scaled(0.8 * closed_form(w).capacity_scale)


@pytest.mark.parametrize("kind", ["wait", "nested"])
@pytest.mark.parametrize("seed", range(4))
def test_the_memory_derivation_against_simulated_occupancy(kind, seed):
    """Worst case is a guarantee (peak ≤ it, block size 1); the expected resident KV is what the
    caps hold when full, so steady-state mean occupancy lies between M* (the fluid point's) and it."""
    w = _workload(seed)
    if kind == "wait":
        sol = solve_wait_capped(w, slack=0.0)
        policy = runtime_policy(wait_capped_policy(w, sol))
        name = "wait-capped"
    else:
        opts = NestedOptions(slack=0.0, eta=0.0)
        sol = solve_nested_capped_auto(w, opts)
        policy = runtime_policy(nested_capped_policy(w, sol, opts))
        name = "nested-wait-capped"
    # caps that always bind (the default): the derivation is of what the caps hold (work-conserving
    # caps also admit past them where every end fits C; their guarantee is peak ≤ C, checked below)
    scheduler = make_scheduler(name, KVBlockManager(w.kv_capacity_tokens, 1), policy=policy)
    requests = make_requests(w, 3000, seed=3)
    result = simulate(scheduler, requests, w.batch_time)
    steps = result.steps
    start = len(steps) // 5  # past the warm-up
    spans = [steps.end_s[i] - steps.start_s[i] for i in range(start, len(steps))]
    mean_kv = sum(steps.kv_used_tokens[i] * d for i, d in zip(range(start, len(steps)), spans)) / sum(spans)
    star = closed_form(w).memory_star_tokens
    assert result.peak_kv_tokens <= sol.memory.worst_case_tokens
    assert 0.8 * star <= mean_kv <= 1.05 * sol.memory.expected_tokens, (star, mean_kv, sol.memory)
    assert scheduler.stats["evictions"] == 0
    assert all(r.completion_s is not None for r in requests)
    # work-conserving caps: past the worst case of the caps, never past C, no pause
    wc = make_scheduler(name, KVBlockManager(w.kv_capacity_tokens, 1), policy=policy, work_conserving=True)
    wc_requests = make_requests(w, 3000, seed=3)
    wc_result = simulate(wc, wc_requests, w.batch_time)
    assert wc_result.peak_kv_tokens <= w.kv_capacity_tokens
    assert all(r.completion_s is not None for r in wc_requests) and wc.stats["evictions"] == 0
    if kind == "wait":  # known lengths: the look-ahead's projection is exact, so nothing ever pauses
        assert wc.stats["decodes_paused"] == 0


def test_capped_nested_thetas_pair_each_segment_with_the_one_before():
    # θ_k of the theorem's buffer is the root for (n_(k−1), n_k, p_(k−1)); segment 1 has none
    from thresholds.capped_solve import solve_nested_capped
    from thresholds.nested import solve_theta

    w = Workload("two", 137_000, AffineBatchTime(0.01, 1e-7),
                 (RequestType("short", 512, 20, 10.0), RequestType("long", 512, 50, 5.0)))
    sol = solve_nested_capped(w, NestedOptions(segments=None, slack=0.1), None)
    n, p = sol.thresholds, sol.continue_probs
    assert len(n) == 2 and p[0] == pytest.approx(1 / 3) and n[1] < n[0]
    want = solve_theta(n[0], n[1], p[0])
    assert want is not None and want > 0
    assert sol.thetas == (None, want)
    assert sol.buffer_tokens is not None


def test_wait_capped_refuses_a_request_whose_prompt_and_output_exceed_the_cache_and_takes_exactly_full():
    # the capped rule keeps a request's whole output resident: prompt + output tokens must fit the cache
    s = _wait([("a", 6, 4, 0.5)], capacity=10)
    s.add_request(_req(0, prompt=6, output=4))  # 6 + 4 = 10 tokens: exactly the cache
    with pytest.raises(InputError, match="kv_capacity_tokens") as info:
        s.add_request(_req(1, prompt=6, output=5))  # 11 tokens, though the 6-token prompt alone fits
    assert "11" in str(info.value)


def test_a_decode_right_after_a_prefilling_resident_still_decodes_every_step():
    # residents in admission order: 0 prefills its 6-token prompt in chunks of 2 while 1 (a 2-token
    # prompt, done in step 0) decodes; the resident after a prefilling one must not be skipped
    s = _wait([("a", 6, 3, 0.5), ("b", 2, 3, 0.5)], prefill_chunk_tokens=2, pace=False)
    s.add_request(_req(0, prompt=6, output=3, type_name="a"))
    s.add_request(_req(1, prompt=2, output=3, type_name="b"))
    assert [_step(s, float(t)) for t in range(5)] == [
        [(0, 2), (1, 2)], [(0, 2), (1, 1)], [(0, 2), (1, 1)], [(0, 1), (1, 1)], [(0, 1)]]


def test_littles_law_cap_by_hand_including_a_step_exactly_at_its_limit():
    # L = 10 · 0.01 = 0.1, x = 0.1 / (1 − 0.1/0.9) = 0.1125 s, cap = ⌈10 · 0.1125 / 0.9⌉ = ⌈1.25⌉ = 2,
    # dt = 0.1 + 2 · 0.01 = 0.12 s ≤ ρ · cap / stages = 0.18 s
    cap, dt = littles_law_cap(10, 0.01, 0.1, 0.9)
    assert cap == 2 and dt == pytest.approx(0.12)
    # L = 0.5, ρ = 1: x = 0.2 s, cap = 2 exactly, dt = 0.2 s = ρ · cap / stages: the equality case is accepted
    assert littles_law_cap(10, 0.05, 0.1, 1.0) == (2, 0.2)
    with pytest.raises(ValueError, match="must be below ρ"):
        littles_law_cap(10, 0.1, 0.1, 1.0)  # L = 1 = ρ


def test_capped_nested_theorem_bound_requires_the_base_plus_the_buffer():
    from thresholds.capped_solve import solve_nested_capped

    w = Workload("two", 137_000, AffineBatchTime(0.01, 1e-7),
                 (RequestType("short", 512, 20, 10.0), RequestType("long", 512, 50, 5.0)))
    sol = solve_nested_capped(w, NestedOptions(segments=None, slack=0.1, memory_bound="theorem"), None)
    assert sol.buffer_tokens > 0 and sol.base_memory_tokens > 0
    assert sol.memory.theorem_tokens == sol.memory.required_tokens == sol.base_memory_tokens + sol.buffer_tokens
    # the theorem's requirement is above both the expected and the worst case of the caps here
    assert sol.memory.required_tokens > sol.memory.worst_case_tokens > sol.memory.expected_tokens


def test_projection_counts_a_prefill_at_its_whole_context_plus_its_remaining_chunk_steps():
    # WAIT, chunks of 2: a 5-token prompt takes ⌈5/2⌉ = 3 prefill steps, 2 more than the step that
    # admits it, then 3 decode stages: the line starts at its whole context k = 5 and lasts
    # e = 3 + 2 = 5 steps. A prompt of 4 takes ⌈4/2⌉ − 1 = 1 step more; whole prompts none.
    s = _wait([("a", 5, 3, 1.0), ("b", 4, 3, 1.0)], prefill_chunk_tokens=2)
    assert s._projection(_req(0, prompt=5, output=3)) == (5, 5.0)
    assert s._projection(_req(1, prompt=4, output=3, type_name="b")) == (4, 4.0)
    whole = _wait([("a", 5, 3, 1.0)])
    assert whole._projection(_req(0, prompt=5, output=3)) == (3, 5.0)
    # a decoding request: its KV now and its decode stages left
    r = _req(2, prompt=5, output=3)
    r.cached_tokens, r.decode_steps_done = 6, 1
    assert whole._projection(r) == (2, 6.0)
    # Nested WAIT: the expected end given stage 0 is 0.7 · 2 + 0.3 · 6 = 3.2 stages, so the line of
    # a 5-token prompt in chunks of 2 lasts 3.2 + 2 steps and ends at ⌈5 + 5.2⌉ = 11 tokens
    nested = _nested([(0, 2, 1.0, 0.3), (3, 6, 1.0, 0.0)], prefill_chunk_tokens=2)
    e, k = nested._projection(_req(3, prompt=5, output=3))
    assert (e, k) == (pytest.approx(5.2), 5.0)
    assert float(nested._end_blocks_tokens(e + k)) == 11.0
    # at its expected end, or past the chain's last stage, a decode has no step left to project
    last = _req(4, prompt=5, output=9)
    last.cached_tokens, last.decode_steps_done = 11, 6  # stage 6: E[l' | l' ≥ 6] = 6
    assert nested._projection(last) == (0.0, 11.0)
    last.cached_tokens, last.decode_steps_done = 13, 8  # past the chain: its own stage is the estimate
    assert nested._projection(last) == (0.0, 13.0)
    # WAIT: evicted before its last decode stage, a request recomputes l + l' tokens whose prefill
    # samples its last token: a line of the whole context and no step after it
    again = _req(5, prompt=5, output=3)
    again.token_times_s, again.decode_steps_done = [1.0, 2.0, 3.0], 2
    again.evict()
    assert again.prefill_target_tokens == 8 and whole._projection(again) == (0, 8.0)


@pytest.mark.parametrize("capacity", [8, 9, 10])
def test_a_lone_request_that_fits_is_admitted_though_its_projected_line_overshoots_the_cache(capacity):
    # prompt 5 in chunks of 2, output 3: the run holds at most 5 + 3 = 8 tokens, but the projected
    # line (whole context 5 from the start, 3 + 2 steps) ends at 10. With nothing resident no
    # admission can make a resident pause, so the look-ahead must not keep it out of an empty cache
    # (it did: the server stalled with the cache empty at C = 8 and 9).
    s = _wait([("a", 5, 3, 1.0)], capacity=capacity, prefill_chunk_tokens=2)
    r = _req(0, prompt=5, output=3)
    result = simulate(s, [r], AffineBatchTime(1.0, 0.0))
    assert r.completion_s == 6.0  # 3 prefill steps, then 3 decode stages (the first token ends the prefill)
    assert result.peak_kv_tokens == 8 and s.stats["decodes_paused"] == 0 and s.stats["admissions_deferred"] == 0


def test_an_evicted_request_leaves_its_group_count_and_comes_back_under_a_binding_cap():
    # resident cap ⌈2 · 1⌉ = 2, C = 10 tokens: both requests are admitted and decode until the cache is
    # full, then both pause and the newest (1) is evicted: the group counts one resident, so when
    # request 0 is done request 1 is admitted again (under the cap of 2) and finishes
    s = _nested([(0, 1, 1.0)], capacity=10, look_ahead=False, pace=False)
    assert s.resident_cap == 2 and s.group_caps == {"all": 2}
    s.add_request(_req(0, prompt=4, output=5))
    s.add_request(_req(1, prompt=4, output=5))
    assert _step(s, 0.0) == [(0, 4), (1, 4)]
    assert _step(s, 1.0) == [(0, 1), (1, 1)]  # 10 of 10 tokens
    assert _step(s, 2.0) == [(0, 1)]  # request 1 evicted, request 0 decodes
    assert s.stats["evictions"] == 1 and s._in_group == {"all": 1} and list(s._resident) == [0]
    now, done = 3.0, []
    while s.has_unfinished() and now < 40:
        batch = s.schedule(now)
        done += [r.request_id for r in s.complete_step(batch, now, now + 1.0)]
        now += 1.0
    assert done == [0, 1] and s._in_group == {"all": 0} and s.stats["evictions"] == 1


@pytest.mark.parametrize("capacity, admitted", [(16, [0, 1]), (15, [0])])
def test_work_conserving_ends_are_counted_in_whole_blocks_against_the_cache_in_tokens(capacity, admitted):
    # blocks of 4: prompt 4, output 3 ends at 7 tokens, 2 blocks (8 tokens) each. C = 16 (4 blocks)
    # holds both ends exactly, so the class cap of 1 does not bind; C = 15 rounds down to 3 blocks
    s = _wait_blocks([("a", 4, 3, 0.25)], capacity, 4, work_conserving=True)
    assert s.group_caps["a"] == 1
    for rid in (0, 1):
        s.add_request(_req(rid))
    assert _admitted(_step(s, 0.0)) == admitted


def test_a_prefill_chunk_with_no_free_block_counts_as_paused_and_holds_admission():
    # C = 10, block 1, chunks of 4, the authors' rule (no look-ahead): request 0 (prompt 4) and the
    # first chunk of request 1 (prompt 8) take 8 tokens; next step request 0 decodes into the 9th and
    # request 1's second chunk (4 tokens) finds 1 free: it waits with its cache, a pause like a
    # decode's, so the waiting request 2 is not admitted that step
    s = _nested([(0, 9, 1.0)], capacity=10, look_ahead=False, prefill_chunk_tokens=4, pace=False)
    s.add_request(_req(0, prompt=4, output=5))
    s.add_request(_req(1, prompt=8, output=2))
    assert _step(s, 0.0) == [(0, 4), (1, 4)]
    s.add_request(_req(2, arrival_s=0.5, prompt=1, output=1))
    assert _step(s, 1.0) == [(0, 1)]
    assert s.stats["decodes_paused"] == 1 and s._resident.keys() == {0, 1} and s._resident[1].cached_tokens == 4


def test_the_last_resort_eviction_puts_the_evicted_request_back_at_the_head_of_its_queue():
    # the case above, with request 2 (prompt 1) waiting since t = 1.5 when request 1 is evicted at
    # t = 2: request 1 goes back to the head of the queue, before request 2 (it arrived first and
    # had been served), so at t = 3 its recompute (4 + 1 + 1 = 6 tokens, 3 free) blocks the head
    # and request 2, which would fit, still waits behind it
    s = _nested([(0, 19, 1.0)], capacity=10, look_ahead=False, pace=False)
    s.add_request(_req(0, prompt=4, output=5))
    s.add_request(_req(1, prompt=4, output=5))
    assert _step(s, 0.0) == [(0, 4), (1, 4)]
    assert _step(s, 1.0) == [(0, 1), (1, 1)]
    s.add_request(_req(2, arrival_s=1.5, prompt=1, output=1))
    assert _step(s, 2.0) == [(0, 1)] and s.stats["evictions"] == 1
    assert _step(s, 3.0) == [(0, 1)]
    assert s._resident.keys() == {0}


def test_per_class_capped_nested_prices_each_request_by_its_own_instances_lengths():
    # instance "short" ends at stage 4, "long" at stage 9 (one segment each, every request to its end):
    # a request's projected final KV is its prompt plus its own instance's expected end
    from runtime.policy_file import RuntimeInstance

    inst = (RuntimeInstance(10, ("short",), (RuntimeSegment(0, 4, 2),)), RuntimeInstance(100, ("long",), (RuntimeSegment(0, 9, 1),)))
    policy = RuntimePolicy("nested_wait", "capped", segments=inst[0].segments, instances=inst)
    s = make_scheduler("nested-wait-capped", KVBlockManager(10_000, 1), policy=policy)
    assert s._final_tokens(Request(0, 0.0, 12, 4, "short")) == 12 + 4
    assert s._final_tokens(Request(1, 0.0, 90, 9, "long")) == 90 + 9
    assert s._final_tokens(Request(2, 0.0, 70, 9, "other")) == 70 + 9  # no instance names it: the nearest prefill (100)
    assert s._final_tokens(Request(3, 0.0, 40, 4, "other")) == 40 + 4  # nearer 10 than 100


def test_instances_are_routed_by_type_then_by_the_nearest_prefill_smaller_on_a_tie():
    from runtime.policy_file import InstanceRouter, RuntimeInstance

    router = InstanceRouter((RuntimeInstance(10, ("a",), (RuntimeSegment(0, 4, 2),)), RuntimeInstance(30, ("b", "a"), (RuntimeSegment(0, 4, 1),))))
    assert [router.index_of(Request(i, 0.0, p, 3, t)) for i, (p, t) in enumerate([(30, "a"), (10, "b"), (20, None), (21, "x"), (19, "x")])] == [0, 1, 0, 1, 0]


def test_a_resident_cap_below_the_class_caps_admits_exactly_that_many():
    # class caps of 6 each; the resident cap of 3 binds first (requests 0-2 admitted, 3 waits)
    s = _wait([("a", 4, 2, 2), ("b", 4, 2, 2)], pace=False, work_conserving=False, resident_cap=3)
    assert s.group_caps == {"a": 6, "b": 6} and s.resident_cap == 3
    for i in range(4):
        s.add_request(_req(i, arrival_s=0.1 * i, output=2, type_name="ab"[i % 2]))
    assert _step(s, 0.0) == [(0, 4), (1, 4), (2, 4)]
