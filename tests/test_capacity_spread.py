"""benchmarks/capacity_spread.py: the loop's capacity with and without the host terms, per machine."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
pytest.importorskip("scipy")

from capacity_spread import capacities, engine_steps_against, main, spread

CAL = json.loads((ROOT / "docs/calibration-h200-run18-fidelity.json").read_text())


def test_host_terms_lower_the_capacity_and_without_them_both_figures_agree():
    got = capacities(CAL)
    assert got["with_host_terms_tok_s"] < got["engine_step_only_tok_s"]
    # the figure the run sized its loads from, recomputed from its calibration
    sizing = json.loads((ROOT / "docs/fidelity-h200-run18.json").read_text())["sizing"]
    assert got["with_host_terms_tok_s"] == pytest.approx(sizing["capacity_tok_s"], rel=1e-9)
    no_host = copy.deepcopy(CAL)
    no_host["batch_time_stepwise"] = no_host["engine_step_model"]
    same = capacities(no_host)
    assert same["with_host_terms_tok_s"] == same["engine_step_only_tok_s"] == got["engine_step_only_tok_s"]


def test_engine_steps_side_by_side_and_the_spread():
    slower = copy.deepcopy(CAL)
    for r in slower["table"]:
        if r["label"].startswith("decode"):
            r["time_s"] *= 1.1
    ratios = engine_steps_against(CAL, slower)
    assert ratios["decode"] == pytest.approx(1.1) and ratios["mixed"] == 1.0 and set(ratios) == {"prefill", "cohort", "chunk", "decode", "mixed"}
    assert spread([100.0, 104.0, 102.0]) == pytest.approx(0.04)


def test_a_calibration_without_host_terms_exits_2_naming_it(tmp_path, capsys):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({k: v for k, v in CAL.items() if k != "host_terms"}))
    assert main([str(path)]) == 2
    assert f"error: {path}: no host terms in the file" in capsys.readouterr().err
