"""benchmarks/live_gap_probe.py: a recorded live window replayed on the engine, per timing mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
pytest.importorskip("torch")
pytest.importorskip("transformers")

import live_gap_probe

STEPS = ROOT / "docs/fidelity-h200-run22-steps.json.gz"
CAL = ROOT / "docs/calibration-h200-run22-fidelity.json"


def test_groups_fit_the_pool_share_and_keep_the_order():
    class Kv:
        num_blocks = 10

        @staticmethod
        def blocks_for_tokens(t):
            return -(-t // 16)

    class Timer:
        kv = Kv()

    comps = [[(16, 0, True)] * 3, [(16, 0, True)] * 5, [(32, 0, True)], [(16, 0, True)] * 8]  # 3, 5, 2, 8 blocks
    groups = live_gap_probe._groups(Timer(), comps)  # cap 8 blocks: exactly full is kept together
    assert groups == [comps[:2], comps[2:3], comps[3:]]


def test_unknown_run_is_a_clear_error_exit_2(capsys, tmp_path):
    assert live_gap_probe.main([str(STEPS), str(CAL), "--runs", "wait-L0.90,nope", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "has no run nope" in err and "wait-L0.90" in err
    assert not (tmp_path / "x.json").exists()


def test_every_mode_is_summarised_against_the_model_live_and_execute(tmp_path):
    out = tmp_path / "probe.json"
    assert live_gap_probe.main([str(STEPS), str(CAL), "--model", "tiny-llama", "--device", "cpu", "--window", "6",
                                "--runs", "vllm-v1-L0.90", "--out", str(out)]) == 0
    run = json.loads(out.read_text())["runs"]["vllm-v1-L0.90"]
    assert run["steps"] == 6
    for mode in live_gap_probe.MODES + live_gap_probe.TIMINGS:
        assert len(run[mode]["times"]) == 6
        assert all(t > 0 for t in run[mode]["times"])
    # execute against itself is exactly 1 in every region; the first step of a group is left out
    assert all(v["median_over_execute"] == 1.0 for v in run["execute"]["by_region"].values())
    assert sum(v["steps"] for v in run["execute"]["by_region"].values()) == 6 - run["groups"]
