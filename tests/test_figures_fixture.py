"""Figures and the report from small hand-made result files (no simulation): exact table cells,
λ* from bisection.json, and a clear exit 2 for corrupt result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validation.cli import main
from validation.store import rebuild_table

PNG = b"\x89PNG\r\n\x1a\n"


def _series(latency_s: float) -> dict:
    return {
        "time": {"edges_s": [0.0, 1.0, 2.0], "decode_tokens_per_s": [10.0, 12.0], "arrivals_per_s": [1.0, 1.0],
                 "in_system": [0, 3, 1], "kv_used_tokens": [0.0, 50.0, 20.0]},
        "by_index": {"index": [0.5, 2.5], "mean_latency_s": [latency_s, latency_s * 2], "mean_ttft_s": [0.1, 0.2]},
        "quantiles": {"q": [50, 99], "ttft_s": [0.1, 0.3], "tbt_s": [0.01, 0.05], "latency_s": [latency_s, latency_s * 3]},
        "tiers": [],
    }


def _point(root: Path, policy: str, load: float, seed: int, latency_s: float, status: str = "ok") -> None:
    pid = f"{policy}{int(load * 100)}{seed}".ljust(12, "0")[:12]
    folder = root / "points" / f"w__{policy}__L{load:g}__s{seed}__{pid}"
    folder.mkdir(parents=True)
    result = {"point_id": pid, "experiment": "02-latency-vs-load", "kind": "grid", "workload": "w", "policy": policy,
              "scheduler": policy, "load": load, "rate_scale": load, "seed": seed, "requests": 10, "knobs": {},
              "status": status, "error": None if status == "ok" else "no thresholds fit", "policy_how": None,
              "fluid": {"throughput_star_tokens_per_s": 100.0 * load, "kv_capacity_tokens": 1000, "stable": True,
                        "memory_star_tokens": 500.0, "iteration_time_star_s": 0.05},
              "summary": {"mean_latency_s": latency_s, "p99_latency_s": 3 * latency_s, "throughput_tokens_per_s": 95.0 * load,
                          "peak_kv_tokens": 600},
              "derived": {"throughput_over_offered": 0.95, "restart_rate": 0.0, "latency_growth": 1.0}}
    (folder / "result.json").write_text(json.dumps(result))
    (folder / "series.json").write_text(json.dumps(_series(latency_s)))


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "02-latency-vs-load"
    root.mkdir()
    (root / "sweep.json").write_text(json.dumps({"experiment": "02-latency-vs-load", "smoke": False, "command": "fluidsched sweep X --out Y"}))
    (root / "experiment.yaml").write_text("name: 02-latency-vs-load\ndescription: fixture\nworkloads: [w]\nloads: [0.5, 0.9]\npolicies: [wait, fcfs]\n")
    for seed, (a, b) in enumerate([(1.0, 2.0), (3.0, 4.0)]):
        _point(root, "wait", 0.5, seed, a)
        _point(root, "wait", 0.9, seed, b)
        _point(root, "fcfs", 0.5, seed, a / 2)
    _point(root, "fcfs", 0.9, 0, 0.0, status="error")
    (root / "bisection.json").write_text(json.dumps([
        {"workload": "w", "policy": "wait", "seed": s, "criterion": "stable", "bound": "bracket", "lo": lo, "hi": lo + 0.02,
         "lambda_star_load": lo + 0.01, "half_width": 0.01, "capacity_scale": 2.0, "total_rate_per_s": 10.0, "knobs": {},
         "evaluations": []} for s, lo in enumerate([0.8, 0.9])]))
    rebuild_table(root)
    return root


def test_report_cells_are_means_with_t_intervals_in_the_file_order(sweep, tmp_path):
    assert main(["report", str(sweep.parent), "--out", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    table = text.split("**mean latency (s), w**")[1].split("\n\n")[1].splitlines()
    assert table[0] == "| policy | load 0.5 | load 0.9 |"
    # wait at 0.5: seeds 1.0 and 3.0 -> mean 2, half-width t_{0.975,1} · √2 / √2 = 12.7
    assert table[2] == "| wait | 2 ± 12.7 | 3 ± 12.7 |"
    assert table[3] == "| fcfs | 1 ± 6.35 | no policy |"
    # λ*: midpoints 0.81 and 0.91 -> 0.86 ± (12.706 · 0.0707 / √2 + 0.01); in req/s × θ* · Σλ = 20
    lam = next(line for line in text.splitlines() if line.startswith("| w | wait | stable"))
    assert "0.860 ± 0.645" in lam and "17.2 ± 13" in lam and "[0.800, 0.820], [0.900, 0.920]" in lam
    assert "no thresholds fit" in text


def test_figures_from_fixture_files_only(sweep, capsys):
    assert main(["figures", str(sweep)]) == 0
    drawn = [Path(p) for p in capsys.readouterr().out.split()]
    assert {p.stem for p in drawn} == {"latency_vs_load", "latency_by_prompt"}
    assert all(p.read_bytes()[:8] == PNG for p in drawn)


def test_corrupt_result_files_are_exit_2_naming_the_file(sweep, capsys):
    series = next((sweep / "points").glob("w__wait__L0.9__s0__*/series.json"))  # one the figures read
    series.write_text("{not json")
    assert main(["figures", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert str(series) in err and "rerun the sweep" in err and "Traceback" not in err
    (sweep / "points.sqlite").write_bytes(b"this is not a database" * 10)
    assert main(["figures", str(sweep)]) == 2
    assert "cannot read the results table" in capsys.readouterr().err


def test_figures_of_an_empty_folder_say_what_they_looked_for(tmp_path, capsys):
    assert main(["figures", str(tmp_path)]) == 2
    assert "looked for points.sqlite" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_gpu_points_are_reported_beside_the_simulator_prediction(sweep, tmp_path):
    import shutil

    gpu = sweep.with_name(sweep.name + "-gpu")
    shutil.copytree(sweep, gpu)
    (gpu / "sweep.json").write_text(json.dumps({"experiment": "02-latency-vs-load", "device": "NVIDIA H200", "command": "gpu run"}))
    target = next((gpu / "points").glob("w__wait__L0.5__s0__*/result.json"))
    result = json.loads(target.read_text())
    result["summary"]["mean_latency_s"] = 1.1  # predicted 1.0: +10 %
    target.write_text(json.dumps(result))
    rebuild_table(gpu)
    assert main(["report", str(sweep.parent), "--out", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "## 02-latency-vs-load-gpu" not in text and text.count("## 02-latency-vs-load") == 1
    assert "Measured on the GPU (02-latency-vs-load-gpu: NVIDIA H200)" in text
    row = next(line for line in text.splitlines() if line.startswith("| w | wait | 0.5 | 0 |"))
    assert "1.1 / 1 (+10.0 %)" in row and "47.5 / 47.5 (+0.0 %)" in row
