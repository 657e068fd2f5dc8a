"""`benchmarks/latency_gap.py` on the committed H200 runs: the tile-edge points are the calibration's
pass medians with the tiles `decode_key_tiles` gives, a run against itself is 1 in every region,
the points' figures are read from the fidelity file, and a missing run exits 2."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import latency_gap  # noqa: E402


def test_the_summary_reads_the_committed_runs(tmp_path):
    out = tmp_path / "gap.json"
    assert latency_gap.main(["--runs", "23", "24", "--against", "23", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    r23, r24 = doc["runs"]
    assert r23["grid_over_run23_by_region"] == {k: 1.0 for k in ("chunk", "cohort", "decode", "mixed", "prefill")}
    assert r23["sustain_s_per_point"] == 0.0 and r24["sustain_s_per_point"] == 0.25
    cal = json.loads((ROOT / "docs/calibration-h200-run23-fidelity.json").read_text())
    edges = {e["label"]: e for e in r23["tile_edges"]}
    for label, tiles in (("mixed 96x64 + 1x48 after 0", 2), ("mixed 96x70 + 1x48 after 0", 3), ("mixed 96x129 + 1x48 after 0", 4),
                         ("decode 64x63", 1), ("decode 64x64", 2), ("decode 64x128", 3)):
        times = [r["time_s"] for r in cal["table"] if r["label"] == label]
        assert len(times) == 3 and edges[label]["tiles_per_decode"] == tiles
        assert edges[label]["time_ms"] == round(1e3 * statistics.median(times), 3)
    assert "decode 64x96" not in edges  # a context away from the edges is left out
    fid = json.loads((ROOT / "docs/fidelity-h200-run24.json").read_text())
    point = next(p for p in fid["points"] if (p["scheduler"], p["load"]) == ("sarathi", 0.9))
    mine = next(p for p in r24["points"] if (p["scheduler"], p["load"]) == ("sarathi", 0.9))
    assert mine["sm_mhz"] == point["gpu_clocks"]["clocks.sm"]
    assert mine["latency_live_over_simulated"] == round(point["measured_mean_latency_s"] / point["simulated_mean_latency_s"], 4)


def test_a_run_without_files_exits_2(capsys):
    assert latency_gap.main(["--runs", "23", "999"]) == 2
    assert "run 999: docs/fidelity-h200-run999.json is missing" in capsys.readouterr().err


@pytest.mark.parametrize("context, mixed, tiles", [(63, False, 1), (64, False, 2), (64, True, 2), (70, True, 3)])
def test_edge_labels_parse(context, mixed, tiles):
    cal = {"table": [{"label": f"mixed 8x{context} + 1x48 after 0" if mixed else f"decode 8x{context}", "time_s": t} for t in (1e-3, 3e-3, 2e-3)]}
    (edge,) = latency_gap.tile_edges(cal)
    assert (edge["context"], edge["tiles_per_decode"], edge["time_ms"], edge["prompts"]) == (context, tiles, 2.0, 1 if mixed else 0)


def test_calibrations_compared_region_by_region_with_the_first(tmp_path):
    a0, b = ROOT / "docs/sustain-ab-h200/cal-a0.json", ROOT / "docs/sustain-ab-h200/cal-b.json"
    out = tmp_path / "ab.json"
    assert latency_gap.main(["--calibrations", str(a0), str(b), "--out", str(out)]) == 0
    first, second = json.loads(out.read_text())["calibrations"]
    assert set(first["over_first_by_region"].values()) == {1.0} and (first["sustain_s_per_point"], second["sustain_s_per_point"]) == (0.0, 0.25)
    ta, tb = (latency_gap._median_times(json.loads(p.read_text())) for p in (a0, b))
    mixed = [tb[k] / ta[k] for k in ta.keys() & tb.keys() if k.startswith("mixed ")]
    assert second["over_first_by_region"]["mixed"] == round(statistics.median(mixed), 4)


def test_calibrations_need_two_files_that_exist(tmp_path, capsys):
    assert latency_gap.main(["--calibrations", str(ROOT / "docs/sustain-ab-h200/cal-a0.json")]) == 2
    assert "two or more --calibrations files" in capsys.readouterr().err
    assert latency_gap.main(["--calibrations", str(ROOT / "docs/sustain-ab-h200/cal-a0.json"), str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such file" in capsys.readouterr().err
