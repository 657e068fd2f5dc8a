"""benchmarks/gpu_drift.py on its CPU smoke path (tiny model): the file it writes and its bad inputs."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_drift  # noqa: E402

SMOKE = ["--model", "tiny-llama", "--device", "cpu", "--kv-tokens", "2048", "--smoke", "--max-requests", "6",
         "--no-warmup", "--schedulers", "adaptive,static-peak"]


def test_cpu_smoke_runs_live_and_simulated_on_the_same_arrivals(tmp_path, capsys):
    from fluid.workload_io import load_workload
    from validation import drift

    out = tmp_path / "gpu-drift.json"
    assert gpu_drift.main(SMOKE + ["--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["model"] == "tiny-llama" and data["smoke_test"] is True
    assert "torch" in data["versions"] and data["host"]
    # C = 18288 in docs/default-h200.yaml; the 2048-token pool is smaller, so C is lowered to it
    assert data["kv_pool_tokens"] == 2048 and data["kv_capacity_tokens"] == 2048 and data["kv_capacity_lowered_to_pool"]
    # the first six arrivals of the smoke profile, seed 0: their decode tokens are what every run completes
    exp = drift.load_experiment(gpu_drift.DEFAULT_EXPERIMENT, smoke=True)
    workload = dataclasses.replace(load_workload(exp.workload), kv_capacity_tokens=2048)  # rates are fractions of θ* at this C
    profile, rows = drift.build_profile(exp, workload)
    tokens = sum(r.output_tokens for r in drift.experiment_requests(exp, workload, profile, rows, 0)[:6])
    for key in ("runs", "simulated_runs"):
        assert [r["policy"] for r in data[key]] == ["adaptive", "static-peak"]
        for r in data[key]:
            for field in ("experiment", "policy", "cumulative_throughput_vs_fluid_min", "mean_latency_s",
                          "static_mean_latency_s", "static_peak_mean_latency_s"):
                assert field in r, (key, field)
            assert r["requests"] == r["completed"] == 6
            assert r["curves"]["generated_decode_tokens"][-1] == r["curves"]["completed_decode_tokens"][-1] == tokens
            assert len(r["curves"]["fluid_generated_decode_tokens"]) == len(r["curves"]["time_s"])
            assert r["curves"]["time_s"][1] == pytest.approx(0.01)  # the smoke block's grid_s
            assert r["peak_kv_tokens"] <= 2048
        # static-mean was not run: no latency to compare with; static-peak's is its own run's
        assert data[key][0]["static_mean_latency_s"] is None
        assert data[key][0]["static_peak_mean_latency_s"] == pytest.approx(data[key][1]["mean_latency_s"])
    live = data["runs"][0]
    assert live["num_steps"] > 0 and live["median_step_s"] > 0 and live["cap_changes"][0]["time_s"] == 0.0


def test_an_unknown_scheduler_is_refused_before_the_model_loads(tmp_path, capsys):
    args = [a if a != "adaptive,static-peak" else "adaptive,sarathi" for a in SMOKE]
    assert gpu_drift.main(args + ["--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "['sarathi'] not in the experiment's schedulers" in err and "--schedulers" in err
    assert not (tmp_path / "x.json").exists()


def test_a_calibration_replaces_the_workload_files_batch_time(tmp_path):
    calib = tmp_path / "calibration.json"
    model = {"kind": "linear3", "d0_s": 0.004, "d_kv_s_per_token": 1.5e-7, "d_new_s_per_token": 2e-5}
    calib.write_text(json.dumps({"batch_time": model, "table": []}))
    out = tmp_path / "gpu-drift.json"
    assert gpu_drift.main(SMOKE + ["--calibration", str(calib), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["batch_time"] == model and data["batch_time_from"] == str(calib)


@pytest.mark.parametrize("content, says", [("{", "cannot read a calibration JSON"), ('{"table": []}', "no `batch_time`")])
def test_a_bad_calibration_is_refused_before_the_model_loads(tmp_path, capsys, content, says):
    calib = tmp_path / "calibration.json"
    calib.write_text(content)
    assert gpu_drift.main(SMOKE + ["--calibration", str(calib), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert says in err and "--calibration" in err and str(calib) in err
    assert not (tmp_path / "x.json").exists()


def test_sizing_to_the_simulated_capacity_scales_the_profile_by_its_measured_factor(tmp_path):
    """The step profile's fractions become fractions of what the simulator carries with the
    calibration's stepwise model: every scale times capacity / fluid capacity, all recorded."""
    root = Path(__file__).resolve().parents[1]
    calib = root / "docs/calibration-h200-run14-fidelity.json"
    out = tmp_path / "gpu-drift.json"
    assert gpu_drift.main(SMOKE + ["--calibration", str(calib), "--size-to-simulated-capacity", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    sizing = data["sized_to_simulated_capacity"]
    probe = sizing["probe"]
    assert probe["capacity_tok_s"] == min(probe["carried_tok_s"].values()) and probe["overloaded"]
    assert sizing["factor"] == pytest.approx(probe["capacity_tok_s"] / sizing["fluid_capacity_tok_s"], rel=1e-12)
    assert 0.3 < sizing["factor"] < 1.0  # the H200 linear3's θ* overstates what its stepwise model carries
    assert data["profile"]["scales"] == pytest.approx([0.6 * sizing["factor"], 0.95 * sizing["factor"], 0.75 * sizing["factor"]], rel=1e-12)
    # offered 1.5 × θ*: the probe's offer is 1.5 × the fluid capacity
    assert probe["offered_tok_s"] == pytest.approx(1.5 * sizing["fluid_capacity_tok_s"], rel=1e-9)


def test_sizing_to_the_simulated_capacity_needs_a_calibration(tmp_path, capsys):
    assert gpu_drift.main(SMOKE + ["--size-to-simulated-capacity", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "--size-to-simulated-capacity" in err and "needs --calibration" in err
    assert not (tmp_path / "x.json").exists()
