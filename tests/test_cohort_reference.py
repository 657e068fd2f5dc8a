"""The shipped WAIT and Nested WAIT cohort schedulers make, step by step, exactly the batches of the
paper's cohort rule as `tests/cohort_reference.py` states it, over random workloads (Hypothesis)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from cohort_reference import ReferenceGroup  # noqa: E402

from runtime.kv_blocks import KVBlockManager  # noqa: E402
from runtime.policy_file import RuntimeClass, RuntimeInstance, RuntimePolicy, RuntimeSegment  # noqa: E402
from runtime.request import Request  # noqa: E402
from runtime.schedulers import make_scheduler  # noqa: E402

AMPLE_KV_TOKENS = 1 << 20


def _drive(scheduler, groups_of, requests, max_steps: int = 2000) -> int:
    """Feed arrivals at integer times, one step per time unit; compare every batch. Returns steps."""
    pending = sorted(requests, key=lambda r: (r.arrival_s, r.request_id))
    i, now, steps, draining = 0, 0.0, 0, False
    while steps < max_steps:
        while i < len(pending) and pending[i].arrival_s <= now:
            r = pending[i]
            scheduler.add_request(r)
            groups_of(r).queues[0].append(r)
            i += 1
        if i == len(pending) and not draining:
            scheduler.on_arrivals_ended()
            draining = True
        expected = {}
        for g in {id(g): g for g in map(groups_of, requests)}.values():
            for r, n in g.step(draining):
                expected[r.request_id] = n
        batch = scheduler.schedule(now)
        got = {w.request.request_id: w.num_new_tokens for w in batch.items}
        assert not batch.evicted
        assert got == expected, f"step {steps} at t={now}: shipped {sorted(got.items())} vs reference {sorted(expected.items())}"
        if batch.items:
            scheduler.complete_step(batch, now, now + 1.0)
        elif i == len(pending):
            break
        now += 1.0
        steps += 1
    assert all(r.completion_s is not None for r in requests)
    return steps


classes_st = st.lists(
    st.tuples(st.integers(1, 24), st.integers(1, 6), st.integers(1, 4)),  # prefill, decode, threshold
    min_size=1, max_size=3, unique_by=lambda c: (c[0], c[1]),
)


@settings(max_examples=60, deadline=None)
@given(classes_st, st.lists(st.tuples(st.integers(0, 12), st.integers(0, 2)), min_size=1, max_size=40))
def test_wait_cohort_batches_match_the_reference(classes, arrivals):
    policy = RuntimePolicy("wait", "cohort", math.inf, classes=tuple(
        RuntimeClass(f"c{j}", p, d, n) for j, (p, d, n) in enumerate(classes)))
    groups = [ReferenceGroup([(0, d, n)]) for _, d, n in classes]
    requests = []
    for rid, (t, j) in enumerate(arrivals):
        j %= len(classes)
        p, d, _ = classes[j]
        requests.append(Request(rid, float(t), p, d, f"c{j}"))
    scheduler = make_scheduler("wait", KVBlockManager(AMPLE_KV_TOKENS, 16), policy=policy)
    _drive(scheduler, lambda r: groups[int(r.type_name[1:])], requests)


@st.composite
def nested_case(draw):
    cuts = sorted(draw(st.sets(st.integers(1, 8), min_size=1, max_size=3)))
    thresholds = sorted(draw(st.lists(st.integers(1, 4), min_size=len(cuts), max_size=len(cuts))), reverse=True)  # non-increasing
    segments, first = [], 0
    for cut, n in zip(cuts, thresholds):
        segments.append((first, cut, n))
        first = cut + 1
    arrivals = draw(st.lists(
        st.tuples(st.integers(0, 12), st.integers(1, 24), st.integers(1, cuts[-1] + 3)),  # time, prompt, output
        min_size=1, max_size=40))
    return segments, arrivals


@settings(max_examples=60, deadline=None)
@given(nested_case())
def test_nested_wait_cohort_batches_match_the_reference(case):
    segments, arrivals = case
    policy = RuntimePolicy("nested_wait", "cohort", math.inf, segments=tuple(RuntimeSegment(f, l, n) for f, l, n in segments))
    group = ReferenceGroup(segments)
    requests = [Request(rid, float(t), p, o) for rid, (t, p, o) in enumerate(arrivals)]
    scheduler = make_scheduler("nested-wait", KVBlockManager(AMPLE_KV_TOKENS, 16), policy=policy)
    _drive(scheduler, lambda r: group, requests)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.sampled_from([8, 20]), st.integers(1, 6)), min_size=1, max_size=40),
       st.integers(1, 3), st.integers(2, 4))
def test_nested_wait_instances_match_the_reference(arrivals, n_short, n_long):
    # one instance per prefill length, each with its own two segments
    inst = {8: [(0, 2, n_short), (3, 6, 1)], 20: [(0, 3, n_long), (4, 6, 2)]}
    policy = RuntimePolicy("nested_wait", "cohort", math.inf, segments=tuple(RuntimeSegment(*s) for s in inst[8]),
                           instances=tuple(RuntimeInstance(p, (f"p{p}",), tuple(RuntimeSegment(*s) for s in segs)) for p, segs in inst.items()))
    groups = {p: ReferenceGroup(segs) for p, segs in inst.items()}
    requests = [Request(rid, float(t), p, o, f"p{p}") for rid, (t, p, o) in enumerate(arrivals)]
    scheduler = make_scheduler("nested-wait", KVBlockManager(AMPLE_KV_TOKENS, 16), policy=policy)
    _drive(scheduler, lambda r: groups[r.prompt_tokens], requests)
