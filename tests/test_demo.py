"""`fluidsched demo`: solves, simulates against the baselines, prints the table, writes files."""

from __future__ import annotations

import json
from pathlib import Path

from validation.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--requests", "400", "--sweep-requests", "150", "--jobs", "1"]) == 0
    table = capsys.readouterr().out
    assert "fluid*" in table
    data = json.loads((out / "demo.json").read_text())
    names = [s["scheduler"] for s in data["summaries"]]
    assert "wait" in names and {"sarathi", "fcfs", "vllm-v0"} <= set(names)
    for name in names:
        assert name in table
        assert (out / name / "summary.json").is_file() and (out / name / "metrics.csv").is_file()
    assert (out / "wait" / "policy.json").is_file()
    assert all(s["completed"] == 400 for s in data["summaries"])
    png = out / "demo_comparison.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the load sweep: every policy at every load of validation/experiments/demo.yaml, and its figure
    from paper_figures.results import read_table
    from validation.experiment import load_experiment

    demo_exp = load_experiment(Path(__file__).resolve().parent.parent / "validation" / "experiments" / "demo.yaml")
    rows = read_table(out / "load-sweep")
    assert len(rows) == len(demo_exp.loads) * len(demo_exp.policies)
    assert {r["requests"] for r in rows} == {150}
    assert "highest load sustained" in table and "fluid capacity θ*" in table
    sweep_png = out / "load-sweep" / "figures" / "demo_load.png"
    assert sweep_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the figure command redraws from the result files alone
    png.unlink()
    sweep_png.unlink()
    assert main(["figures", str(out)]) == 0 and png.is_file()
    assert sweep_png.is_file()
