"""`run_server_overlapped` on a scripted device (torch-free): host work hidden behind the step in
flight, provisional ends settled, the horizon and the idle turns."""

from __future__ import annotations

import pytest
from sim_helpers import small_workload

from runtime.arrivals import make_requests
from runtime.executor import ServerLoop, run_server, run_server_overlapped, settle_step
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.schedulers.base import Batch, ScheduledWork

STEP_S, HOST_S = 0.010, 0.001  # every step runs 10 ms on the device; preparing one costs 1 ms of host


class ScriptedDevice:
    """A device whose steps take STEP_S each, queued behind each other; the host pays HOST_S per prepare."""

    def __init__(self):
        self.t = 0.0
        self.busy_until = 0.0
        self.launches = []

    def now_s(self):
        return self.t

    def prepare(self, batch):
        self.t += HOST_S
        return batch

    def launch(self, batch):
        start = max(self.t, self.busy_until)
        self.busy_until = start + STEP_S
        self.launches.append(start)
        return self.busy_until, 0.0, False

    def collect(self, done_s):
        self.t = max(self.t, done_s)
        return self.t

    def wait_until(self, t_s):
        self.t = max(self.t, t_s)


class ScriptedSyncDevice:
    """The same costs for `run_server`: host work then the step, one after the other."""

    def __init__(self):
        self.t = 0.0

    def now_s(self):
        return self.t

    def execute(self, loop, batch, start_s):
        self.t += HOST_S + STEP_S
        loop.finish(batch, start_s, self.t)
        return self.t

    def wait_until(self, t_s):
        self.t = max(self.t, t_s)


def _run(overlapped: bool, n: int = 20, horizon_s=None):
    wl = small_workload([(12, 10)], [10_000], capacity_tokens=4000)  # all arrive within ~2 ms: a backlog
    reqs = make_requests(wl, n, 1)
    loop = ServerLoop(make_scheduler("vllm-v1", KVBlockManager(4000, 16), max_num_batched_tokens=64), measured=True)
    if overlapped:
        res = run_server_overlapped(loop, reqs, ScriptedDevice(), horizon_s=horizon_s)
    else:
        res = run_server(loop, reqs, ScriptedSyncDevice(), horizon_s=horizon_s)
    return reqs, res


def test_a_backlog_runs_at_the_device_step_time_with_the_host_work_hidden():
    reqs, res = _run(True)
    _, sync = _run(False)
    log = res.steps
    assert all(r.finished for r in reqs)
    assert len(log) == len(sync.steps)  # the same batches: the scheduler saw the same state
    # past the first (its host work had nothing to hide behind) every step is exactly the device's 10 ms
    spans = [e - s for s, e in zip(log.start_s, log.end_s)]
    assert spans[0] == pytest.approx(HOST_S + STEP_S)
    assert spans[1:] == pytest.approx([STEP_S] * (len(log) - 1))
    assert [e - s for s, e in zip(sync.steps.start_s, sync.steps.end_s)][1:] == pytest.approx([HOST_S + STEP_S] * (len(log) - 1))
    assert res.end_s == pytest.approx(sync.end_s - (len(log) - 1) * HOST_S)
    ends = set(log.end_s)
    for r in reqs:
        assert set(r.token_times_s) <= ends and r.completion_s in ends  # settled: no provisional stamp left


def test_the_horizon_settles_the_step_in_flight():
    reqs, res = _run(True, n=20, horizon_s=0.05)
    log = res.steps
    assert log.end_s[-1] == pytest.approx(log.start_s[-1] + STEP_S)  # the last step's true end, not its launch time
    assert res.end_s >= log.end_s[-1] and not all(r.finished for r in reqs)


def test_an_idle_turn_waits_for_the_step_in_flight_then_for_the_next_arrival():
    wl = small_workload([(12, 1)], [1.0], capacity_tokens=4000)  # one arrival a second: idle between requests
    reqs = make_requests(wl, 3, 2)
    loop = ServerLoop(make_scheduler("vllm-v1", KVBlockManager(4000, 16)), measured=True)
    device = ScriptedDevice()
    res = run_server_overlapped(loop, reqs, device)
    assert all(r.finished for r in reqs)
    for r in reqs:  # the prefill step (prepared while idle: 1 ms host, 10 ms device) then one decode step
        first = r.token_times_s[0]
        assert first == pytest.approx(r.arrival_s + HOST_S + STEP_S)
        assert r.completion_s == pytest.approx(first + STEP_S)  # the decode was prepared behind the prefill
    assert len(res.steps) == 6


@pytest.mark.parametrize("overlapped", [True, False])
def test_a_partial_cohort_is_drained_when_the_arrivals_end(overlapped):
    # WAIT threshold 2 with no drain timer (max_wait_s = inf): requests 0 and 1 make a cohort, request
    # 2 alone is served only once the loop tells the scheduler no more requests will arrive
    import math

    from runtime.policy_file import RuntimeClass, RuntimePolicy

    policy = RuntimePolicy("wait", "cohort", math.inf, classes=(RuntimeClass("a", 4, 2, 2),))
    reqs = [Request(0, 0.0, 4, 2, "a"), Request(1, 0.0, 4, 2, "a"), Request(2, 0.5, 4, 2, "a")]
    loop = ServerLoop(make_scheduler("wait", KVBlockManager(1000, 1), policy=policy), measured=True)
    if overlapped:
        run_server_overlapped(loop, reqs, ScriptedDevice())
    else:
        run_server(loop, reqs, ScriptedSyncDevice())
    assert all(r.finished for r in reqs)
    assert reqs[2].first_scheduled_s == pytest.approx(0.5)  # at its arrival, the last one: drained at once


def test_settle_step_rewrites_only_the_stamps_of_the_provisional_end():
    r = Request(1, 0.0, 4, 3)
    r.token_times_s[:] = [0.5, 0.7]
    r.prefill_chunk_end_s[:] = [0.4]
    other = Request(2, 0.0, 4, 1)
    other.token_times_s[:] = [0.7]
    other.completion_s = 0.7
    batch = Batch()
    batch.items += [ScheduledWork(r, 1, 5), ScheduledWork(other, 1, 4)]
    loop = ServerLoop(make_scheduler("vllm-v1", KVBlockManager(4000, 16)))
    loop.log.end_s.append(0.7)
    settle_step(loop, batch, 0, 0.7, 0.75)
    assert r.token_times_s == [0.5, 0.75] and r.prefill_chunk_end_s == [0.4] and r.completion_s is None
    assert other.token_times_s == [0.75] and other.completion_s == 0.75 and loop.log.end_s == [0.75]


def test_a_policy_that_reads_step_end_times_is_refused():
    loop = ServerLoop(make_scheduler("slai", KVBlockManager(4000, 16)))
    with pytest.raises(ValueError, match="SlaiScheduler decides on step end times; it cannot be scheduled ahead"):
        run_server_overlapped(loop, [], ScriptedDevice())


def test_the_simulated_overlapped_loop_hides_the_host_terms_and_delays_arrivals_by_a_step():
    """`simulate_overlapped` with a constant 10 ms device step and 1 ms host a step: a backlog
    runs at 10 ms a step where `simulate` with the 11 ms sum runs at 11 ms."""
    from fluid.batch_time import AffineBatchTime
    from runtime.sim import simulate, simulate_overlapped

    wl = small_workload([(12, 10)], [10_000], capacity_tokens=4000)
    make = lambda: make_scheduler("vllm-v1", KVBlockManager(4000, 16), max_num_batched_tokens=64)  # noqa: E731
    over = simulate_overlapped(make(), make_requests(wl, 20, 1), AffineBatchTime(STEP_S, 0.0), lambda shape: HOST_S)
    sync = simulate(make(), make_requests(wl, 20, 1), AffineBatchTime(STEP_S + HOST_S, 0.0))
    spans = [e - s for s, e in zip(over.steps.start_s, over.steps.end_s)]
    assert len(over.steps) == len(sync.steps)
    assert spans[0] == pytest.approx(HOST_S + STEP_S) and spans[1:] == pytest.approx([STEP_S] * (len(spans) - 1))
    assert [e - s for s, e in zip(sync.steps.start_s, sync.steps.end_s)] == pytest.approx([HOST_S + STEP_S] * len(spans))
    # one request arriving while the server is busy with another: scheduled ahead, it waits a step more
    lone = small_workload([(12, 4)], [1.0], capacity_tokens=4000)
    reqs = make_requests(lone, 2, 5)
    reqs[1].arrival_s = reqs[0].arrival_s + 0.5 * STEP_S  # lands during the first request's prefill
    res = simulate_overlapped(make_scheduler("vllm-v1", KVBlockManager(4000, 16)), reqs, AffineBatchTime(STEP_S, 0.0), lambda shape: HOST_S)
    first_step_end = reqs[0].token_times_s[0]
    # step 2 (request 0's first decode) was scheduled before request 1 arrived; request 1 joins step 3
    assert reqs[1].token_times_s[0] == pytest.approx(first_step_end + 2 * STEP_S)
    assert len(res.steps) >= 3
