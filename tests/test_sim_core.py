"""The simulator's core: batch shape bookkeeping, KV blocks, overflow and deadlock detection,
horizons, and replicas behind a router."""

from __future__ import annotations

import pytest

from fluid.batch_time import AffineBatchTime, BatchShape
from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager, KVCapacityError
from runtime.request import Request
from runtime.router import combine_results, route_static, simulate_fleet
from runtime.schedulers.base import Batch, Scheduler, ScheduledWork
from runtime.sim import MemoryOverflowError, SchedulerDeadlockError, simulate
from sim_helpers import build_scheduler, small_workload

BT = AffineBatchTime(0.01, 1e-5)


class _Probe(Scheduler):
    """A scheduler that schedules nothing: the tests drive its base-class bookkeeping directly."""

    name = "probe"

    def add_request(self, request): ...
    def schedule(self, now_s): ...
    def has_unfinished(self): ...


def test_incremental_shape_equals_a_recount():
    kv = KVBlockManager(10_000, 16)
    sched = _Probe(kv)
    a, b = Request(0, 0.0, 100, 5), Request(1, 0.0, 30, 5)
    b.cached_tokens = 30  # b is decoding
    batch = Batch()
    sched.reserve(batch, a, 64)
    sched.reserve(batch, b, 1)
    assert batch.shape() == batch._recount()
    assert batch.shape().num_prefills == 1 and batch.shape().num_decodes == 1
    assert batch.shape().kv_tokens == 64 + 31
    batch.items.append(ScheduledWork(Request(2, 0.0, 8, 1), 8, 0))  # appended directly: recounted
    assert batch.shape().num_prefills == 2


def test_kv_blocks_conserve_and_refuse_overflow():
    kv = KVBlockManager(64, 16, track_block_ids=True)
    r = Request(0, 0.0, 40, 3)
    assert kv.blocks_needed(r, 40) == 3 and kv.can_grow(r, 40)
    kv.grow(r, 40)
    assert kv.free_blocks == 1 and len(kv.block_table(r)) == 3
    r.cached_tokens = 40
    kv.grow(r, 8)  # 48 tokens still fit in 3 blocks
    assert kv.free_blocks == 1
    other = Request(1, 0.0, 40, 3)
    assert not kv.can_grow(other, 40)
    with pytest.raises(KVCapacityError):
        kv.grow(other, 40)
    kv.audit([r, other])
    r.cached_tokens = 60  # more than its blocks hold: the audit must see it
    with pytest.raises(KVCapacityError):
        kv.audit([r])
    kv.release(r)
    assert kv.free_blocks == kv.num_blocks == 4


def test_overflow_is_never_hidden():
    class Cheater(Scheduler):
        """Takes blocks behind the manager's back."""

        name = "cheater"

        def __init__(self, kv):
            super().__init__(kv)
            self.queue = []

        def add_request(self, request):
            self.queue.append(request)

        def has_unfinished(self):
            return bool(self.queue)

        def schedule(self, now_s):
            batch = Batch()
            r = self.queue[0]
            self.reserve(batch, r, r.prefill_remaining if r.in_prefill else 1)
            self.kv.free_blocks -= 10  # a bug: memory taken without `grow`
            return batch

    with pytest.raises(MemoryOverflowError):
        simulate(Cheater(KVBlockManager(64, 16)), [Request(0, 0.0, 10, 2)], BT)


def test_idle_scheduler_with_work_is_a_deadlock():
    class Stuck(Scheduler):
        name = "stuck"

        def add_request(self, request):
            self.r = request

        def schedule(self, now_s):
            return Batch()

        def has_unfinished(self):
            return True

    with pytest.raises(SchedulerDeadlockError):
        simulate(Stuck(KVBlockManager(64, 16)), [Request(0, 0.0, 10, 2)], BT)


def test_horizon_stops_the_clock_and_must_be_positive():
    workload = small_workload([(20, 20)], [50.0], capacity_tokens=5000)
    from runtime.arrivals import make_requests

    reqs = make_requests(workload, 200, 0)
    res = simulate(build_scheduler("fcfs", workload), reqs, BT, horizon_s=0.5)
    assert res.end_s < 0.5 + 0.2 and any(r.completion_s is None for r in reqs)
    with pytest.raises(InputError):
        simulate(build_scheduler("fcfs", workload), reqs, BT, horizon_s=0)


def _requests(n, rate=40.0):
    import numpy as np

    t = np.cumsum(np.random.default_rng(1).exponential(1 / rate, n))
    return [Request(i, float(t[i]), 30, 20, "t0" if i % 3 else "t1") for i in range(n)]


def test_a_traced_run_counts_each_steps_requests_by_type():
    from runtime.schedulers import make_scheduler

    # one prefill step, then one step per output token; a request without a type counts as "?"
    reqs = [Request(0, 0.0, 4, 3, "a"), Request(1, 0.0, 4, 3, "a"), Request(2, 0.0, 4, 1, "b"), Request(3, 0.0, 4, 2)]
    res = simulate(make_scheduler("fcfs", KVBlockManager(1000, 16)), reqs, AffineBatchTime(0.01, 1e-5), trace=True)
    assert res.steps.type_counts == [{"a": 2, "b": 1, "?": 1}, {"a": 2, "b": 1, "?": 1}, {"a": 2, "?": 1}, {"a": 2}]
    untraced = simulate(make_scheduler("fcfs", KVBlockManager(1000, 16)), [Request(0, 0.0, 4, 3, "a")],
                        AffineBatchTime(0.01, 1e-5))
    assert untraced.steps.type_counts is None  # counting costs a pass over every batch: only on request


def test_static_routers():
    reqs = _requests(300)
    groups = route_static(reqs, 3, "round-robin")
    assert [len(g) for g in groups] == [100, 100, 100]
    split = {"t0": [1.0, 0.0, 0.0], "t1": [0.0, 0.5, 0.5]}
    groups = route_static(reqs, 3, "split", seed=2, split=split)
    assert all(r.type_name == "t0" for r in groups[0]) and len(groups[0]) == 200
    assert all(r.type_name == "t1" for r in groups[1] + groups[2]) and 30 < len(groups[1]) < 70
    with pytest.raises(InputError):
        route_static(reqs, 3, "split", split={"t0": [0.5, 0.5, 0.5], "t1": [1, 0, 0]})


@pytest.mark.parametrize("router", ["round-robin", "random", "least-work"])
def test_fleet_completes_everything_on_every_router(router):
    workload = small_workload([(30, 20)], [40.0], capacity_tokens=3000)
    reqs = _requests(400, rate=120.0)
    results = simulate_fleet(lambda g: build_scheduler("sarathi", workload), reqs, BT, num_replicas=3, router=router, seed=4)
    assert sorted(r.request_id for res in results for r in res.requests) == list(range(400))
    assert all(r.completion_s is not None for r in reqs)
    assert all(res.peak_kv_tokens <= 3000 for res in results)
    combined = combine_results(results)
    assert combined.num_steps == sum(res.num_steps for res in results) and len(combined.requests) == 400


def test_least_work_balances_better_than_random_under_skew():
    """One replica gets the long requests first; least-work sends the rest elsewhere."""
    workload = small_workload([(30, 20)], [40.0], capacity_tokens=3000)
    reqs = [Request(i, i * 0.002, 30, 200 if i < 5 else 5) for i in range(60)]
    results = simulate_fleet(lambda g: build_scheduler("fcfs", workload), reqs, BT, num_replicas=2, router="least-work")
    counts = sorted(len(res.requests) for res in results)
    assert counts[0] < 25  # the replica holding the long jobs takes few of the short ones


def test_try_reserve_checks_then_reserves():
    kv = KVBlockManager(64, 16)
    sched, batch = _Probe(kv), Batch()
    a, b = Request(0, 0.0, 40, 2), Request(1, 0.0, 40, 2)
    assert sched.try_reserve(batch, a, 40) and kv.free_blocks == 1
    assert not sched.try_reserve(batch, b, 40)  # 3 blocks needed, 1 free: nothing changes
    assert kv.free_blocks == 1 and len(batch.items) == 1 and batch.shape() == batch._recount()


def test_complete_step_matches_request_advance():
    """The inlined decode path of complete_step leaves requests as Request.advance would."""
    kv = KVBlockManager(1000, 16)
    sched = _Probe(kv)
    fast, slow = Request(0, 0.0, 5, 3), Request(1, 0.0, 5, 3)
    for step, n in enumerate([3, 2, 1, 1, 1]):
        batch = Batch()
        sched.reserve(batch, fast, n)
        done = sched.complete_step(batch, float(step), step + 1.0)
        slow.advance(n, step + 1.0)
        assert (fast.cached_tokens, fast.decode_steps_done, fast.token_times_s) == (slow.cached_tokens, slow.decode_steps_done, slow.token_times_s)
    assert done == [fast] and fast.completion_s == slow.completion_s == 5.0 and kv.free_blocks == kv.num_blocks


def _wait_with_drain(max_wait_s: float):
    from runtime.policy_file import RuntimeClass, RuntimePolicy
    from runtime.schedulers import make_scheduler

    policy = RuntimePolicy("wait", "cohort", max_wait_s, classes=(RuntimeClass("a", 4, 2, 2),))
    return make_scheduler("wait", KVBlockManager(1000, 1), policy=policy)


@pytest.mark.parametrize(("second_arrival_s", "first_start_s"), [(1.0, 0.05), (0.02, 0.02)])
def test_idle_clock_wakes_at_the_earlier_of_the_drain_timer_and_the_next_arrival(second_arrival_s, first_start_s):
    # threshold 2, drain after 0.05 s: alone, request 0 waits for its drain timer (0.05) unless the
    # second prompt arrives first and completes the cohort (0.02); the clock must not jump to the later event
    reqs = [Request(0, 0.0, 4, 2, "a"), Request(1, second_arrival_s, 4, 2, "a")]
    result = simulate(_wait_with_drain(0.05), reqs, AffineBatchTime(0.5, 0.0))
    assert result.steps.start_s[0] == pytest.approx(first_start_s, abs=1e-12)
    assert reqs[0].first_scheduled_s == pytest.approx(first_start_s, abs=1e-12)
    assert all(r.finished for r in reqs)


def test_idle_clock_with_a_timer_due_now_waits_for_the_arrival():
    # max_wait 0: the timer is due at once (not later than now), so only the arrival can wake the
    # clock; and a drain with wait 0 serves request 0 alone at its own arrival
    reqs = [Request(0, 0.0, 4, 2, "a"), Request(1, 3.0, 4, 2, "a")]
    result = simulate(_wait_with_drain(0.0), reqs, AffineBatchTime(0.5, 0.0))
    assert result.steps.start_s[0] == 0.0 and reqs[1].first_scheduled_s == 3.0


def test_no_step_starts_at_or_after_the_horizon():
    # steps of exactly 1 s from t = 0: with a horizon of 2 s the steps at 0 and 1 run, the one
    # that would start at 2.0 does not
    from runtime.schedulers import make_scheduler

    reqs = [Request(0, 0.0, 2, 5)]
    result = simulate(make_scheduler("fcfs", KVBlockManager(100, 1)), reqs, AffineBatchTime(1.0, 0.0), horizon_s=2.0)
    assert result.num_steps == 2 and list(result.steps.start_s) == [0.0, 1.0]
    assert result.end_s == 2.0 and not reqs[0].finished


def test_max_steps_stops_after_exactly_that_many_steps():
    from runtime.schedulers import make_scheduler

    with pytest.raises(SchedulerDeadlockError, match="ran 3 steps"):
        simulate(make_scheduler("fcfs", KVBlockManager(100, 1)), [Request(0, 0.0, 2, 5)], BT, max_steps=3)
    result = simulate(make_scheduler("fcfs", KVBlockManager(100, 1)), [Request(0, 0.0, 2, 5)], BT, max_steps=7)
    assert result.num_steps == 6  # the prefill and 5 decodes
    # a run that needs exactly max_steps steps finishes: the limit is for work left undone
    req = Request(0, 0.0, 2, 5)
    exact = simulate(make_scheduler("fcfs", KVBlockManager(100, 1)), [req], BT, max_steps=6)
    assert exact.num_steps == 6 and req.finished


def test_evictions_are_stamped_with_the_step_that_evicted():
    from runtime.schedulers import make_scheduler

    s = make_scheduler("fcfs", KVBlockManager(9, 1))
    reqs = [Request(rid, 0.0, 3, 4) for rid in range(3)]
    simulate(s, reqs, AffineBatchTime(1.0, 0.0))
    # all three prefill at 0 (9 of 9 tokens); at t = 1 request 2, the newest, is evicted
    assert reqs[2].eviction_times_s[0] == 1.0 and reqs[0].eviction_times_s == []


def test_kv_audit_sees_a_lost_block_and_a_negative_free_count_each_alone():
    kv = KVBlockManager(64, 16)
    r = Request(0, 0.0, 40, 3)
    kv.grow(r, 40)
    kv.audit([r])
    kv.free_blocks -= 1  # a block vanished: 3 held + 0 free != 4, nothing negative
    with pytest.raises(KVCapacityError, match="3 held \\+ 0 free != 4 blocks"):
        kv.audit([r])
    kv.free_blocks = -1
    kv._held[r.request_id] = 5  # sums to 4 but the free count is negative
    with pytest.raises(KVCapacityError, match="5 held \\+ -1 free"):
        kv.audit([r])


def test_kv_audit_sees_cached_tokens_of_a_request_holding_no_block():
    kv = KVBlockManager(64, 16)
    r = Request(0, 0.0, 40, 3)
    kv.audit([r])  # nothing cached, nothing held: consistent
    r.cached_tokens = 1  # one token cached in no block at all
    with pytest.raises(KVCapacityError, match="request 0 caches 1 tokens in 0 blocks of 16"):
        kv.audit([r])
    r.completion_s = 1.0  # a completed request keeps its count after releasing: not checked
    kv.audit([r])


def test_a_batch_reads_as_its_work_and_evictions_not_its_running_totals():
    a, b = Batch(), Batch()
    r = Request(0, 0.0, 8, 1)
    a.add(ScheduledWork(r, 8, 0))  # counted incrementally
    b.items.append(ScheduledWork(r, 8, 0))  # appended directly: the totals stay at zero
    assert a.shape() == b.shape() and repr(a) == repr(b)
    assert repr(a) == f"Batch(items={a.items!r}, evicted=[])"


def test_shape_of_one_item_added_and_one_appended_directly_counts_both_by_hand():
    batch = Batch()
    decoding = Request(0, 0.0, 30, 5)
    decoding.cached_tokens = 30
    batch.add(ScheduledWork(decoding, 1, 30))
    assert batch.shape() == BatchShape(1, 31, 1, 0, 0, 1)  # decode-only: ⌈31/64⌉ key tiles
    chunked = Request(2, 0.0, 10, 1)
    chunked.cached_tokens = 4
    batch.add(ScheduledWork(chunked, 4, 4))  # a middle chunk: 4 new tokens on 4 cached, pairs 4 · 8
    assert batch.shape() == BatchShape(5, 39, 1, 1, 32, 2)  # beside a chunk: ⌈30/64⌉ + the fresh key's tile
    batch.items.append(ScheduledWork(Request(1, 0.0, 8, 1), 8, 0))  # not counted: shape() must recount
    assert batch.shape() == BatchShape(13, 47, 1, 2, 32 + 64, 2)  # the new prefill's pairs: 8 · (0 + 8)
    # one added, one appended: the count of added items must not pass for the number of items
    other = Batch()
    other.add(ScheduledWork(decoding, 1, 30))
    other.items.append(ScheduledWork(Request(3, 0.0, 8, 1), 8, 0))
    assert other.shape() == BatchShape(9, 39, 1, 1, 64, 2)
