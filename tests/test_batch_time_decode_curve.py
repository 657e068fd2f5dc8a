"""The stepwise model's decode curve: a cost per decode graph size beyond the shared GEMM trend,
where a step sits on it, its fit, its file form and bad input."""

from __future__ import annotations

import random

import pytest

from fluid.batch_time import BatchShape, batch_time_from_dict
from fluid.batch_time_stepwise import (
    TERMS,
    StepwiseBatchTime,
    _decode_knots,
    fit_stepwise,
)
from fluid.errors import InputError

BUCKETS = {"decode_buckets": (1, 4, 8, 16, 24, 32, 64), "token_buckets": (64, 128, 256, 512), "max_prefills": 8, "max_decodes": 64}


def _coef(**terms) -> tuple[float, ...]:
    return tuple(terms.get(t, 0.0) for t in TERMS)


def _decode(d: int, ctx: int) -> BatchShape:
    return BatchShape(d, d * (ctx + 1), d, 0, 0)


def test_a_step_sits_on_its_knot_between_two_or_at_the_ends_and_only_decode_graphs_do():
    m = StepwiseBatchTime(_coef(c0_s=1.0), **BUCKETS, decode_knots=(4, 16, 32), decode_knot_s=(0.1, 0.2, 0.4))
    assert m.knot_weights(_decode(16, 100)) == [0.0, 1.0, 0.0]  # exactly a knot
    assert m.knot_weights(_decode(24, 100)) == [0.0, 0.5, 0.5]  # graph 24, halfway from 16 to 32
    assert m.knot_weights(_decode(5, 100)) == pytest.approx([2 / 3, 1 / 3, 0.0])  # 5 decodes run the 8-row graph: a third of 4 -> 16
    assert m.knot_weights(_decode(1, 100)) == [1.0, 0.0, 0.0]  # below the first knot: its cost
    assert m.knot_weights(_decode(40, 100)) == [0.0, 0.0, 1.0]  # the 64-row graph, past the last knot: the last's
    assert m.knot_weights(_decode(65, 100)) == [0.0, 0.0, 0.0]  # past the largest decode graph: eager, no curve
    assert m.knot_weights(BatchShape(80, 200, 16, 1, 4096)) == [0.0, 0.0, 0.0]  # a mixed step
    assert m.step_time_s(_decode(24, 100)) == pytest.approx(1.0 + 0.3)
    assert StepwiseBatchTime(_coef(c0_s=1.0), **BUCKETS).knot_weights(_decode(24, 100)) == []


def test_with_knots_the_one_small_decode_bump_is_off_and_the_shared_trend_stays():
    plain = StepwiseBatchTime(_coef(padded_s_per_token=1.0, small_decode_s=10.0), **BUCKETS)
    curved = StepwiseBatchTime(_coef(padded_s_per_token=1.0, small_decode_s=10.0), **BUCKETS, decode_knots=(16,), decode_knot_s=(0.5,))
    assert plain.step_time_s(_decode(16, 10)) == 16.0 + 10.0
    assert curved.step_time_s(_decode(16, 10)) == 16.0 + 0.5
    prefill = BatchShape(100, 100, 0, 1, 5000)
    assert curved.step_time_s(prefill) == plain.step_time_s(prefill) == 128.0  # the 128-token graph: the trend alone


def test_knots_are_the_decode_graphs_the_rows_measured():
    probe = StepwiseBatchTime(_coef(), **BUCKETS)
    rows = [(_decode(3, 50), 1.0), (_decode(4, 50), 1.0), (_decode(20, 50), 1.0), (_decode(99, 50), 1.0), (BatchShape(70, 90, 6, 1, 99), 1.0)]
    assert _decode_knots(rows, probe) == (4, 24)  # 3 and 4 run the 4-row graph, 20 the 24-row one; 99 is eager; a mixed step is none


def test_a_fit_with_the_curve_finds_a_graph_that_costs_more_than_its_neighbours():
    truth = StepwiseBatchTime(_coef(c0_s=4e-3, kv_s_per_token=1e-7, padded_s_per_token=2e-6, decode_s_per_seq=1e-5, pair_s=1e-9), **BUCKETS,
                              decode_knots=(1, 4, 8, 16, 24, 32, 64), decode_knot_s=(0.0, 0.0, 0.0, 6e-4, 0.0, 0.0, 0.0))
    rng = random.Random(3)
    data = [(s, truth.step_time_s(s) * (1 + rng.gauss(0, 0.003)), f"decode {d}x{c}")
            for d in (1, 4, 8, 16, 24, 32, 64) for c in (48, 256, 1024) for s in [_decode(d, c)]]
    data += [(BatchShape(n, n, 0, 1, n * n), 0.0, f"prefill {n}") for n in (64, 128, 256, 512)]
    data += [(BatchShape(d + n, d * 100 + n, d, 1, n * n), 0.0, f"mixed {d}+{n}") for d in (8, 16, 32) for n in (48, 200)]
    data = [(s, t if t else truth.step_time_s(s) * (1 + rng.gauss(0, 0.003)), lab) for s, t, lab in data]
    curve = fit_stepwise(data, **BUCKETS, decode_curve=True)
    slope = fit_stepwise(data, **BUCKETS)
    assert curve.model.decode_knots == (1, 4, 8, 16, 24, 32, 64)

    def bump(m, ctx):  # the 16-row graph over the mean of its neighbours
        return m.step_time_s(_decode(16, ctx)) - (m.step_time_s(_decode(8, ctx)) + m.step_time_s(_decode(24, ctx))) / 2

    assert bump(curve.model, 512) == pytest.approx(bump(truth, 512), rel=0.15) and bump(truth, 512) > 5e-4
    assert abs(bump(slope.model, 512) - bump(truth, 512)) > 3e-4  # one slope and one 8-24 bump cannot place it
    assert curve.heldout_mape_by_region["decode"] < 0.01 < slope.heldout_mape_by_region["decode"]


def test_the_curve_survives_its_file_form_and_a_file_without_it_reads_as_before():
    m = StepwiseBatchTime(_coef(c0_s=1e-3), **BUCKETS, decode_knots=(4, 16), decode_knot_s=(1e-4, 2e-4))
    back = batch_time_from_dict(m.to_dict(), source="test")
    assert back == m and back.step_time_s(_decode(8, 10)) == m.step_time_s(_decode(8, 10))
    old = {k: v for k, v in m.to_dict().items() if not k.startswith("decode_knot")}
    assert batch_time_from_dict(old, source="test").decode_knots == ()


@pytest.mark.parametrize("knots, costs, field", [
    ((16, 4), (0.1, 0.2), "decode_knots"), ((4, 4), (0.1, 0.2), "decode_knots"), ((0, 4), (0.1, 0.2), "decode_knots"),
    ((4, 16), (0.1,), "decode_knot_s"), ((4,), (-0.1,), "decode_knot_s[0]")])
def test_bad_knots_are_refused_naming_the_field(knots, costs, field):
    with pytest.raises(InputError) as err:
        StepwiseBatchTime(_coef(), **BUCKETS, decode_knots=knots, decode_knot_s=costs)
    assert err.value.field == f"batch_time.{field}"
