"""The engine's overlapped loop: step k + 1 scheduled and prepared while step k runs.

tiny-llama on CPU through the real `Engine.prepare / launch / collect` and
`runtime.executor.run_server_overlapped`: the same tokens as the synchronous loop, every provisional
end rewritten to the step's true end, the scheduler called before the previous step's tokens are
read, and the policies that decide on step end times refused.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine_helpers import tiny_llama  # noqa: E402
from sim_helpers import small_workload  # noqa: E402

from runtime.arrivals import make_requests  # noqa: E402
from runtime.gpu.engine import Engine  # noqa: E402
from runtime.gpu.kv_pool import KVPool, PoolShape  # noqa: E402
from runtime.kv_blocks import KVBlockManager  # noqa: E402
from runtime.schedulers import make_scheduler  # noqa: E402

BLOCK = 4
CAPACITY = 96  # 24 blocks: the schedulers below evict


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(seed=3)


def _engine(tiny):
    cfg, _, runner = tiny
    pool = KVPool(PoolShape(cfg.num_hidden_layers, CAPACITY // BLOCK, BLOCK, cfg.num_key_value_heads, 16, 4), dtype=torch.float32, device="cpu")
    return Engine(runner, pool, seed=1)


def _workload():
    # arrivals far faster than the CPU steps: a backlog, so steps queue behind each other
    return small_workload([(12, 10), (20, 6)], [3000, 3000], capacity_tokens=CAPACITY, d0_s=0.002, d1_s=1e-5)


@pytest.mark.parametrize("name, options", [("vllm-v1", {"max_num_batched_tokens": 32}), ("sarathi", {"chunk_size": 16})])
def test_overlapped_run_samples_the_synchronous_runs_tokens_and_settles_every_end(tiny, name, options):
    engine = _engine(tiny)
    sync_reqs = make_requests(_workload(), 24, 3)
    engine.run(make_scheduler(name, KVBlockManager(CAPACITY, BLOCK, track_block_ids=True), **options), sync_reqs)
    sync_tokens = {r: list(seq) for r, seq in engine.sequences.items()}
    engine.sequences.clear()
    reqs = make_requests(_workload(), 24, 3)
    res = engine.run(make_scheduler(name, KVBlockManager(CAPACITY, BLOCK, track_block_ids=True), **options), reqs, overlap_host=True)
    assert all(r.finished for r in reqs) and res.restart_token_mismatches == 0
    assert sum(r.restarts for r in reqs) > 0  # evictions happened while a step was in flight
    assert engine.sequences == sync_tokens  # every request's prompt + output, token for token
    log = res.steps
    ends = set(log.end_s)
    for r in reqs:  # every stamp is some step's true end: no provisional value survived
        assert set(r.token_times_s) <= ends and r.completion_s in ends and set(r.prefill_chunk_end_s) <= ends
        assert len(r.token_times_s) == r.output_tokens + 1
    for k in range(len(log)):
        assert log.start_s[k] <= log.end_s[k]
        if k:
            assert log.start_s[k] >= log.end_s[k - 1]  # contiguous: a step starts once its predecessor's tokens are in
    rows = res.step_rows()
    assert all(0 <= row["host_s"] <= row["measured_s"] for row in rows)
    assert sum(row["hidden_host_s"] > 0 for row in rows) > len(rows) // 2  # most steps were prepared behind another


def test_overlapped_loop_schedules_the_next_step_before_reading_the_tokens_of_the_current_one(tiny):
    engine = _engine(tiny)
    sched = make_scheduler("vllm-v1", KVBlockManager(CAPACITY, BLOCK, track_block_ids=True), max_num_batched_tokens=32)
    events = []
    schedule, launch, collect = sched.schedule, engine.launch, engine.collect

    def traced_schedule(now_s):
        batch = schedule(now_s)
        events.append("schedule" if batch.items else "idle")
        return batch

    def traced_launch(prep):
        events.append("launch")
        return launch(prep)

    def traced_collect(step):
        events.append("collect")
        return collect(step)

    sched.schedule, engine.launch, engine.collect = traced_schedule, traced_launch, traced_collect
    engine.run(sched, make_requests(_workload(), 12, 3), overlap_host=True)
    steps = [e for e in events if e != "idle"]
    assert steps[:4] == ["schedule", "launch", "schedule", "collect"]  # step 2 scheduled while step 1 ran
    assert steps.count("launch") == steps.count("collect")
    # after the first, every launch follows the collect of the step before it, and that collect
    # follows the scheduling of the step being launched
    for k, e in enumerate(steps):
        if e == "launch" and k > 1:
            assert steps[k - 1] == "collect" and steps[k - 2] == "schedule", steps[max(0, k - 3) : k + 1]


def test_a_decode_waits_for_the_token_of_the_step_in_flight_and_reads_it_at_launch(tiny):
    from types import SimpleNamespace

    from runtime.request import Request
    from runtime.schedulers.base import Batch, ScheduledWork

    engine = _engine(tiny)
    kv = KVBlockManager(CAPACITY, BLOCK, track_block_ids=True)
    engine.scheduler = SimpleNamespace(kv=kv)  # the engine reads block tables from it
    r = Request(7, 0.0, 8, 4)
    kv.grow(r, 10)

    def step(ctx, n):
        batch = Batch()
        batch.items.append(ScheduledWork(r, n, ctx))
        return batch

    engine.collect(engine.launch(engine.prepare(step(0, 8))))  # the prompt: samples position 8
    first = engine.launch(engine.prepare(step(8, 1)))  # in flight: samples position 9
    second = engine.prepare(step(9, 1))
    assert second.pending == [(0, 7, 9)]  # its one input id is the token the step in flight samples
    with pytest.raises(RuntimeError, match="request 7: position 9 has no token yet"):
        engine.launch(second)
    engine.collect(first)
    assert len(engine.sequences[7]) == 10
    engine.collect(engine.launch(second))
    assert second.ids == [engine.sequences[7][9]] and len(engine.sequences[7]) == 11


def test_overlap_refuses_a_policy_that_reads_step_end_times_and_the_models_clock(tiny):
    engine = _engine(tiny)
    slai = make_scheduler("slai", KVBlockManager(CAPACITY, BLOCK, track_block_ids=True))
    with pytest.raises(ValueError, match="SlaiScheduler decides on step end times"):
        engine.run(slai, make_requests(_workload(), 4, 3), overlap_host=True)
    vllm = make_scheduler("vllm-v1", KVBlockManager(CAPACITY, BLOCK, track_block_ids=True))
    with pytest.raises(ValueError, match="overlap_host runs on the wall clock"):
        engine.run(vllm, make_requests(_workload(), 4, 3), overlap_host=True, step_time=_workload().batch_time)
