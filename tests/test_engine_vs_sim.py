"""The GPU engine's scheduling and memory path against the simulator, on one clock.

The engine (tiny-llama on CPU, the real `Engine.execute`, the paged KV pool indexed by the
scheduler's block tables) runs on the batch-time model's clock (`Engine.run(step_time=...)`), the
simulator on the same model and the same arrivals. The same memory accounting must give the same
steps, the same KV held, and the same evictions: which requests, at which step.
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
from runtime.sim import simulate  # noqa: E402
from runtime.step_log import STEP_COLUMNS  # noqa: E402

BLOCK = 4
CAPACITY = 96  # 24 blocks: both schedulers evict (8 and 9 evictions over 30 requests)


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(seed=3)


def _evictions(requests, log):
    """(request id, index of the step whose schedule evicted it) for every eviction."""
    step_of = {t: k for k, t in enumerate(log.start_s)}
    return sorted((r.request_id, step_of[t]) for r in requests for t in r.eviction_times_s)


def simulate_counting_tiles(scheduler, requests, batch_time):
    """`simulate` with the tile count on whatever the model: through a model that does not say
    whether it reads them (`fluid.batch_time.reads_key_tiles`)."""

    class Counted:
        def step_time_s(self, shape):
            return batch_time.step_time_s(shape)

    return simulate(scheduler, requests, Counted())


@pytest.mark.parametrize("name, options, evictions", [
    ("vllm-v1", {"max_num_batched_tokens": 32}, 8),
    ("sarathi", {"chunk_size": 16}, 9),
])
def test_engine_on_the_model_clock_takes_the_simulators_steps_and_evictions(tiny, name, options, evictions):
    cfg, _, runner = tiny
    workload = small_workload([(12, 10), (20, 6)], [300, 300], capacity_tokens=CAPACITY, d0_s=0.002, d1_s=1e-5)
    pool = KVPool(PoolShape(cfg.num_hidden_layers, CAPACITY // BLOCK, BLOCK, cfg.num_key_value_heads, 16, 4), dtype=torch.float32, device="cpu")
    engine = Engine(runner, pool, seed=1)
    live_reqs, sim_reqs = make_requests(workload, 30, 3), make_requests(workload, 30, 3)
    live = engine.run(make_scheduler(name, KVBlockManager(CAPACITY, BLOCK, track_block_ids=True), **options), live_reqs,
                      step_time=workload.batch_time)
    sim_scheduler = make_scheduler(name, KVBlockManager(CAPACITY, BLOCK), **options)
    # the engine always counts the decodes' key tiles; under the affine model alone the simulator would not
    sim = simulate_counting_tiles(sim_scheduler, sim_reqs, workload.batch_time)
    assert all(r.finished for r in live_reqs) and live.restart_token_mismatches == 0
    assert None not in sim.steps.decode_key_tiles
    for column in STEP_COLUMNS:  # every step: start, end, composition, KV held, evictions
        assert getattr(live.steps, column) == getattr(sim.steps, column), column
    assert sum(sim.steps.num_evicted) == evictions  # the case exercises eviction
    assert _evictions(live_reqs, live.steps) == _evictions(sim_reqs, sim.steps)
    for a, b in zip(live_reqs, sim_reqs):
        assert (a.request_id, a.restarts, a.token_times_s, a.completion_s) == (b.request_id, b.restarts, b.token_times_s, b.completion_s)
    assert max(live.steps.kv_used_tokens) == CAPACITY  # the pool was exactly full at some step


def test_the_engine_runs_its_loop_on_a_frozen_heap_and_records_its_collections(tiny):
    import gc

    cfg, _, runner = tiny
    workload = small_workload([(12, 10)], [300], capacity_tokens=CAPACITY, d0_s=0.002, d1_s=1e-5)
    pool = KVPool(PoolShape(cfg.num_hidden_layers, CAPACITY // BLOCK, BLOCK, cfg.num_key_value_heads, 16, 4), dtype=torch.float32, device="cpu")
    engine = Engine(runner, pool, seed=1)
    sched = make_scheduler("vllm-v1", KVBlockManager(CAPACITY, BLOCK, track_block_ids=True))
    frozen, schedule = [], sched.schedule

    def watched(now_s):
        frozen.append(gc.get_freeze_count())
        if len(frozen) == 3:
            gc.collect(2)  # one full collection inside the run, to be recorded
        return schedule(now_s)

    sched.schedule = watched
    live = engine.run(sched, make_requests(workload, 10, 3), step_time=workload.batch_time)
    assert frozen and min(frozen) > 0 and gc.get_freeze_count() == 0  # frozen for every step, released after
    full = [p for p in live.collector_pauses if p.generation == 2]
    assert len(full) == 1 and full[0].start_s >= 0 and full[0].seconds > 0  # seconds after the run's start


def test_interleaved_timing_runs_the_compositions_round_robin_and_frees_their_memory(tiny):
    from runtime.gpu.step_timer import StepTimer

    cfg, _, runner = tiny
    pool = KVPool(PoolShape(cfg.num_hidden_layers, CAPACITY // BLOCK, BLOCK, cfg.num_key_value_heads, 16, 4), dtype=torch.float32, device="cpu")
    engine = Engine(runner, pool, seed=1)
    timer = StepTimer(engine)
    order, execute = [], engine.execute

    def recorded(batch):
        order.append(len(batch.items))
        return execute(batch)

    engine.execute = recorded
    rows = timer.time_interleaved_s([[(8, 0)], [(4, 0), (4, 0)], [(2, 0)] * 4], repeats=3, warmup=1)
    assert order == [1, 2, 4] * 4  # warm-up and each repeat visit every composition in turn
    assert [sorted(r) for r in rows] == [["graph", "host_s", "step_s"]] * 3 and all(0 < r["host_s"] <= r["step_s"] for r in rows)
    assert timer.kv.free_blocks == timer.kv.num_blocks and not engine.sequences  # everything released
