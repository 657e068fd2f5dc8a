"""gpu_fidelity's host-term loads, the capacity probe that must overload, the grid's added decode
graphs and chunk rows, and the fidelity note reading one- and two-load host terms."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fluid.batch_time import batch_time_from_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_host_loads_parse_and_bad_ones_exit_2(capsys):
    from gpu_fidelity import parse_host_loads

    assert parse_host_loads("0.6,0.85") == [0.6, 0.85]
    assert parse_host_loads("0.7") == [0.7]
    assert parse_host_loads("0") == []
    for bad in ("0.6,0.6", "1", "0,0.5", "0.6,x", "", "-0.2"):
        with pytest.raises(SystemExit) as e:
            parse_host_loads(bad)
        assert e.value.code == 2
        assert f"--host-loads {bad!r}" in capsys.readouterr().err


def test_capacity_probe_doubles_its_offer_until_every_scheduler_is_saturated():
    import gpu_loop_workload as g

    cal = json.loads((ROOT / "docs/calibration-h200-run4.json").read_text())
    model = batch_time_from_dict(cal["batch_time_stepwise"], source="calibration")
    plain = g.simulated_capacity_tok_s(cal, model, requests=600)
    assert plain["doublings"] == 0 and plain["overloaded"]  # the fluid overstates the H200: 1.5 × it already overloads
    slow = dict(cal, batch_time={**cal["batch_time"], "d_kv_s_per_token": 8 * cal["batch_time"]["d_kv_s_per_token"],
                                 "d_new_s_per_token": 8 * cal["batch_time"]["d_new_s_per_token"]})  # a fluid 8 × too slow (a CPU smoke run)
    probe = g.simulated_capacity_tok_s(slow, model, requests=600)
    assert probe["overloaded"] and probe["doublings"] >= 2
    assert max(probe["carried_tok_s"].values()) < g.SATURATED_BELOW * probe["offered_tok_s"]
    assert probe["capacity_tok_s"] == min(probe["carried_tok_s"].values())
    assert probe["capacity_tok_s"] == pytest.approx(plain["capacity_tok_s"], rel=0.1)  # the same model's capacity, whatever the fluid said


def test_grid_has_the_live_decode_graphs_and_more_chunk_rows():
    pytest.importorskip("torch")
    from runtime.gpu.calibration_grid import CHUNKS_ON_PREFIX, calibration_grid

    labels = [label for label, _ in calibration_grid()]
    # 108 points, 16 decode points at the key-tile edges, 20 mixed ones (one of the 21 was there already)
    assert len(labels) == len(set(labels)) == 144
    for b in (8, 24, 48):
        assert [lab for lab in labels if lab.startswith(f"decode {b}x")] == [f"decode {b}x48", f"decode {b}x96", f"decode {b}x256"]
    assert [lab for lab in labels if lab.startswith("decode 96x")] == [f"decode 96x{c}" for c in (48, 63, 64, 96, 127, 128, 256)]
    assert sum(lab.startswith("chunk") for lab in labels) == len(CHUNKS_ON_PREFIX) == 9
    comp = dict(calibration_grid())
    assert comp["decode 96x48"] == [(1, 48)] * 96 and comp["chunk 384 after 2048"] == [(384, 2048)]
    assert comp["mixed 72x64 + 3x48 after 0"] == [(1, 64)] * 72 + [(48, 0)] * 3


def test_note_reads_two_load_host_terms_and_the_older_one_load_files():
    from fidelity_docs import markdown

    fid = json.loads((ROOT / "docs/fidelity-h200-run5.json").read_text())  # run 5: host terms at one load
    assert "at load 0.7 (seed 1" in markdown(fid, "h200", "cmd")
    coef = fid["host_terms"]["coefficients"]
    two = dict(fid, host_terms={**{k: v for k, v in fid["host_terms"].items() if k != "load"}, "loads": [0.6, 0.85],
                                "per_scheduler": {"wait": {**coef, "c0_s": 4e-4}, "vllm-v1": coef, "sarathi": coef}},
               points=[dict(p, simulated_own_host_mean_latency_s=1.1 * p["measured_mean_latency_s"]) for p in fid["points"]])
    text = markdown(two, "h200", "cmd")
    assert "at loads 0.6, 0.85 (seed 1" in text
    assert "| wait | 400.00 µs |" in text
    assert f"| wait | 0.8 | {fid['points'][3]['measured_mean_latency_s']:.3f} s | +19.1 % | +10.0 % |" in text
