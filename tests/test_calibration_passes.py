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
    assert r["heldout_step_mape_refitted"]["both_passes"] == pytest.approx(cal["heldout_step_mape"], rel=1e-12)
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
