"""benchmarks/calibration_passes.py: pass-to-pass drift of a calibration and its held-out error."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
pytest.importorskip("scipy")

from calibration_passes import main, passes_report

CALIBRATION = ROOT / "docs/calibration-h200-run13.json"


def test_refit_reproduces_the_recorded_heldout_error_and_a_planted_drift_shows_by_region():
    cal = json.loads(CALIBRATION.read_text())
    r = passes_report(cal)
    assert r["points"] == 102
    # the file's fit predates the decode key-tile term: the refit, with it, lands within 0.1 % of it
    assert r["heldout_step_mape_refitted"]["both_passes"] == pytest.approx(cal["heldout_step_mape"], rel=1e-3)
    drifted = copy.deepcopy(cal)
    for row in drifted["table"]:
        if row["pass"] == 1 and row["label"].startswith("decode"):
            row["time_s"] *= 0.9  # pass 1's decodes 10 % faster: the machine, not the shape
        elif row["pass"] == 1:
            row["time_s"] = next(x["time_s"] for x in drifted["table"] if x["label"] == row["label"] and x["pass"] == 0)
    d = passes_report(drifted)
    assert d["pass1_over_pass0_median_by_region"]["decode"] == pytest.approx(0.9 * r["pass1_over_pass0_median_by_region"]["decode"], rel=1e-12)
    assert d["pass1_over_pass0_median_by_region"]["prefill"] == 1.0 and d["pass1_over_pass0_median_by_region"]["mixed"] == 1.0
    assert d["heldout_step_mape_refitted"]["both_passes"] > r["heldout_step_mape_refitted"]["both_passes"]


def test_bad_inputs_exit_2_with_the_file_named(tmp_path, capsys):
    one_pass = json.loads(CALIBRATION.read_text())
    one_pass["table"] = [r for r in one_pass["table"] if r["pass"] == 0]
    path = tmp_path / "one-pass.json"
    path.write_text(json.dumps(one_pass))
    assert main([str(path)]) == 2
    assert f"error: {path}: the calibration has no point timed in both pass 0 and pass 1" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert main([str(other)]) == 2
    assert "not a calibration file with a stepwise fit" in capsys.readouterr().err


def _rows(times: dict) -> list[dict]:
    return [{"label": label, "pass": p, "time_s": t} for label, pair in times.items() for p, t in enumerate(pair)]


def test_pass_drift_by_point_and_region_and_when_it_warns():
    from runtime.gpu.calibrate import PASS_DRIFT_WARN, pass_drift, pass_drift_warning

    drift = pass_drift(_rows({"decode 8": (10.0, 9.5), "decode 16": (20.0, 19.0), "prefill 64": (4.0, 4.0)}))
    assert drift["points"] == 3 and drift["pass1_over_pass0_median"] == 0.95
    assert drift["pass1_over_pass0_median_by_region"] == {"decode": 0.95, "prefill": 1.0}
    assert drift["pass1_over_pass0_mean_abs_deviation"] == pytest.approx(0.1 / 3)
    assert "decode points 0.950" in pass_drift_warning(drift) and PASS_DRIFT_WARN == 0.02
    # within 2 % everywhere: no warning; one region beyond it while the median is 1: a warning naming it
    assert pass_drift_warning(pass_drift(_rows({"decode 8": (10.0, 9.85), "prefill 64": (4.0, 4.06)}))) is None
    regional = pass_drift(_rows({"decode 8": (10.0, 10.0), "decode 16": (10.0, 10.0), "mixed 1": (10.0, 10.3)}))
    assert regional["pass1_over_pass0_median"] == 1.0 and "mixed points 1.030" in pass_drift_warning(regional)
    assert pass_drift(_rows({"decode 8": (10.0,)})) is None and pass_drift_warning(None) is None
    assert "with --passes 3" in pass_drift_warning(drift)  # two passes: advice to take three
    three = pass_drift(_rows({"decode 8": (10.0, 9.5, 10.0), "decode 16": (20.0, 19.0, 20.0), "prefill 64": (4.0, 4.0, 4.0)}))
    line = pass_drift_warning(three)
    assert "decode points 0.950" in line and "drops one slow pass" in line and "--passes 3" not in line
