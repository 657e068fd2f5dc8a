"""`benchmarks/gpu_fidelity.py --smoke`: the one GPU evidence command, end to end on CPU (tiny-llama)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("cvxpy")  # the WAIT thresholds are solved in the run

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_run_writes_every_point_and_the_docs_collect_it(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'benchmarks'}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_fidelity.py"), "--out-dir", str(out), "--smoke", "--requests", "6",
                           # a calibration timed on a loaded CPU can fail its own sanity checks (d0 <= 0): the
                           # plumbing is what this tests, so it reuses the committed H200 calibration
                           "--reuse-calibration", str(ROOT / "docs/calibration-h200-fidelity.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]
    fid = json.loads((out / "fidelity.json").read_text())
    assert fid["smoke"] is True and fid["smoke_test_reused_calibration"] is True and fid["model"] == "tiny-llama" and fid["cut_by_deadline"] == []
    assert [(p["scheduler"], p["load"], p["completed"]) for p in fid["points"]] == [("wait", 0.5, 6), ("vllm-v1", 0.5, 6), ("sarathi", 0.5, 6)]
    for key in ("measured_tok_s", "simulated_tok_s", "measured_mean_latency_s", "simulated_mean_latency_s", "measured_evictions", "simulated_evictions"):
        assert all(key in p for p in fid["points"])
    assert fid["heldout_step_mape"] is not None and fid["batch_time_model"]["kind"] == "stepwise"
    docs = tmp_path / "docs"
    docs.mkdir()
    subprocess.run([sys.executable, str(ROOT / "benchmarks/fidelity_docs.py"), str(out), "--tag", "cpu", "--command", "smoke", "--docs", str(docs)],
                   check=True, cwd=ROOT, capture_output=True, text=True, timeout=60)
    collected = json.loads((docs / "fidelity-cpu.json").read_text())
    assert collected["points"] == fid["points"] and collected["device"] == fid["device"]

