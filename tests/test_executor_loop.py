"""The shared executor loop (`runtime/executor.py`) as the simulator and the least-work router
drive it: peak KV while a step holds its memory, eviction times, the deadlock and overflow errors;
and the measurement window under a horizon (issue: the window ran to the last arrival past the stop)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sim_helpers import build_scheduler, small_workload  # noqa: E402

from fluid.batch_time import AffineBatchTime  # noqa: E402
from runtime.arrivals import make_requests  # noqa: E402
from runtime.kv_blocks import KVBlockManager  # noqa: E402
from runtime.metrics import summarize, warmup_cut_s  # noqa: E402
from runtime.request import Request  # noqa: E402
from runtime.router import combine_results, simulate_fleet  # noqa: E402
from runtime.schedulers import make_scheduler  # noqa: E402
from runtime.schedulers.base import Batch, Scheduler  # noqa: E402
from runtime.sim import MemoryOverflowError, SchedulerDeadlockError, simulate  # noqa: E402
from runtime.simrun import SimConfig, run_simulation  # noqa: E402

BT = AffineBatchTime(d0_s=0.01, d1_s_per_token=1e-4)


def _single(scheduler, requests, **kw):
    return simulate(scheduler, requests, BT, **kw)


def _least_work(scheduler, requests, **kw):
    results = simulate_fleet(lambda g: scheduler, requests, BT, num_replicas=1, router="least-work", **kw)
    return results[0]


EXECUTORS = [_single, _least_work]


@pytest.mark.parametrize("run", EXECUTORS)
def test_peak_kv_is_taken_while_the_step_holds_its_memory(run):
    # prompt 16 = one block; the decode step needs a second block and then finishes and frees both:
    # the step held 32 tokens although nothing is held once it ends
    req = Request(0, 0.0, 16, 1)
    res = run(make_scheduler("fcfs", KVBlockManager(64, 16)), [req])
    assert req.completion_s is not None
    assert res.steps.kv_used_tokens == [16, 32]
    assert res.peak_kv_tokens == 32
    assert summarize(res, scheduler="fcfs").peak_kv_tokens == 32


@pytest.mark.parametrize("run", EXECUTORS)
def test_eviction_times_are_stamped_by_the_executor(run):
    workload = small_workload([(40, 30)], [200.0], capacity_tokens=400)
    reqs = make_requests(workload, 60, 0)
    run(build_scheduler("fcfs", workload), reqs)
    evicted = [r for r in reqs if r.restarts]
    assert evicted, "the tight memory must force evictions"
    for r in reqs:
        assert len(r.eviction_times_s) == r.restarts
        assert all(r.arrival_s <= t <= r.completion_s for t in r.eviction_times_s)


class _Stuck(Scheduler):
    name = "stuck"

    def add_request(self, request):
        self.r = request

    def schedule(self, now_s):
        return Batch()

    def has_unfinished(self):
        return True


class _Cheater(Scheduler):
    name = "cheater"

    def add_request(self, request):
        self.r = request

    def has_unfinished(self):
        return self.r.completion_s is None

    def schedule(self, now_s):
        batch = Batch()
        r = self.r
        self.reserve(batch, r, r.prefill_remaining if r.in_prefill else 1)
        self.kv.free_blocks -= 10  # a bug: memory taken without `grow`
        return batch


@pytest.mark.parametrize("run", EXECUTORS)
def test_idle_scheduler_with_work_is_the_one_deadlock_error(run):
    with pytest.raises(SchedulerDeadlockError, match="idle with unfinished requests"):
        run(_Stuck(KVBlockManager(64, 16)), [Request(0, 0.0, 10, 2)])


class _DueNow(_Stuck):
    """Stuck, with a timer it says is due at the very time it was asked (and still does nothing)."""

    name = "due-now"

    def schedule(self, now_s):
        self.calls = getattr(self, "calls", 0) + 1
        assert self.calls < 100, f"woken {self.calls} times at t = {now_s}"  # a loop that would never end
        self.now_s = now_s
        return Batch()

    def next_wakeup_s(self):
        return getattr(self, "now_s", None)


@pytest.mark.parametrize("run", EXECUTORS)
def test_a_timer_due_at_the_current_time_is_no_reason_to_wake_again(run):
    """Only a time after now counts as a wake-up: a timer due exactly now that the scheduler did not
    act on would wake the loop at the same instant for ever; it is the deadlock error instead."""
    with pytest.raises(SchedulerDeadlockError, match="idle with unfinished requests"):
        run(_DueNow(KVBlockManager(64, 16)), [Request(0, 0.0, 10, 2)])


@pytest.mark.parametrize("run", EXECUTORS)
def test_memory_taken_behind_the_managers_back_is_caught(run):
    with pytest.raises(MemoryOverflowError):
        run(_Cheater(KVBlockManager(64, 16)), [Request(0, 0.0, 10, 2)])


def _steady_workload():
    # 50 req/s of (20, 20) on a fast server: steady state long before t = 10 s
    return small_workload([(20, 20)], [50.0], capacity_tokens=20000)


def test_horizon_window_stops_at_the_clock_stop():
    workload = _steady_workload()
    full = run_simulation(SimConfig(workload, "fcfs", num_requests=3000, seed=0)).summary
    cut = run_simulation(SimConfig(workload, "fcfs", num_requests=3000, seed=0, horizon_s=20.0)).summary
    assert full.window_stop_s > 50  # the last arrival of 3000 at 50/s
    assert cut.window_stop_s == 20.0 and cut.horizon_s == 20.0
    assert cut.decode_throughput_tokens_per_s == pytest.approx(full.decode_throughput_tokens_per_s, rel=0.05)


def test_warmup_cut_is_a_fraction_of_the_span_seen_before_the_horizon():
    workload = _steady_workload()
    cut = run_simulation(SimConfig(workload, "fcfs", num_requests=3000, seed=0, horizon_s=20.0)).summary
    assert cut.warmup_s == pytest.approx(2.0)  # 10 % of 20 s, not of the ~60 s arrival span
    reqs = [Request(i, float(i), 1, 1) for i in range(10)]  # last arrival 9 s
    assert warmup_cut_s(reqs, 0.5) == 4.5
    assert warmup_cut_s(reqs, 0.5, horizon_s=4.0) == 2.0
    assert warmup_cut_s(reqs, 0.5, horizon_s=9.0) == 4.5  # the equality case: the stop at the last arrival


def test_least_work_with_a_horizon_keeps_every_request_in_the_summary():
    workload = _steady_workload()
    config = SimConfig(workload, "fcfs", num_requests=2000, seed=0, replicas=2, router="least-work", horizon_s=10.0)
    out = run_simulation(config)
    s = out.summary
    assert s.num_requests == 2000
    assert 0 < s.completed < 2000
    assert s.window_stop_s == 10.0
    assert len({r.request_id for r in out.requests}) == 2000
    # the same fleet under round-robin counts the same requests
    rr = run_simulation(SimConfig(workload, "fcfs", num_requests=2000, seed=0, replicas=2, horizon_s=10.0)).summary
    assert rr.num_requests == 2000
    assert s.decode_throughput_tokens_per_s == pytest.approx(rr.decode_throughput_tokens_per_s, rel=0.05)


def test_combined_fleet_result_keeps_the_horizon():
    workload = _steady_workload()
    reqs = make_requests(workload, 500, 0)
    results = simulate_fleet(lambda g: build_scheduler("fcfs", workload), reqs, BT, num_replicas=2, router="least-work", horizon_s=3.0)
    assert all(r.end_s == 3.0 for r in results)
    assert combine_results(results).horizon_s == 3.0


def test_least_work_counts_a_recompute_of_l_plus_s_plus_1_tokens():
    """The least-work router's outstanding work: prefill left plus decodes left. After an eviction
    the request re-prefills l + s + 1 tokens (Request.evict), so (10 + 2 + 1) + (5 − 2) = 16."""
    from runtime.router import _outstanding_tokens

    r = Request(0, 0.0, 10, 5)
    r.cached_tokens, r.decode_steps_done, r.token_times_s = 12, 2, [0.1, 0.2]
    assert _outstanding_tokens([r]) == 3  # decoding: only the 3 decodes left
    r.evict()
    assert _outstanding_tokens([r]) == 16


def test_a_server_loop_holds_no_kv_before_its_first_step_and_logs_what_its_step_held():
    from runtime.executor import ServerLoop

    loop = ServerLoop(make_scheduler("fcfs", KVBlockManager(64, block_size=4)))
    assert (loop.held_kv_tokens, loop.peak_kv_tokens, loop.num_steps) == (0, 0, 0)
    assert loop.begin(0.0) is None and loop.held_kv_tokens == 0  # nothing to run: nothing held
    loop.scheduler.add_request(Request(0, 0.0, 5, 2))
    batch = loop.begin(0.0)
    assert loop.held_kv_tokens == 8  # 5 prompt tokens in blocks of 4
    loop.finish(batch, 0.0, 1.0)
    assert list(loop.log.kv_used_tokens) == [8]


def test_feed_arrivals_tells_the_scheduler_once_when_no_request_is_left():
    # two requests at 0 and 2 s: at t = 1 only the first is added and nothing is told; at t = 2 the
    # last one is added and the end of arrivals is told, once, however often the loop calls again
    from runtime.schedulers.base import feed_arrivals

    class Counting:
        def __init__(self):
            self.added, self.ended = [], 0

        def add_request(self, request):
            self.added.append(request.request_id)

        def on_arrivals_ended(self):
            self.ended += 1

    arrivals = [Request(0, 0.0, 4, 2), Request(1, 2.0, 4, 2)]
    s = Counting()
    assert feed_arrivals(s, arrivals, 0, 1.0, False) == (1, False) and (s.added, s.ended) == ([0], 0)
    assert feed_arrivals(s, arrivals, 1, 2.0, False) == (2, True) and (s.added, s.ended) == ([0, 1], 1)
    assert feed_arrivals(s, arrivals, 2, 3.0, True) == (2, True) and s.ended == 1
    # through the loop: the simulator's many turns after the last arrival tell it once
    fcfs = make_scheduler("fcfs", KVBlockManager(100, 1))
    calls = []
    fcfs.on_arrivals_ended = lambda: calls.append(1)
    simulate(fcfs, [Request(0, 0.0, 4, 5)], BT)
    assert calls == [1]
