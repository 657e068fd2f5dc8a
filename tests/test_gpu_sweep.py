"""`fluidsched sweep --engine gpu` on CPU with the tiny model: the same points as the simulated
sweep (same ids, same arrivals), written beside it as `<experiment>-gpu`, and the report's
measured-vs-predicted table built from it; resume and bad flags."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from validation import store  # noqa: E402
from validation.cli import main  # noqa: E402
from validation.experiment import load_experiment  # noqa: E402
from validation.runner import plan  # noqa: E402
from validation.points import point_id  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GPU_FLAGS = ["--engine", "gpu", "--model", "tiny-llama", "--device", "cpu", "--quiet"]


def _experiment(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""name: tiny-gpu-check
description: two policies of experiment 8's default-h200 workload, a few requests
workloads:
  - {{label: default-h200, workload: {ROOT / 'docs' / 'default-h200.yaml'}}}
loads: [0.3]
policies:
  - {{label: wait, scheduler: wait, solve: {{policy: wait, method: cli, args: [--service-rule, cohort]}}}}
  - vllm-v1
seeds: [0]
requests: 10
""")
    return path


def _arrivals(folder: Path) -> list[tuple]:
    rows = csv.DictReader(io.StringIO(gzip.decompress((folder / "requests.csv.gz").read_bytes()).decode()))
    return sorted((r["request_id"], r["type"], r["prompt_tokens"], r["output_tokens"], r["arrival_s"]) for r in rows)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpusweep")
    exp = _experiment(tmp)
    results = tmp / "results"
    assert main(["sweep", str(exp), "--out", str(results / "tiny-gpu-check"), "--jobs", "1", "--quiet"]) == 0
    assert main(["sweep", str(exp), "--out", str(results / "tiny-gpu-check-gpu"), *GPU_FLAGS]) == 0
    return exp, results


def test_gpu_folder_holds_the_simulated_points_with_the_same_arrivals(swept):
    exp, results = swept
    sim, gpu = results / "tiny-gpu-check", results / "tiny-gpu-check-gpu"
    planned = {point_id(p) for p in plan(load_experiment(exp))[0]}
    sim_results = {r["point_id"]: r for r in store.read_results(sim)}
    gpu_results = {r["point_id"]: r for r in store.read_results(gpu)}
    assert len(planned) == 2 and set(sim_results) == planned and set(gpu_results) == planned
    for pid, r in gpu_results.items():
        assert r["status"] == "ok", r.get("error")
        assert r["summary"]["executor"] == "cpu" and sim_results[pid]["summary"]["executor"] == "simulated"
        assert r["summary"]["completed"] == 10
        assert (r["policy"], r["load"], r["seed"], r["requests"]) == tuple(sim_results[pid][k] for k in ("policy", "load", "seed", "requests"))
    folders = sorted(p.name for p in store.points_dir(gpu).iterdir())
    assert folders == sorted(p.name for p in store.points_dir(sim).iterdir())
    for name in folders:  # the very same requests, arriving at the very same times
        assert _arrivals(store.points_dir(gpu) / name) == _arrivals(store.points_dir(sim) / name)
        config = json.loads((store.points_dir(gpu) / name / "config.json").read_text())
        assert config["executor"] == "cpu" and config["device"] == "cpu" and config["model_label"] == "tiny-llama"
    wait_folder = next(n for n in folders if "__wait__" in n)
    assert (store.points_dir(gpu) / wait_folder / "policy.json").is_file()  # WAIT solved for the point, as simulated
    meta = json.loads((gpu / "sweep.json").read_text())
    assert meta["engine"] == "gpu" and meta["device"] == "cpu" and meta["model"] == "tiny-llama"
    assert meta["versions"]["torch"] and meta["host"]["cpu_cores"] >= 1
    assert "--engine gpu --model tiny-llama --device cpu" in meta["command"]


def test_report_prints_measured_against_predicted_from_the_gpu_folder(swept):
    from validation.report import write_report

    _, results = swept
    text = write_report(results).read_text()
    assert "Measured on the GPU (tiny-gpu-check-gpu: cpu)" in text
    assert "## tiny-gpu-check-gpu" not in text  # reported beside its predictions, not on its own
    gpu = {r["point_id"]: r for r in store.read_results(results / "tiny-gpu-check-gpu")}
    sim = {r["point_id"]: r for r in store.read_results(results / "tiny-gpu-check")}
    for pid, m in gpu.items():
        p = sim[pid]
        a, b = m["summary"]["mean_latency_s"], p["summary"]["mean_latency_s"]
        row = next(line for line in text.splitlines() if line.startswith(f"| default-h200 | {m['policy']} | 0.3 | 0 |"))
        assert f"{a:.4g} / {b:.4g} ({(a - b) / b * 100:+.1f} %)" in row


def test_rerun_skips_finished_points_without_building_the_engine(swept, capsys):
    exp, results = swept
    before = (results / "tiny-gpu-check-gpu" / "results.jsonl.gz").read_bytes()
    assert main(["sweep", str(exp), "--out", str(results / "tiny-gpu-check-gpu"), *GPU_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "0 points run, 2 already done" in out and "on the GPU engine" in out  # no engine was built
    assert (results / "tiny-gpu-check-gpu" / "results.jsonl.gz").read_bytes() == before
    meta = json.loads((results / "tiny-gpu-check-gpu" / "sweep.json").read_text())
    assert meta["device"] == "cpu" and len(meta["runs"]) == 2  # the device of the first run is kept


@pytest.mark.parametrize("flags, message", [
    (["--engine", "gpu", "--jobs", "2"], "one at a time"),
    (["--model", "tiny-llama"], "apply to --engine gpu only"),
])
def test_bad_flag_combinations_exit_2(tmp_path, capsys, flags, message):
    exp = _experiment(tmp_path)
    assert main(["sweep", str(exp), "--out", str(tmp_path / "out"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_gpu_results_never_go_into_a_simulated_folder(swept, capsys):
    exp, results = swept
    assert main(["sweep", str(exp), "--out", str(results / "tiny-gpu-check"), *GPU_FLAGS]) == 2
    assert "holds sim results" in capsys.readouterr().err
    assert main(["sweep", str(exp), "--out", str(results / "tiny-gpu-check-gpu"), "--jobs", "1", "--quiet"]) == 2
    assert "holds gpu results" in capsys.readouterr().err
