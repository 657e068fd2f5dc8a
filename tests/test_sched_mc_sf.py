"""MC-SF (arXiv 2502.07115): shortest predicted output first under a look-ahead memory check."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers import make_scheduler


def future_holdings(batch) -> list[tuple[int, int]]:
    """(tokens held this step, last step ahead) of every request in a just-scheduled batch."""
    out = []
    for w in batch.items:
        r = w.request
        steps_left = r.output_tokens - r.decode_steps_done  # decode stages still to run
        if w.is_prefill:
            out.append((w.context_tokens + w.num_new_tokens, steps_left))
        else:
            out.append((r.cached_tokens + 1, steps_left - 1))
    return out


def projected_peak_tokens(holdings: list[tuple[int, int]]) -> int:
    """Brute force: the largest total KV over every future step, each request growing one token a step."""
    horizon = max(last for _, last in holdings)
    return max(sum(h + k for h, last in holdings if k <= last) for k in range(horizon + 1))


def drive(scheduler, arrivals: list[tuple[int, Request]], on_batch) -> None:
    """Add each request at its step number, schedule until everything finished."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    i, step = 0, 0
    while i < len(arrivals) or scheduler.has_unfinished():
        while i < len(arrivals) and arrivals[i][0] <= step:
            scheduler.add_request(arrivals[i][1])
            i += 1
        batch = scheduler.schedule(float(step))
        if batch.items:
            on_batch(batch)
            scheduler.complete_step(batch, float(step), step + 1.0)
        step += 1


def test_admits_shortest_output_first():
    s = make_scheduler("mc-sf", KVBlockManager(1000, block_size=1))
    for rid, output in enumerate([5, 1, 3]):
        s.add_request(Request(rid, 0.0, prompt_tokens=4, output_tokens=output))
    assert [w.request.output_tokens for w in s.schedule(0.0).items] == [1, 3, 5]


def test_stops_at_the_first_candidate_whose_future_peak_overflows():
    s = make_scheduler("mc-sf", KVBlockManager(20, block_size=1))
    s.add_request(Request(0, 0.0, prompt_tokens=15, output_tokens=2))  # holds 15, 16, 17
    s.add_request(Request(1, 0.0, prompt_tokens=2, output_tokens=10))  # with it: 17 + 4 = 21 at step 2
    s.add_request(Request(2, 0.0, prompt_tokens=1, output_tokens=11))  # would fit (peak 20), but waits
    batch = s.schedule(0.0)
    assert [w.request.request_id for w in batch.items] == [0]
    assert projected_peak_tokens([(15, 2), (2, 10)]) == 21 and projected_peak_tokens([(15, 2), (1, 11)]) == 20


def test_memory_now_is_not_enough_the_future_peak_decides():
    s = make_scheduler("mc-sf", KVBlockManager(12, block_size=1))
    s.add_request(Request(0, 0.0, prompt_tokens=2, output_tokens=8))  # grows to 10
    s.add_request(Request(1, 0.0, prompt_tokens=2, output_tokens=9))  # fits now (4 of 12), not later
    assert [w.request.request_id for w in s.schedule(0.0).items] == [0]


@settings(max_examples=30, deadline=None)
@given(
    jobs=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=40),
    capacity=st.integers(61, 150),
)
def test_admitted_set_never_overflows_and_every_refusal_was_needed(jobs, capacity):
    """Token-level (block size 1): the projection is exact, so the check is both safe and tight."""
    kv = KVBlockManager(capacity, block_size=1)
    s = make_scheduler("mc-sf", kv)
    requests = [Request(i, float(step), prompt, output) for i, (step, prompt, output) in enumerate(jobs)]

    def check(batch):
        holdings = future_holdings(batch)
        assert not batch.evicted and projected_peak_tokens(holdings) <= capacity
        if s.shortest_first and s.running:  # the head was refused: it would have overflowed
            head = s.shortest_first[0][2]
            candidate = (head.prompt_tokens, head.output_tokens)
            assert projected_peak_tokens(holdings + [candidate]) > capacity

    drive(s, [(int(r.arrival_s), r) for r in requests], check)
    assert all(r.decode_steps_done == r.output_tokens and r.restarts == 0 for r in requests)
    assert kv.free_blocks == kv.num_blocks


@settings(max_examples=20, deadline=None)
@given(
    jobs=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 60), st.integers(1, 60)), min_size=1, max_size=40),
    block_size=st.sampled_from([4, 16]),
)
def test_blocks_never_overflow_and_a_lone_request_always_runs(jobs, block_size):
    kv = KVBlockManager(128, block_size=block_size)
    s = make_scheduler("mc-sf", kv)
    requests = [Request(i, float(step), prompt, output) for i, (step, prompt, output) in enumerate(jobs)]

    def check(batch):
        assert not batch.evicted and kv.used_blocks <= kv.num_blocks

    drive(s, [(int(r.arrival_s), r) for r in requests], check)
    assert all(r.decode_steps_done == r.output_tokens and r.restarts == 0 for r in requests)


def test_shortest_first_counts_the_decode_stages_left_of_a_request_with_progress():
    # a request handed over after an eviction elsewhere (8 of its 10 tokens done, recompute of
    # 4 + 8 + 1 tokens pending) has 2 stages left: it goes ahead of a fresh one with 5
    handed = Request(0, 0.0, prompt_tokens=4, output_tokens=10)
    handed.decode_steps_done, handed.token_times_s = 8, [0.1 * k for k in range(9)]
    handed.evict()
    assert handed.prefill_target_tokens == 13 and handed.cached_tokens == 0
    s = make_scheduler("mc-sf", KVBlockManager(1000, block_size=1))
    s.add_request(Request(1, 0.0, prompt_tokens=4, output_tokens=5))
    s.add_request(Request(2, 0.0, prompt_tokens=4, output_tokens=3))
    s.add_request(handed)
    batch = s.schedule(0.0)
    assert [(w.request.request_id, w.num_new_tokens) for w in batch.items] == [(0, 13), (2, 4), (1, 4)]
