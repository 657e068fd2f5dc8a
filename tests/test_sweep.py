"""`fluidsched sweep`: experiment files, resume, atomic point folders, the tidy table, λ* bisection
and replication intervals."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from paper_figures.results import read_bisection, read_table
from validation.bisection import bisect_chain
from validation.cli import main
from validation.experiment import BisectSpec
from validation.stats import lambda_star_estimate, t_interval

EXPERIMENTS = Path(__file__).resolve().parent.parent / "validation" / "experiments"
COUNTEREXAMPLE = EXPERIMENTS / "07-fcfs-counterexample.yaml"


def _sweep(out: Path, experiment: Path = COUNTEREXAMPLE, *extra: str) -> int:
    return main(["sweep", str(experiment), "--out", str(out), "--smoke", "--jobs", "1", "--quiet", *extra])


def _rows(out: Path) -> dict[tuple, dict]:
    return {(r["policy"], json.loads(r["knob_arrivals"])["kind"]): r for r in read_table(out)}


def test_counterexample_table_names_which_policy_restarts(tmp_path):
    out = tmp_path / "ce"
    assert _sweep(out) == 0
    rows = _rows(out)
    assert len(rows) == 12  # 4 policies x 3 arrival patterns, C = 12 only at smoke size
    wait, fcfs = rows[("wait", "trace")], rows[("fcfs-paper-recompute", "trace")]
    # the paper's arrivals at C = M* = 12: WAIT (n = 4) keeps up without a restart ...
    assert wait["restarts"] == 0 and wait["throughput_over_offered"] == pytest.approx(1.0, abs=0.02)
    assert wait["peak_kv_tokens"] <= 12 and wait["fluid_memory_star_tokens"] == pytest.approx(12.0)
    # ... FCFS with the paper's recompute admits greedily, evicts and loses at least 5 % of the throughput
    assert fcfs["restarts"] > 0 and fcfs["throughput_over_offered"] < 0.95
    # latency growth (last quarter / first quarter of requests): flat for WAIT, a growing queue for FCFS
    assert wait["latency_growth"] == pytest.approx(1.0, abs=0.05) and fcfs["latency_growth"] > 1.5
    # evenly spaced arrivals without the burst: FCFS never evicts
    assert rows[("fcfs-paper-recompute", "deterministic")]["restarts"] == 0
    # with the engines' recompute an eviction costs little: FCFS keeps up despite its restarts
    assert rows[("fcfs", "trace")]["restarts"] > 0 and rows[("fcfs", "trace")]["throughput_over_offered"] > 0.99


def test_rerun_skips_finished_points_and_redoes_only_the_missing_one(tmp_path, capsys):
    out = tmp_path / "ce"
    assert _sweep(out) == 0
    capsys.readouterr()
    assert _sweep(out) == 0
    assert "0 points run, 12 already done" in capsys.readouterr().out
    folders = sorted((out / "points").iterdir())
    victim = folders[3]
    before = json.loads((victim / "result.json").read_text())
    shutil.rmtree(victim)
    (out / "results.jsonl.gz").unlink()  # the packed form would still count the point as finished
    # an interrupted write leaves only a temporary folder, which the next run removes
    (out / "points" / ".tmp-half-written-123").mkdir()
    (out / "points" / ".tmp-half-written-123" / "point.json").write_text("{")
    assert _sweep(out) == 0
    assert "1 points run, 11 already done" in capsys.readouterr().out
    assert not list((out / "points").glob(".tmp-*"))
    after = json.loads((victim / "result.json").read_text())
    # same point id, same seed: the same run (all but the wall-clock time it took)
    assert {k: v for k, v in after["summary"].items() if k != "wall_s"} == {k: v for k, v in before["summary"].items() if k != "wall_s"}
    assert len(read_table(out)) == 12


def test_point_folder_holds_config_policy_requests_and_summary(tmp_path):
    out = tmp_path / "ce"
    assert _sweep(out) == 0
    folder = next(p for p in (out / "points").iterdir() if "__wait__" in p.name)
    names = {p.name for p in folder.iterdir()}
    assert {"result.json", "config.json", "policy.json", "series.json", "requests.csv.gz"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["point"]["policy"]["label"] == "wait" and config["scheduler"] == "wait" and config["code_version"]
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "ok" and result["policy_how"].startswith("solve_wait(slack=0)")
    import gzip

    lines = gzip.decompress((folder / "requests.csv.gz").read_bytes()).decode().splitlines()
    assert lines[0].startswith("request_id,") and len(lines) == 1 + 200


def test_other_experiment_in_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "ce"
    assert _sweep(out) == 0
    assert _sweep(out, EXPERIMENTS / "05-throughput-optimality.yaml") == 2
    assert "holds results of experiment '07-fcfs-counterexample'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, field",
    [
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs]\nlods: [1]\n", "lods"),
        ("name: x\nworkloads: [default]\nloads: [0.5, -1]\npolicies: [fcfs]\n", "loads[1]"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [nope]\n", "policies[0].scheduler"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [wait]\n", "policies[0]"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs, fcfs]\n", "policies"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs]\nbisect: {policies: [orca]}\n", "bisect.policies"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs]\nbisect: {lo: 1.0, hi: 0.5}\n", "bisect"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs]\nseeds: [-1]\n", "seeds[0]"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs]\nknobs: {chunk: [1]}\n", "knobs.chunk"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs]\ntiers: [[half, 0.1]]\n", "tiers[0][0]"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs]\ntiers: [[0.5, 0.1], [0.5]]\n", "tiers[1]"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs]\ntiers: [[1.5, 0.1]]\n", "tiers[0][0]"),
        ("name: x\nworkloads: [default]\nloads: [0.5]\npolicies: [fcfs]\ntiers: [[1, 0]]\n", "tiers[0][1]"),
    ],
)
def test_bad_experiment_file_is_exit_2_naming_the_field(tmp_path, capsys, text, field):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"field '{field}'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written for a refused experiment


def test_missing_experiment_and_out_that_is_a_file(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "no such experiment file" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["sweep", str(COUNTEREXAMPLE), "--out", str(blocker), "--smoke"]) == 2
    assert "is a file" in capsys.readouterr().err


def _chain(threshold: float, spec: BisectSpec) -> dict:
    """Drive `bisect_chain` with a fake point that passes iff load <= threshold."""
    gen = bisect_chain(spec, {"workload": "w", "policy": "p", "seed": 0})
    load = next(gen)
    while True:
        ok = load <= threshold
        result = {"status": "ok", "rate_scale": load, "summary": {},
                  "derived": {"throughput_over_offered": 1.0 if ok else 0.5, "latency_growth": 1.0}}
        try:
            load = gen.send(result)
        except StopIteration as stop:
            return stop.value


@pytest.mark.parametrize("threshold", [0.537, 0.9, 1.1999])
def test_bisection_brackets_the_threshold_within_the_tolerance(threshold):
    spec = BisectSpec(policies=("p",), workloads=("w",), lo=0.5, hi=1.2, tolerance=0.01)
    rec = _chain(threshold, spec)
    assert rec["bound"] == "bracket"
    assert rec["lo"] <= threshold < rec["hi"] and rec["hi"] - rec["lo"] <= 0.01
    assert rec["lambda_star_load"] == pytest.approx((rec["lo"] + rec["hi"]) / 2)
    assert rec["evaluations"][0]["load"] == 0.5 and rec["evaluations"][1]["load"] == 1.2


def test_bisection_reports_when_the_bracket_does_not_hold():
    spec = BisectSpec(policies=("p",), workloads=("w",), lo=0.5, hi=1.2, tolerance=0.01)
    below = _chain(0.4999, spec)
    assert below["bound"] == "below" and below["hi"] == 0.5 and len(below["evaluations"]) == 1
    assert _chain(0.5, spec)["bound"] == "bracket"  # exactly the lowest load passes (≤)
    above = _chain(1.2, spec)
    assert above["bound"] == "above" and above["lo"] == 1.2 and len(above["evaluations"]) == 2


def test_stable_criterion_boundaries():
    from validation.bisection import passes

    spec = BisectSpec(policies=(), workloads=(), throughput_tolerance=0.05, latency_growth=0.5)

    def result(ratio, growth):
        return {"status": "ok", "summary": {}, "derived": {"throughput_over_offered": ratio, "latency_growth": growth}}

    assert passes(result(0.95, 1.5), spec)[0]  # exactly at both limits
    assert not passes(result(0.9499, 1.0), spec)[0]
    assert not passes(result(1.0, 1.5001), spec)[0]
    assert not passes({"status": "error", "error": "no policy"}, spec)[0]


def test_t_interval_matches_the_textbook_value():
    est = t_interval([1.0, 2.0, 3.0])
    assert est.mean == 2.0 and est.n == 3
    assert est.half_width == pytest.approx(4.302652729911275 / math.sqrt(3))  # t_{0.975, 2} · s / √n, s = 1
    assert t_interval([5.0]).half_width is None and t_interval([]).mean is None
    star = lambda_star_estimate([{"lambda_star_load": 0.9, "half_width": 0.01}, {"lambda_star_load": 1.0, "half_width": 0.03}])
    assert star.mean == pytest.approx(0.95)
    assert star.half_width == pytest.approx(12.706204736174698 * 0.05 + 0.02)  # t_{0.975,1}·s/√2 + mean half-width


def test_bisection_sweep_writes_lambda_star(tmp_path):
    out = tmp_path / "slo"
    assert _sweep(out, EXPERIMENTS / "04-slo-aware.yaml") == 0
    records = read_bisection(out)
    assert {r["policy"] for r in records} == {"slai-spf-dynamic", "sarathi"}
    for r in records:
        assert r["criterion"] == "slo"
        if r["bound"] == "bracket":
            assert r["hi"] - r["lo"] <= 0.4 and r["evaluations"]
    table = read_table(out, "bisection")
    assert len(table) == len(records)


def test_packed_form_alone_reports_draws_and_resumes(tmp_path, capsys):
    out = tmp_path / "ce"
    assert _sweep(out) == 0
    before = {r["point_id"]: r["restarts"] for r in read_table(out)}
    shutil.rmtree(out / "points")  # what a fresh clone of the repository has: the packed form only
    (out / "points.sqlite").unlink()
    capsys.readouterr()
    assert _sweep(out) == 0
    assert "0 points run, 12 already done" in capsys.readouterr().out
    assert {r["point_id"]: r["restarts"] for r in read_table(out)} == before
    assert main(["figures", str(out)]) == 0 and (out / "figures" / "counterexample.png").is_file()
    assert main(["report", str(out)]) == 0 and "| wait | trace counterexample-burst.csv |" in (out / "report.md").read_text()


def test_points_an_edited_experiment_dropped_leave_the_table(tmp_path):
    path = tmp_path / "exp.yaml"
    out = tmp_path / "out"
    text = "name: edit\nworkloads: [default]\nloads: [0.5, 0.7]\npolicies: [fcfs]\nrequests: 60\n"
    path.write_text(text)
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    assert sorted(r["load"] for r in read_table(out)) == [0.5, 0.7]
    path.write_text(text.replace("[0.5, 0.7]", "[0.5]"))
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    assert [r["load"] for r in read_table(out)] == [0.5]  # the 0.7 point left the table ...
    assert len(list((out / "points").iterdir())) == 2  # ... and its folder stays on disk
