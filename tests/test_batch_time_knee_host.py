"""The stepwise model's knee, small-decode and prefill-run terms, its host terms fitted on live steps, and the
workload sized from the simulator's capacity (benchmarks/gpu_loop_workload.py)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from fluid.batch_time import BatchShape, batch_time_from_dict
from fluid.batch_time_stepwise import HOST_TERMS, KNEE_CANDIDATES, TERMS, StepwiseBatchTime, fit_host_terms, fit_stepwise
from fluid.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = {"decode_buckets": (1, 4, 8, 16, 24, 32, 64), "token_buckets": (64, 128, 256, 512, 1024), "max_prefills": 8, "max_decodes": 64}


def _coef(**terms) -> tuple[float, ...]:
    return tuple(terms.get(t, 0.0) for t in TERMS)


def _shape(d: int, ctx: int, p: int, chunk: int) -> BatchShape:
    return BatchShape(d + p * chunk, d * (ctx + 1) + p * chunk, d, p, p * chunk * chunk)


def test_knee_and_small_decode_features_at_their_edges():
    m = StepwiseBatchTime(_coef(knee_s_per_token=1.0, small_decode_s=10.0), **BUCKETS, knee_tokens=256)
    assert m.step_time_s(_shape(0, 0, 1, 256)) == 0.0  # exactly at the knee: no second slope yet
    assert m.step_time_s(_shape(0, 0, 1, 257)) == pytest.approx(512 - 256)  # its token bucket is 512
    assert m.step_time_s(_shape(5, 10, 0, 0)) == pytest.approx(10.0)  # decode bucket 8: small
    assert m.step_time_s(_shape(24, 10, 0, 0)) == pytest.approx(10.0)  # bucket 24, the upper edge
    assert m.step_time_s(_shape(4, 10, 0, 0)) == 0.0 and m.step_time_s(_shape(25, 10, 0, 0)) == 0.0  # buckets 4 and 32
    assert m.step_time_s(_shape(16, 10, 1, 16)) == 0.0  # a mixed step is not a decode graph


def test_prefill_run_is_the_kv_a_prefill_token_streams_by_hand():
    m = StepwiseBatchTime(_coef(prefill_run_s_per_token=1.0), **BUCKETS)
    # one 128-token chunk after 3,000 cached tokens: every query streams 3,128 keys
    assert m.step_time_s(BatchShape(128, 3128, 0, 1, 128 * 3128)) == pytest.approx(3128)
    # beside 40 decodes: the decodes' tokens are not prefill tokens (pairs / (168 − 40))
    assert m.step_time_s(BatchShape(168, 3128 + 40 * 61, 40, 1, 128 * 3128)) == pytest.approx(3128)
    # two chunks, 64 after 0 and 64 after 192: the mean over the 128 prefill tokens, (64·64 + 64·256) / 128
    assert m.step_time_s(BatchShape(128, 64 + 256, 0, 2, 64 * 64 + 64 * 256)) == pytest.approx(160)
    assert m.step_time_s(_shape(40, 60, 0, 0)) == 0.0  # no prefill, no run
    assert m.step_time_s(BatchShape(1, 1, 0, 1, 1)) == pytest.approx(1)  # a one-token chunk: the equality edge new = D + 1


def test_fit_recovers_the_prefill_run_a_short_chunk_behind_a_long_prefix_pays():
    """Chunks of 48-512 tokens after 0-3,000 cached ones, timed with a run cost: the fit finds it,
    and a model without the term cannot predict the long prefixes (k-fold)."""
    truth = StepwiseBatchTime(_coef(c0_s=4e-3, padded_s_per_token=1e-5, pair_s=2e-9, prefill_run_s_per_token=1e-6, kv_s_per_token=1e-7), **BUCKETS)
    rng, rows = random.Random(3), []
    for chunk in (48, 128, 256, 512):
        for ctx in (0, 256, 1024, 3000):
            rows.append((BatchShape(chunk, ctx + chunk, 0, 1, chunk * (ctx + chunk)), f"chunk {chunk} after {ctx}"))
    for d in (1, 8, 32, 64):
        rows += [(_shape(d, c, 0, 0), f"decode {d}x{c}") for c in (48, 512, 2048)]
    data = [(s, truth.step_time_s(s) * (1 + rng.uniform(-0.002, 0.002)), lab) for s, lab in rows for _ in range(2)]
    fit = fit_stepwise(data, **BUCKETS)
    assert dict(zip(TERMS, fit.model.coefficients))["prefill_run_s_per_token"] == pytest.approx(1e-6, rel=0.05)
    assert fit.heldout_mape_by_region["chunk"] < 0.01
    import numpy as np

    from fluid.batch_time_stepwise import _folds, _solve

    a = np.array([truth.features(s)[: TERMS.index("prefill_run_s_per_token")] for s, _, _ in data])  # every other term
    y = np.array([t for _, t, _ in data])
    fold, pred = _folds([lab for *_, lab in data], 5, 0), np.empty_like(y)
    for k in range(5):
        pred[fold == k] = a[fold == k] @ _solve(a[fold != k], y[fold != k])
    chunk_rows = np.array([lab.startswith("chunk") for *_, lab in data])
    assert float(np.mean(np.abs(pred - y)[chunk_rows] / y[chunk_rows])) > 0.03


def test_fit_finds_the_knee_it_was_built_with():
    truth = StepwiseBatchTime(_coef(c0_s=4e-3, kv_s_per_token=1e-7, padded_s_per_token=2e-6, knee_s_per_token=2.3e-5, small_decode_s=3e-4),
                              **BUCKETS, knee_tokens=384)
    rng, rows = random.Random(1), []
    for chunk in (16, 48, 100, 128, 200, 256, 300, 384, 450, 512, 700, 1024):
        rows += [(_shape(0, 0, 1, chunk), f"prefill {chunk}"), (_shape(0, 0, 4, max(1, chunk // 4)), f"cohort {chunk}")]
    for d in (1, 4, 8, 16, 24, 32, 64):
        rows += [(_shape(d, c, 0, 0), f"decode {d}x{c}") for c in (48, 512, 2048)]
    data = [(s, truth.step_time_s(s) * (1 + rng.uniform(-0.002, 0.002)), lab) for s, lab in rows for _ in range(2)]
    fit = fit_stepwise(data, **BUCKETS)
    assert fit.model.knee_tokens == 384 and fit.heldout_mape < 0.01
    c = dict(zip(TERMS, fit.model.coefficients))
    assert c["knee_s_per_token"] == pytest.approx(2.3e-5, rel=0.05) and c["small_decode_s"] == pytest.approx(3e-4, rel=0.1)


def test_host_terms_recover_what_live_steps_pay_beyond_the_engine_step():
    engine = StepwiseBatchTime(_coef(c0_s=4e-3, padded_s_per_token=1e-5, kv_s_per_token=1e-7), **BUCKETS)
    host = {"c0_s": 3e-4, "decode_s_per_seq": 1.5e-6, "prefill_s_per_seq": 0.0, "mixed_decode_s_per_seq": 3e-6}
    live = StepwiseBatchTime(tuple(c + host.get(t, 0.0) for t, c in zip(TERMS, engine.coefficients)), **BUCKETS)
    steps = [(_shape(d, 60, p, 48), live.step_time_s(_shape(d, 60, p, 48))) for d in (1, 8, 16, 32, 64) for p in (0, 1, 2, 4)]
    full, got = fit_host_terms(engine, steps)
    assert set(got) == set(HOST_TERMS)
    for t in HOST_TERMS:
        assert got[t] == pytest.approx(host[t], abs=1e-9)
    assert full.step_time_s(_shape(64, 60, 2, 48)) == pytest.approx(live.step_time_s(_shape(64, 60, 2, 48)), rel=1e-6)
    assert full.linear is None  # the linear3 belongs to the engine model: refitted by the caller
    with pytest.raises(InputError, match="host terms need at least 8"):
        fit_host_terms(engine, steps[:7])
    with pytest.raises(InputError, match="finite positive"):
        fit_host_terms(engine, steps[:10] + [(steps[0][0], 0.0)])


def test_a_stored_model_without_the_knee_reads_as_before():
    cal = json.loads((ROOT / "docs/calibration-h200-run4.json").read_text())
    stored = cal["batch_time_stepwise"]
    assert "knee_s_per_token" not in stored["coefficients"] and "knee_tokens" not in stored
    assert "prefill_run_s_per_token" not in stored["coefficients"]
    m = batch_time_from_dict(stored, source="calibration-h200-run4.json")
    again = batch_time_from_dict(m.to_dict(), source="again")
    assert again == m and again.knee_tokens == m.knee_tokens
    assert dict(zip(TERMS, m.coefficients))["prefill_run_s_per_token"] == 0.0
    bad = {**m.to_dict(), "knee_tokens": 0}
    with pytest.raises(InputError, match="knee_tokens"):
        batch_time_from_dict(bad, source="w.yaml")


def test_loads_are_sized_from_the_simulated_capacity():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_loop_workload as g

    cal = json.loads((ROOT / "docs/calibration-h200-run4.json").read_text())
    model = batch_time_from_dict(cal["batch_time_stepwise"], source="calibration")
    probe = g.simulated_capacity_tok_s(cal, model, requests=800)
    assert probe["capacity_tok_s"] == min(probe["carried_tok_s"].values()) < probe["offered_tok_s"]
    wl, _ = g.build(cal, load=0.9, memory_use=0.75, capacity_tok_s=probe["capacity_tok_s"])
    offered = sum(t["rate_per_s"] * t["decode"] for t in wl["types"])
    assert offered == pytest.approx(0.9 * probe["capacity_tok_s"], rel=1e-3)
    fluid, _ = g.build(cal, load=0.9, memory_use=0.75)  # the fluid's capacity from linear3: more than the simulator carries
    assert sum(t["rate_per_s"] * t["decode"] for t in fluid["types"]) > 1.2 * offered


def _knee_rows(truth, seed=1):
    rng, rows = random.Random(seed), []
    for chunk in (16, 48, 100, 128, 160, 192, 224, 256, 300, 384, 450, 512, 700, 1024):
        rows += [(_shape(0, 0, 1, chunk), f"prefill {chunk}"), (_shape(0, 0, 4, max(1, chunk // 4)), f"cohort {chunk}")]
    for d in (1, 4, 8, 16, 24, 32, 64):
        rows += [(_shape(d, c, 0, 0), f"decode {d}x{c}") for c in (48, 512, 2048)]
    return [(s, truth.step_time_s(s) * (1 + rng.uniform(-0.002, 0.002)), lab) for s, lab in rows for _ in range(2)]


@pytest.mark.parametrize("knee", (128, 192, 256, 384, 512))  # the knees the model documents, written out
def test_the_knee_fit_picks_every_candidate_it_is_built_with(knee):
    assert knee in KNEE_CANDIDATES
    truth = StepwiseBatchTime(_coef(c0_s=4e-3, kv_s_per_token=1e-7, padded_s_per_token=2e-6, knee_s_per_token=2.3e-5), **BUCKETS,
                              knee_tokens=knee)
    fit = fit_stepwise(_knee_rows(truth), **BUCKETS)
    assert fit.model.knee_tokens == knee
    assert dict(zip(TERMS, fit.model.coefficients))["knee_s_per_token"] == pytest.approx(2.3e-5, rel=0.05)


def test_a_stepwise_fit_needs_twice_as_many_rows_as_terms_and_positive_times():
    truth = StepwiseBatchTime(_coef(c0_s=4e-3, padded_s_per_token=2e-6), **BUCKETS)
    rows = _knee_rows(truth)
    need = 2 * len(TERMS)
    fit_stepwise(rows[:need], **BUCKETS)  # exactly the minimum: fits
    with pytest.raises(InputError, match=f"needs at least {need} rows, got {need - 1}"):
        fit_stepwise(rows[: need - 1], **BUCKETS)
    for bad in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(InputError, match="finite positive number of seconds"):
            fit_stepwise(rows[:need] + [(rows[0][0], bad, "decode bad")], **BUCKETS)


def test_with_linear3_recovers_a_model_that_is_linear3_and_refuses_one_without_a_fixed_cost():
    from fluid.batch_time_stepwise import with_linear3

    shapes = [_shape(d, c, p, n) for d in (1, 8, 64) for c in (48, 512) for p in (0, 1, 2) for n in (16, 200)]
    linear = StepwiseBatchTime(_coef(c0_s=3e-3, kv_s_per_token=1.5e-7, new_s_per_token=2e-5), **BUCKETS)
    got = with_linear3(linear, shapes).linear
    assert got == pytest.approx((3e-3, 1.5e-7, 2e-5), rel=1e-6)
    with pytest.raises(InputError, match="no fixed per-step cost"):
        with_linear3(StepwiseBatchTime(_coef(kv_s_per_token=1.5e-7, new_s_per_token=2e-5), **BUCKETS), shapes)


def test_a_term_no_step_exercises_gets_zero_not_what_the_solver_left():
    """Host terms fitted on decode-only steps have no evidence for the per-prefill terms: they are
    0 (BVLS alone left them non-zero in 4 of 10 random trials), and so are the engine fit's eager
    terms when every row ran from a graph."""
    import numpy as np

    from fluid.batch_time_stepwise import _solve, _solve_target

    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.random((30, 6))
        a[:, rng.integers(6)] = 0.0
        y = a @ rng.random(6) + 0.01 + 0.01 * rng.random(30)
        for coef in (_solve(a, y), _solve_target(a, 0.3 * y, y)):
            assert np.all(coef[~a.any(axis=0)] == 0.0)
    engine = StepwiseBatchTime(_coef(c0_s=4e-3, padded_s_per_token=1e-5, kv_s_per_token=1e-7), **BUCKETS)
    steps = [(_shape(d, c, 0, 0), engine.step_time_s(_shape(d, c, 0, 0)) * (1.05 + 0.01 * (d % 3))) for d in (1, 4, 8, 16, 32, 64)
             for c in (48, 512)]
    _, host = fit_host_terms(engine, steps)
    assert host["prefill_s_per_seq"] == 0.0 and host["mixed_decode_s_per_seq"] == 0.0
