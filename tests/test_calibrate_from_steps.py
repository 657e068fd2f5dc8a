"""`calibrate --from-steps`: recorded live steps in the calibration grid (their turn time, the
interleaved timing, each run held out), and the stepwise terms they asked for."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from fluid.batch_time import BatchShape, batch_time_from_dict
from fluid.batch_time_stepwise import TERMS, StepwiseBatchTime

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = {"decode_buckets": (1, 2, 4, 8, 16), "token_buckets": (16, 32, 64), "max_prefills": 4, "max_decodes": 8}


def _step(start, measured, d, p, chunk=8, ctx=20, host=0.0):
    new = d + p * chunk
    return {"start_s": start, "measured_s": measured, "host_s": host, "graph": False, "new_tokens": new, "kv_tokens": d * (ctx + 1) + p * chunk,
            "num_decodes": d, "num_prefills": p, "prefill_attention_pairs": p * chunk * chunk, "kv_used_tokens": 0, "num_evicted": 0}


def test_turn_adds_the_bookkeeping_gap_and_not_idle_time():
    from runtime.gpu.calibrate import IDLE_GAP_S, turn_s

    # gaps after steps 0, 1, 2: 0.1 ms (bookkeeping), just past the idle bound, 0.3 ms; step 3 is the last
    starts = [0.0, 0.0101, 0.0201 + 1.01 * IDLE_GAP_S, 0.0304 + 1.01 * IDLE_GAP_S]
    steps = [_step(t, 0.010, 2, 0) for t in starts]
    assert turn_s(steps, 0) == pytest.approx(0.0101)
    assert turn_s(steps, 2) == pytest.approx(0.0103)
    # an idle gap and the last step take the run's median bookkeeping gap (of 0.1 and 0.3 ms: the upper)
    assert turn_s(steps, 1) == pytest.approx(0.0103)
    assert turn_s(steps, 3) == pytest.approx(0.0103)
    steps[2]["start_s"] = 0.0201 + 0.99 * IDLE_GAP_S  # just below the bound: bookkeeping, counted
    assert turn_s(steps, 1) == pytest.approx(0.010 + 0.99 * IDLE_GAP_S)


def test_decodes_beside_a_prefill_pay_the_mixed_terms_only_there():
    coef = [0.0] * len(TERMS)
    coef[TERMS.index("mixed_decode_s_per_seq")], coef[TERMS.index("decode_prefill_s")] = 1e-4, 1e-5
    m = StepwiseBatchTime(tuple(coef), **BUCKETS)
    decode_only = BatchShape(8, 200, 8, 0, 0)
    mixed = BatchShape(8 + 8, 200, 8, 1, 64)
    assert m.step_time_s(decode_only) == 0.0  # P = 0: neither term
    assert m.step_time_s(mixed) == pytest.approx(8 * 1e-4 + 8 * 1 * 1e-5)


def test_a_stored_nine_term_model_reads_the_new_terms_as_zero():
    cal = json.loads((ROOT / "docs/calibration-h200-run3.json").read_text())
    stored = cal["batch_time_stepwise"]
    assert "mixed_decode_s_per_seq" not in stored["coefficients"]
    m = batch_time_from_dict(stored, source="calibration-h200-run3.json")
    c = stored["coefficients"]
    shape = BatchShape(310, 8128, 118, 4, 9216)  # a cohort step of the run: 4 prompts of 48 beside 118 decodes
    padded = 320  # its token bucket
    old = c["c0_s"] + c["kv_s_per_token"] * 8128 + c["new_s_per_token"] * 310 + c["padded_s_per_token"] * padded \
        + c["decode_s_per_seq"] * 118 + c["prefill_s_per_seq"] * 4 + c["pair_s"] * 9216
    assert m.step_time_s(shape) == pytest.approx(old, rel=1e-12)


def test_live_heldout_predicts_each_run_with_a_fit_that_never_saw_it():
    from runtime.gpu.calibrate import live_heldout

    truth = StepwiseBatchTime((2e-3, 1e-7, 2e-6, 3e-6, 4e-5, 6e-5, 1e-10, 5e-3, 4e-4, 3e-5, 2e-6, 0.0, 0.0, 0.0, 0.0), **BUCKETS)

    def rows_of(run, factor):
        steps, out, t = [], [], 0.0
        for d, p in [(d, p) for d in (1, 2, 4, 6, 8) for p in (0, 1, 2, 3)]:
            s = _step(t, 0.0, d, p)
            from runtime.replay import shape_of

            s["measured_s"] = factor * truth.step_time_s(shape_of(s))
            t += s["measured_s"]
            s["start_s"] = t - s["measured_s"]
            steps.append(s)
            out.append({**{k: s[k] for k in ("new_tokens", "kv_tokens", "num_decodes", "num_prefills", "prefill_attention_pairs")},
                        "label": f"live-x {run}#{len(out)}", "time_s": s["measured_s"], "run": run})
        return steps, out

    a_steps, a_rows = rows_of("a", 1.0)
    b_steps, b_rows = rows_of("b", 1.0)
    c_steps, c_rows = rows_of("c", 2.0)  # run c ran twice as slow: only a fit without it says so
    res = live_heldout(a_rows + b_rows + c_rows, {"a": a_steps, "b": b_steps, "c": c_steps}, BUCKETS)
    ratio = {run: res["per_run"][run]["decode"]["median_measured_over_predicted"] for run in "abc"}
    # c predicted from a and b alone (the truth): exactly 2; a from b (1×) and c (2×) on relative error: k = 1.2.
    # A fit that also saw the run it predicts would give c 2 / 1.11 and a 1 / 1.11.
    assert ratio["c"] == pytest.approx(2.0, rel=1e-3) and ratio["a"] == pytest.approx(1 / 1.2, rel=1e-3)
    assert set(res["pooled"]) == {"decode", "mixed"} and res["all"]["steps"] == 3 * 20


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_calibration_times_recorded_steps_interleaved_and_scores_each_run(tmp_path):
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_steps import build_engine

    from runtime.gpu.calibrate import calibrate_engine
    from runtime.gpu.calibration_grid import calibration_grid

    # every step 10 ms, then 0.2 ms of bookkeeping; wait's scheduler took 0.5 ms of host time, sarathi's none
    steps = {"wait-L0.50": [_step(0.0102 * i, 0.01, 2 + i % 3, i % 5, host=0.5e-3) for i in range(12)],
             "sarathi-L0.50": [_step(0.0102 * i, 0.01, 3, 1 + i % 2) for i in range(6)]}
    path = tmp_path / "steps.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(steps, f)
    engine, info = build_engine("tiny-llama", kv_tokens=4096, device="cpu")
    cal = calibrate_engine(engine, info, model="tiny-llama", grid=calibration_grid(0.02)[::3], repeats=1, passes=1,
                           from_steps=[str(path)], per_region=3, recorded_passes=2)
    live = [r for r in cal["table"] if r["label"].startswith("live-")]
    labels = sorted({r["label"] for r in live})
    # up to 3 per region of the 18 steps: wait has decode-only, mixed and cohort (≥ 4 prefills) steps; sarathi mixed only
    assert {lab.split()[0] for lab in labels} == {"live-decode", "live-mixed", "live-cohort"}
    assert len(live) == 2 * len(labels)  # every composition once per pass
    order = [[r["label"] for r in live if r["pass"] == k] for k in (0, 1)]
    assert sorted(order[0]) == sorted(order[1]) and order[0] != order[1]  # shuffled differently each pass
    for r in live:  # the engine time with its preparation replaced by the recorded host time, plus the recorded gap
        host = 0.5e-3 if "wait" in r["label"] else 0.0
        assert r["recorded_turn_s"] == pytest.approx(0.0102)
        assert r["time_s"] == pytest.approx(r["engine_s"] - r["host_s"] + host + 0.2e-3)
    ho = cal["fits"]["live_heldout_by_run"]
    assert set(ho["per_run"]) == {"steps.json.gz:wait-L0.50", "steps.json.gz:sarathi-L0.50"} and ho["all"]["steps"] == 18
    assert cal["from_steps"] == [str(path)]
    assert any(k.startswith("live-") for k in cal["fits"]["stepwise"]["heldout_mape_by_region"])


def test_cli_rejects_a_bad_steps_file(tmp_path, capsys):
    from validation.cli import main

    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"run": [{"new_tokens": 3}]}))
    assert main(["calibrate", "--device", "cpu", "--model", "tiny-llama", "--from-steps", str(bad), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert "s.json" in err and "lacks" in err
