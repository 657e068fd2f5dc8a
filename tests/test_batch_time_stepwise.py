"""The stepwise batch-time model: bucket boundaries, fit recovery with held-out error, file round trip,
bad input, and the simulator running it."""

from __future__ import annotations

import random

import pytest

from fluid.batch_time import BatchShape, batch_time_from_dict
from fluid.batch_time_stepwise import TERMS, StepwiseBatchTime, fit_stepwise
from fluid.errors import InputError

BUCKETS = {"decode_buckets": (1, 2, 4, 8, 16), "token_buckets": (16, 32, 64), "max_prefills": 4, "max_decodes": 8}
TRUE = (2e-3, 1e-7, 2e-6, 3e-6, 4e-5, 6e-5, 1e-10, 5e-3, 4e-4, 3e-5, 2e-6, 0.0, 3e-4, 2e-7, 5e-6)


def _model(coef=TRUE) -> StepwiseBatchTime:
    return StepwiseBatchTime(coef, BUCKETS["decode_buckets"], BUCKETS["token_buckets"], BUCKETS["max_prefills"], BUCKETS["max_decodes"])


def _shape(decodes: int, ctx: int, prefills: int, chunk: int) -> BatchShape:
    return BatchShape(decodes + prefills * chunk, decodes * (ctx + 1) + prefills * chunk, decodes, prefills, prefills * chunk * chunk)


def test_the_small_decode_term_covers_graphs_of_8_to_24_rows_exactly():
    # SMALL_DECODE_ROWS = (8, 24), inclusive: decode-only graphs of 7 and 25 rows are outside it,
    # 8 and 24 inside; an eager decode step of 16 (past the largest graph) never is
    m = StepwiseBatchTime(TRUE, (7, 8, 24, 25), (16,), 2, 4)
    small = TERMS.index("small_decode_s")
    assert [m.features(_shape(d, 10, 0, 0))[small] for d in (7, 8, 24, 25)] == [0.0, 1.0, 1.0, 0.0]
    assert m.features(_shape(5, 10, 0, 0))[small] == 0.0  # padded to the 7-row graph
    eager = StepwiseBatchTime(TRUE, (4,), (16,), 2, 4)
    assert eager.features(_shape(16, 10, 0, 0))[small] == 0.0


def test_bucket_boundaries_pick_padding_and_eager():
    m = _model()
    f = m.features
    assert f(_shape(16, 10, 0, 0))[3] == 16 and f(_shape(16, 10, 0, 0))[7] == 0  # the largest decode graph, exactly
    assert f(_shape(17, 10, 0, 0))[3] == 17 and f(_shape(17, 10, 0, 0))[7] == 1  # one past it: eager, unpadded
    assert f(_shape(5, 10, 0, 0))[3] == 8
    assert f(_shape(0, 0, 1, 32))[3] == 32 and f(_shape(0, 0, 1, 33))[3] == 64  # token bucket edge
    assert f(_shape(0, 0, 4, 16))[7] == 0 and f(_shape(0, 0, 5, 12))[7] == 1  # max_prefills exactly, then one more
    assert f(_shape(8, 10, 1, 40))[7] == 0 and f(_shape(9, 10, 1, 40))[7] == 1  # max_decodes beside a prefill
    assert f(_shape(0, 0, 1, 65))[7] == 1 and f(_shape(0, 0, 1, 65))[8] == 1  # past the largest token bucket
    eager = _shape(0, 0, 5, 12)
    assert m.step_time_s(eager) == pytest.approx(sum(c * x for c, x in zip(TRUE, f(eager))))


def test_a_decode_only_step_outside_the_decode_graphs_runs_eager_not_in_a_token_bucket():
    # the token buckets are the prefill / mixed graphs: a step of decodes alone never replays one,
    # even when it would fit (6 decodes ≤ max_decodes 8, 6 tokens ≤ the 16-token bucket). Past the
    # largest decode graph (4), or with no decode graphs at all, it is eager and unpadded: with only
    # padded_s_per_token = 1e-4 and eager_s = 2e-3 set, 6 · 1e-4 + 2e-3 = 2.6 ms, where the 16-token
    # bucket would cost 16 · 1e-4 = 1.6 ms without the eager term
    coef = [0.0] * len(TERMS)
    coef[TERMS.index("padded_s_per_token")], coef[TERMS.index("eager_s")] = 1e-4, 2e-3
    for decode_buckets in ((1, 2, 4), ()):
        m = StepwiseBatchTime(tuple(coef), decode_buckets, (16, 32), 2, 8)
        f = m.features(_shape(6, 10, 0, 0))
        assert (f[TERMS.index("padded_s_per_token")], f[TERMS.index("eager_s")]) == (6, 1.0)
        assert m.step_time_s(_shape(6, 10, 0, 0)) == pytest.approx(2.6e-3, rel=1e-12)
    # a prefill beside the same 6 decodes does replay the token bucket: 6 + 4 = 10 tokens pad to 16
    m = StepwiseBatchTime(tuple(coef), (1, 2, 4), (16, 32), 2, 8)
    assert m.features(_shape(6, 10, 1, 4))[TERMS.index("padded_s_per_token")] == 16


def test_fit_recovers_a_known_model_and_reports_heldout_error():
    truth, rng = _model(), random.Random(4)
    rows = []
    for d in (1, 2, 3, 8, 12, 16, 20):
        for ctx in (10, 100, 1000, 3000):
            rows.append((_shape(d, ctx, 0, 0), f"decode {d}x{ctx}"))
    for p in (1, 2, 4, 6):
        for chunk in (8, 15, 30, 60, 100):
            rows.append((_shape(0, 0, p, chunk), f"prefill {p}x{chunk}"))
            rows.append((_shape(3, 200, p, chunk), f"mixed {p}x{chunk}"))
    data = [(s, truth.step_time_s(s) * (1 + rng.uniform(-0.002, 0.002)), lab) for s, lab in rows for _ in range(2)]
    fit = fit_stepwise(data, **BUCKETS)
    assert fit.heldout_mape < 0.01 and fit.in_sample_mape < 0.005
    # the in-sample error is the fitted model's mean |model − measured| / measured over the rows
    in_sample = sum(abs(fit.model.step_time_s(s) - y) / y for s, y, _ in data) / len(data)
    assert fit.in_sample_mape == pytest.approx(in_sample, rel=1e-9) and in_sample > 1e-4
    # the ±0.2 % noise averages 0.1 % in |error| / time: a relative error cannot fall far below it
    assert fit.heldout_mape > 5e-4 and all(v > 5e-4 for v in fit.heldout_mape_by_region.values())
    assert set(fit.heldout_mape_by_region) == {"decode", "prefill", "mixed"}
    assert fit.worst_region in fit.heldout_mape_by_region
    assert fit.heldout_mape_by_region[fit.worst_region] == max(fit.heldout_mape_by_region.values())
    assert all(c >= 0 for c in fit.model.coefficients)
    # the fluid benchmark's linear3 is fitted to the model; its error is measured, not assumed
    assert fit.linear_vs_model_mape > 0.01 and fit.model.linear_coefficients() == fit.model.linear
    # and against the measurements: the same linear3 over the rows, |lin − measured| / measured
    from fluid.batch_time import Linear3BatchTime

    lin = Linear3BatchTime(*fit.model.linear)
    by_hand = sum(abs(lin.step_time_s(s) - y) / y for s, y, _ in data) / len(data)
    assert fit.linear_vs_measured_mape == pytest.approx(by_hand, rel=1e-9)


def test_linear3_cannot_fit_what_stepwise_does():
    """Steps whose cost is per sequence (eager cohorts): linear3 misses them, stepwise does not."""
    truth = _model()
    rows = [(_shape(0, 0, p, n), truth.step_time_s(_shape(0, 0, p, n)), f"cohort {p}x{n}") for p in (1, 2, 3, 4, 5, 8, 16, 32) for n in (4, 8, 12, 40)]
    from fluid.batch_time_fit import fit_linear

    lin = fit_linear([(s, t) for s, t, _ in rows], "linear3")
    assert lin.mape > 0.05
    assert fit_stepwise(rows, **BUCKETS).heldout_mape < 0.01


def test_round_trip_through_a_workload_mapping():
    m = StepwiseBatchTime(TRUE, (1, 2), (16,), 2, 4, (1e-3, 1e-7, 1e-6))
    again = batch_time_from_dict(m.to_dict(), source="w.yaml")
    assert again == m and again.linear_coefficients() == (1e-3, 1e-7, 1e-6)


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda d: d["coefficients"].pop("pair_s"), "pair_s"),
        (lambda d: d["coefficients"].update(eager_s=-1.0), "eager_s"),
        (lambda d: d.update(token_buckets=[32, 16]), "token_buckets"),
        (lambda d: d.update(max_prefills="4"), "max_prefills"),
    ],
)
def test_bad_mapping_names_the_field(change, needle):
    data = _model().to_dict()
    change(data)
    with pytest.raises(InputError) as err:
        batch_time_from_dict(data, source="w.yaml")
    assert needle in str(err.value) and "w.yaml" in str(err.value)


def test_a_bad_model_under_another_field_names_that_field_and_keeps_the_whole_message():
    # the model's own check names `batch_time.token_buckets`; read as part of a larger file the
    # error names the caller's field instead, and the message (which has a colon) stays whole
    data = _model().to_dict()
    data["token_buckets"] = [32, 16]
    with pytest.raises(InputError) as err:
        batch_time_from_dict(data, source="fleet.yaml", field="pools[1].batch_time")
    assert err.value.field == "pools[1].batch_time.token_buckets" and err.value.source == "fleet.yaml"
    assert str(err.value) == ("fleet.yaml, field 'pools[1].batch_time.token_buckets': must be strictly increasing "
                              "positive integers (empty: no graphs), got (32, 16)")


def test_simulator_runs_the_stepwise_model():
    from runtime.kv_blocks import KVBlockManager
    from runtime.request import Request
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate

    m = _model()
    reqs = [Request(i, 0.001 * i, 20, 5) for i in range(6)]
    res = simulate(make_scheduler("vllm-v1", KVBlockManager(4096, 16)), reqs, m)
    assert all(r.finished for r in reqs)
    assert res.end_s > 6 * TRUE[0]  # every step paid at least c0
    assert len(TERMS) == len(TRUE)


def test_an_eager_step_pays_eager_s_once_and_eager_s_per_seq_per_sequence_by_hand():
    # only the eager terms set: 1 ms per eager step plus 0.1 ms per sequence in it
    coef = tuple(1e-3 if t == "eager_s" else 1e-4 if t == "eager_s_per_seq" else 0.0 for t in TERMS)
    m = StepwiseBatchTime(coef, (1, 2), (16,), 2, 4)
    assert m.step_time_s(BatchShape(8, 100, 8, 0)) == pytest.approx(1e-3 + 8 * 1e-4)  # 8 decodes: past the graphs
    assert m.step_time_s(BatchShape(40, 100, 1, 3)) == pytest.approx(1e-3 + 4 * 1e-4)  # 3 prefills > max_prefills
    assert m.step_time_s(BatchShape(2, 100, 2, 0)) == 0.0  # a captured decode graph: nothing eager
