"""benchmarks/drift_causes.py: the trace's rate bins lead its arrivals (docs/adaptive.md, "Where the
minima came from"); the quick part only (the others rerun the ODE and the simulations)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("drift_causes", ROOT / "benchmarks" / "drift_causes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coarse_trace_bins_feed_the_fluid_work_before_it_arrives_and_1_s_bins_much_less(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert _module().main(["--parts", "lead", "--out", str(out)]) == 0
    rows = [r for r in json.loads(out.read_text())["lead"] if r["experiment"] == "azure-x10"]
    coarse, five, one = sorted(rows, key=lambda r: -r["bin_s"])
    assert coarse["bin_s"] > 20 and five["bin_s"] == 5.0 and one["bin_s"] == 1.0
    # the span's 60 bins: the fluid had half again the decode tokens the trace had by then
    assert coarse["max_lead_tokens"] > 0.4 * coarse["arrived_tokens_then"]
    assert coarse["max_lead_tokens"] > five["max_lead_tokens"] > one["max_lead_tokens"] > 0
    assert one["max_lead_tokens"] < 0.06 * one["arrived_tokens_then"]


def test_an_unknown_part_is_refused_with_exit_2(tmp_path, capsys):
    assert _module().main(["--parts", "lead,nope", "--out", str(tmp_path / "c.json")]) == 2
    assert "unknown part(s) ['nope']" in capsys.readouterr().err
