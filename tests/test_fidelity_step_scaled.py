"""benchmarks/fidelity_step_scaled.py: a fidelity run's points simulated again from the committed
files, as run and with each point's steps scaled to how fast they ran live."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
pytest.importorskip("scipy")
pytest.importorskip("cvxpy")  # each load's WAIT policy is solved again

from fidelity_step_scaled import main, report, scaled

from fluid.batch_time import BatchShape, batch_time_from_dict


@pytest.mark.parametrize("run", ["run19", "run20"])  # the synchronous loop and the overlapped one
def test_the_rebuilt_points_give_the_recorded_simulation_and_scaled_steps_the_live_latency(tmp_path, run):
    cal = json.loads((ROOT / f"docs/calibration-h200-{run}-fidelity.json").read_text())
    fid = json.loads((ROOT / f"docs/fidelity-h200-{run}.json").read_text())
    r = report(cal, fid, tmp_path)
    assert r["loop"] == ("overlapped" if run == "run20" else "synchronous")
    assert [(p["scheduler"], p["load"]) for p in r["points"]] == [(p["scheduler"], p["load"]) for p in fid["points"]]
    for p in r["points"]:
        assert p["rebuilt_simulated_mean_latency_s"] == p["recorded_simulated_mean_latency_s"]
        assert abs(p["scaled_simulated_mean_latency_s"] / p["measured_mean_latency_s"] - 1) < 0.03


def test_scaling_multiplies_the_engine_step_and_keeps_the_host_terms():
    cal = json.loads((ROOT / "docs/calibration-h200-run20-fidelity.json").read_text())
    full = batch_time_from_dict(cal["batch_time_stepwise"], source="t")
    engine = batch_time_from_dict(cal["engine_step_model"], source="t")
    e, f = scaled(engine, full, 1.1)
    for shape in (BatchShape(64, 64 * 97, 64, 0, 0), BatchShape(300, 9000, 100, 4, 8000)):
        assert e.step_time_s(shape) == pytest.approx(1.1 * engine.step_time_s(shape), rel=1e-12)
        assert f.step_time_s(shape) - e.step_time_s(shape) == pytest.approx(full.step_time_s(shape) - engine.step_time_s(shape), rel=1e-9)


def test_a_fidelity_file_without_points_exits_2(tmp_path, capsys):
    bad = tmp_path / "f.json"
    bad.write_text("{}")
    assert main([str(ROOT / "docs/calibration-h200-run20-fidelity.json"), str(bad)]) == 2
    assert "needs a calibration with a stepwise model and a fidelity file with points and sizing" in capsys.readouterr().err
