"""benchmarks/calibration_residuals.py: which grid points the stepwise model misses on every machine."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
pytest.importorskip("scipy")

from calibration_residuals import leave_one_out, main, report

CALIBRATION = json.loads((ROOT / "docs/calibration-h200-run13.json").read_text())


def test_a_point_slower_on_every_machine_comes_first_with_its_sign_and_one_slower_on_one_does_not():
    base = leave_one_out(CALIBRATION)
    assert len(base) == 102
    a, b = copy.deepcopy(CALIBRATION), copy.deepcopy(CALIBRATION)
    for cal, labels in ((a, ("decode 64x512", "prefill 512")), (b, ("decode 64x512",))):
        for row in cal["table"]:
            if row["label"] in labels:
                row["time_s"] *= 1.3  # every pass of the point: 30 % slower than its shape says
    r = report({"a.json": a, "b.json": b})
    top = r["points"][0]
    assert top["label"] == "decode 64x512" and top["same_sign_everywhere"] and top["residuals"]["a.json"] < -0.2 and top["residuals"]["b.json"] < -0.2
    assert "decode 64x512" in r["consistent_points_3pct"]
    planted_once = next(p for p in r["points"] if p["label"] == "prefill 512")
    assert planted_once["residuals"]["a.json"] < -0.2 and planted_once["residuals"]["b.json"] == pytest.approx(base["prefill 512"], abs=0.02)
    assert r["leave_one_out_mape"]["a.json"] > r["leave_one_out_mape"]["b.json"]


def test_a_file_without_a_stepwise_fit_exits_2_naming_it(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert main([str(bad)]) == 2
    assert f"error: {bad}: not a calibration file with a stepwise fit" in capsys.readouterr().err
