"""Every experiment under validation/experiments/ at --smoke size, then every figure and the
report built from those result files alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from paper_figures.results import read_table
from validation.cli import main
from validation.experiment import load_experiment
from validation.runner import plan

EXPERIMENTS = sorted((Path(__file__).resolve().parent.parent / "validation" / "experiments").glob("*.yaml"))
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for path in EXPERIMENTS:
        assert main(["sweep", str(path), "--out", str(root / path.stem), "--smoke", "--jobs", "1", "--quiet"]) == 0, path.name
    return root


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_smoke_runs_every_point(smoke_results, path):
    experiment = load_experiment(path, smoke=True)
    grid, chains = plan(experiment)
    rows = read_table(smoke_results / path.stem)
    assert sorted(r["point_id"] for r in rows if r["kind"] == "grid") == sorted(
        __import__("validation.points", fromlist=["point_id"]).point_id(p) for p in grid)
    assert any(r["status"] == "ok" for r in rows), "no point of the experiment ran"
    bisection = read_table(smoke_results / path.stem, "bisection")
    assert len([b for b in bisection if "policy" in b]) == len(chains)


def test_full_size_experiments_parse_with_their_stated_sizes():
    for path in EXPERIMENTS:
        full, smoke = load_experiment(path), load_experiment(path, smoke=True)
        grid_full, grid_smoke = plan(full)[0], plan(smoke)[0]
        assert len(grid_smoke) <= len(grid_full)
        assert max(p["requests"] for p in grid_smoke) <= 300, path.name  # smoke means seconds


def test_every_figure_builds_from_the_smoke_results(smoke_results, capsys):
    from paper_figures.cli import SWEEP_FIGURES

    assert main(["figures", str(smoke_results)]) == 0
    drawn = [Path(line) for line in capsys.readouterr().out.split()]
    assert all(p.read_bytes()[:8] == PNG for p in drawn)
    names = {p.stem for p in drawn}
    assert names == set(SWEEP_FIGURES)  # each figure script drew at least once


def test_report_holds_every_experiment_table_and_figure(smoke_results):
    assert main(["report", str(smoke_results)]) == 0
    text = (smoke_results / "report.md").read_text()
    for path in EXPERIMENTS:
        assert f"## {load_experiment(path).name}" in text
        assert f"fluidsched sweep {path.as_posix()}" in text or f"--out {(smoke_results / path.stem).as_posix()}" in text
    for line in text.splitlines():
        if line.startswith("!["):
            target = smoke_results / line.split("](")[1].rstrip(")")
            assert target.read_bytes()[:8] == PNG, target
    assert "**λ\\* by bisection**" in text and "Smoke size" in text


def test_experiment_3_keeps_the_fluid_benchmark_over_time_beside_each_series(smoke_results):
    from fluid.over_time import compare_cumulative
    from paper_figures.results import read_series

    rows = [r for r in read_table(smoke_results / "03-unknown-lengths") if r["status"] == "ok"]
    assert {r["workload"] for r in rows} == {"nested-c-four-classes", "azure-conv"}
    for row in rows:
        series = read_series(smoke_results / "03-unknown-lengths", row["point_id"])
        fot = series["fluid_over_time"]
        run, bench = series["time"]["generated_decode_tokens"], fot["generated_decode_tokens"]
        assert fot["edges_s"] == series["time"]["edges_s"]
        assert run[0] == bench[0] == 0 and all(b >= a for a, b in zip(bench, bench[1:]))
        # the table's columns are the series' ratios: generated tokens first, completed second
        assert row["cum_over_fluid_end"] == pytest.approx(run[-1] / bench[-1], rel=1e-5)
        assert 0 <= row["cum_over_fluid_min"] <= row["cum_over_fluid_end"] + 1e-9
        mine = compare_cumulative(fot["edges_s"], run, bench, from_s=row["warmup_s"])
        assert row["cum_over_fluid_min"] == pytest.approx(mine["min"], rel=1e-5)  # series.json rounds
        assert row["cum_over_fluid_min_at_s"] == pytest.approx(mine["min_at_s"], rel=1e-5)
        done, fluid_done = series["time"]["completed_decode_tokens"], fot["completed_decode_tokens"]
        assert run[-1] == done[-1] and all(g >= c for g, c in zip(run, done))  # a run generates what it completes
        # the fluid too generates before it completes (at the run's end it may still be draining)
        assert all(g >= c - 1e-6 for g, c in zip(bench, fluid_done)) and bench[-1] <= run[-1] * 1.01
        assert row["cum_completed_over_fluid_end"] == pytest.approx(done[-1] / fluid_done[-1], rel=1e-5)
        assert 0 <= row["cum_completed_over_fluid_min"] <= row["cum_completed_over_fluid_end"] + 1e-9
    # the measure is part of those points' ids: points compared by completed tokens are run again
    from validation.points import FLUID_OVER_TIME_MEASURE

    grid, _ = plan(load_experiment(next(p for p in EXPERIMENTS if p.stem == "03-unknown-lengths"), smoke=True))
    assert {p["fluid_over_time"]["measure"] for p in grid} == {FLUID_OVER_TIME_MEASURE}
    other = read_table(smoke_results / "01-fluid-vs-sim")  # experiments that do not ask keep no benchmark
    assert all(r.get("cum_over_fluid_min") is None for r in other)
