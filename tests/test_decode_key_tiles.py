"""The decodes' attention key tiles (`fluid.batch_time.decode_key_tiles`): the staircase at the tile
edges, the batch's running count against a recount on every path that adds work, the estimate from
totals for files written before the count was recorded, and the stepwise term reading it."""

from __future__ import annotations

import random

import pytest

from fluid.batch_time import ATTENTION_KEY_TILE, BatchShape, batch_time_from_dict, decode_key_tiles
from fluid.batch_time_stepwise import TERMS, StepwiseBatchTime
from runtime.kv_blocks import KVBlockManager
from runtime.replay import shape_columns, shape_of
from runtime.request import Request
from runtime.schedulers.base import Batch, ScheduledWork, Scheduler
from runtime.step_log import StepLog


class _Probe(Scheduler):
    """Schedules nothing: the tests drive the base class's reserve paths directly."""

    name = "probe"

    def add_request(self, request): ...
    def schedule(self, now_s): ...
    def has_unfinished(self): ...


@pytest.mark.parametrize(
    "context, alone, beside",
    [
        (1, 1, 2),
        (63, 1, 2),  # the new key is the 64th: still one tile alone
        (64, 2, 2),  # alone the new key opens tile 2; beside a prefill the cached 64 fill one, the fresh key its own
        (65, 2, 3),
        (127, 2, 3),
        (128, 3, 3),
        (129, 3, 4),
    ],
)
def test_the_tiles_one_decode_walks_at_the_edges(context, alone, beside):
    assert ATTENTION_KEY_TILE == 64
    assert decode_key_tiles(context, beside_prefill=False) == alone
    assert decode_key_tiles(context, beside_prefill=True) == beside


def _decoding(rid: int, context: int) -> Request:
    r = Request(rid, 0.0, prompt_tokens=context, output_tokens=50)
    r.cached_tokens = context
    return r


def test_the_running_count_equals_a_recount_on_every_path_that_adds_work():
    rng = random.Random(7)
    for trial in range(200):
        sched = _Probe(KVBlockManager(1_000_000, block_size=16))
        batch = Batch()
        contexts = [rng.choice((1, 63, 64, 65, 127, 128, 129, rng.randint(1, 3000))) for _ in range(rng.randint(1, 12))]
        decodes = [_decoding(i, c) for i, c in enumerate(contexts)]
        k = rng.randint(0, len(decodes))
        sched.reserve_decodes(batch, decodes[:k])  # the bulk path
        for r in decodes[k:]:  # and one at a time through each of the others
            path = rng.randrange(3)
            if path == 0:
                sched.reserve(batch, r, 1)
            elif path == 1:
                assert sched.try_reserve(batch, r, 1)
            else:
                batch.add(ScheduledWork(r, 1, r.cached_tokens))
        with_prefill = trial % 2 == 1
        if with_prefill:
            sched.reserve(batch, Request(999, 0.0, prompt_tokens=48, output_tokens=5), 48)
        shape = batch.shape()
        by_hand = sum(decode_key_tiles(c, beside_prefill=with_prefill) for c in contexts)
        assert shape.decode_key_tiles == by_hand, (contexts, with_prefill)
        assert shape == batch._recount()


def test_a_prefill_added_after_the_decodes_moves_every_decode_to_the_mixed_count():
    sched = _Probe(KVBlockManager(10_000, block_size=16))
    batch = Batch()
    sched.reserve_decodes(batch, [_decoding(0, 64), _decoding(1, 70)])
    assert batch.shape().decode_key_tiles == 2 + 2  # alone: ⌈65/64⌉ and ⌈71/64⌉
    sched.reserve(batch, Request(2, 0.0, prompt_tokens=48, output_tokens=5), 48)
    assert batch.shape().decode_key_tiles == 2 + 3  # beside it: ⌈64/64⌉ + 1 and ⌈70/64⌉ + 1


@pytest.mark.parametrize("decodes, context, prefills, chunk, cached", [(96, 64, 0, 0, 0), (96, 70, 1, 48, 0), (33, 128, 3, 100, 200),
                                                                       (1, 1, 2, 16, 0), (128, 1023, 0, 0, 0)])
def test_the_estimate_from_totals_is_exact_for_equal_contexts_and_chunks(decodes, context, prefills, chunk, cached):
    new = decodes + prefills * chunk
    kv = decodes * (context + 1) + prefills * (cached + chunk)
    pairs = prefills * chunk * (cached + chunk)
    unrecorded = BatchShape(new, kv, decodes, prefills, pairs)
    assert unrecorded.decode_key_tiles is None
    assert unrecorded.key_tiles() == decodes * decode_key_tiles(context, beside_prefill=prefills > 0)
    assert BatchShape(new, kv, decodes, prefills, pairs, 5).key_tiles() == 5  # a recorded count is taken as is


def test_a_prefill_only_shape_has_no_decode_tiles():
    assert BatchShape(300, 300, 0, 2, 2 * 150 * 150).key_tiles() == 0


def test_steps_carry_the_count_through_the_log_and_a_row():
    log = StepLog()
    shape = BatchShape(144, 96 * 71 + 48, 96, 1, 48 * 48, 96 * 3)
    log.append(0.0, 0.01, shape, 7000, 0)
    assert log.record(0).shape == shape
    row = shape_columns(shape)
    assert row["decode_key_tiles"] == 288 and shape_of(row) == shape
    del row["decode_key_tiles"]  # a steps file written before the count: estimated from the totals
    assert shape_of(row).decode_key_tiles is None and shape_of(row).key_tiles() == 288


def test_the_stepwise_tile_term_is_paid_per_tile_and_absent_from_older_files():
    coef = [0.0] * len(TERMS)
    coef[TERMS.index("decode_tile_s")] = 1e-5
    m = StepwiseBatchTime(tuple(coef), (1, 128), (64, 128), 4, 128)
    at_64 = BatchShape(144, 96 * 65 + 48, 96, 1, 48 * 48, 96 * decode_key_tiles(64, beside_prefill=True))
    at_70 = BatchShape(144, 96 * 71 + 48, 96, 1, 48 * 48, 96 * decode_key_tiles(70, beside_prefill=True))
    assert m.step_time_s(at_70) - m.step_time_s(at_64) == pytest.approx(96 * 1e-5)  # one tile more per decode
    old = m.to_dict()
    del old["coefficients"]["decode_tile_s"]
    again = batch_time_from_dict(old, source="old.json")
    assert again.coefficients[TERMS.index("decode_tile_s")] == 0.0


def test_the_calibration_grid_straddles_the_tile_edges():
    """Each decode batch of the tile points walks 1, 2 and 3 tiles per decode at some context, and
    each mixed pair at contexts 64 / 70 differs by exactly one tile per decode, nothing else but
    the 6 cached tokens each: the fit sees the step, not only the slope."""
    from runtime.gpu.calibration_grid import DECODE_TILE_BATCHES, MIXED_TILE, calibration_grid

    def shape(comp):
        batch = Batch()
        for i, (new, cached) in enumerate(comp):
            r = Request(i, 0.0, prompt_tokens=cached + new if new > 1 or cached == 0 else cached, output_tokens=50)
            r.cached_tokens = cached
            batch.add(ScheduledWork(r, new, cached))
        return batch.shape()

    grid = dict(calibration_grid())
    for b in DECODE_TILE_BATCHES:
        per_decode = {shape(comp).decode_key_tiles // b for label, comp in grid.items() if label.startswith(f"decode {b}x")}
        assert {1, 2, 3} <= per_decode, b
    pairs = {(d, p) for d, ctx, p, n, prefix in MIXED_TILE if ctx in (64, 70)}
    assert len(pairs) == 9
    for d, p in pairs:
        at64, at70 = (shape(grid[f"mixed {d}x{ctx} + {p}x48 after 0"]) for ctx in (64, 70))
        assert (at64.decode_key_tiles, at70.decode_key_tiles) == (2 * d, 3 * d)
        assert at70.kv_tokens - at64.kv_tokens == 6 * d and at70.new_tokens == at64.new_tokens == d + 48 * p


def test_which_models_read_the_tiles():
    from fluid.batch_time import AffineBatchTime, Linear3BatchTime, reads_key_tiles

    coef = [0.0] * len(TERMS)
    without = StepwiseBatchTime(tuple(coef), (1, 128), (64, 128), 4, 128)
    coef[TERMS.index("decode_tile_s")] = 1e-9
    with_term = StepwiseBatchTime(tuple(coef), (1, 128), (64, 128), 4, 128)
    assert not reads_key_tiles(AffineBatchTime(0.01, 1e-6)) and not reads_key_tiles(Linear3BatchTime(0.01, 1e-6, 1e-5))
    assert not reads_key_tiles(without) and reads_key_tiles(with_term)

    class Wrapper:  # a model that does not say: counted, so it never sees an estimate where the count exists
        def step_time_s(self, shape):
            return with_term.step_time_s(shape)

    assert reads_key_tiles(Wrapper())


@pytest.mark.parametrize("name", ["vllm-v1", "sarathi", "fcfs"])
def test_a_model_without_the_term_simulates_the_same_steps_without_counting_them(name):
    """The count is switched by the model alone: the same arrivals under linear3 record no tiles,
    and under the same model wrapped (a model that says nothing) record a count on every step,
    and the steps are the same ones."""
    from fluid.batch_time import Linear3BatchTime
    from fluid.workload_io import load_workload
    from runtime.arrivals import make_requests
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate

    workload = load_workload("chat-d-ten-bins")
    linear = Linear3BatchTime(0.004, 2e-7, 1e-5)

    class Wrapped:
        def step_time_s(self, shape):
            return linear.step_time_s(shape)

    runs = {}
    for label, model in (("linear", linear), ("wrapped", Wrapped())):
        sched = make_scheduler(name, KVBlockManager(workload.kv_capacity_tokens // 8, 16))
        runs[label] = (sched, simulate(sched, make_requests(workload, 200, 0), model))
    (s_lin, lin), (s_wrap, wrap) = runs["linear"], runs["wrapped"]
    assert s_lin.count_key_tiles is False and s_wrap.count_key_tiles is True
    assert len(lin.steps) == len(wrap.steps) > 100 and lin.steps.start_s == wrap.steps.start_s
    assert set(lin.steps.decode_key_tiles) == {None}
    shapes = [wrap.steps.record(k).shape for k in range(len(wrap.steps))]
    assert all(s.decode_key_tiles is not None for s in shapes)
    assert any(s.decode_key_tiles > s.num_decodes for s in shapes)  # contexts past 64: more than a tile each
    for k in range(len(lin.steps)):
        a, b = lin.steps.record(k).shape, shapes[k]
        assert (a.new_tokens, a.kv_tokens, a.num_decodes, a.num_prefills) == (b.new_tokens, b.kv_tokens, b.num_decodes, b.num_prefills)
