"""vLLM's serving-benchmark metrics (`runtime/serving_metrics.py`), computed by hand on a small
run, the typed summary's JSON round trip, and the CLI: --goodput, --metric-percentiles, --json."""

from __future__ import annotations

import json
import math

import pytest

from fluid.errors import InputError
from runtime.metrics import summarize
from runtime.request import Request
from runtime.serving_metrics import parse_goodput, parse_percentiles, serving_metrics
from runtime.step_log import SimResult
from runtime.summary import RunSummary
from validation.cli import main


def _requests():
    a = Request(0, 0.0, 10, 2)
    a.token_times_s, a.completion_s = [1.0, 1.5, 2.5], 2.5  # ttft 1 s, two gaps 0.5 s and 1 s
    b = Request(1, 1.0, 20, 0)
    b.token_times_s, b.completion_s = [1.2], 1.2  # one output token: no TPOT, no ITL
    c = Request(2, 2.0, 30, 5)
    c.token_times_s = [3.0, 3.1]  # never completed: not counted
    return [a, b, c]


def test_metrics_match_vllm_definitions_by_hand():
    m = serving_metrics(_requests(), 5.0, percentiles=(50.0, 99.0))
    assert m.completed == 2 and m.total_input_tokens == 30 and m.total_output_tokens == 4
    assert m.request_throughput == pytest.approx(0.4)
    assert m.output_throughput == pytest.approx(0.8)
    assert m.total_token_throughput == pytest.approx(34 / 5)
    assert m.request_goodput is None
    d = m.to_dict()
    assert d["mean_ttft_ms"] == pytest.approx(600.0)
    assert d["median_ttft_ms"] == pytest.approx(600.0)
    assert d["std_ttft_ms"] == pytest.approx(400.0)  # population std, as numpy's default
    assert d["p99_ttft_ms"] == pytest.approx(200 + 0.99 * 800)
    assert d["mean_tpot_ms"] == pytest.approx(750.0) and d["std_tpot_ms"] == 0.0  # (2.5 − 1) / 2, first token excluded
    assert d["mean_itl_ms"] == pytest.approx(750.0) and d["std_itl_ms"] == pytest.approx(250.0)  # one value per gap
    assert d["p99_itl_ms"] == pytest.approx(500 + 0.99 * 500)
    assert d["p50_e2el_ms"] == pytest.approx(1350.0) and d["mean_e2el_ms"] == pytest.approx(1350.0)


@pytest.mark.parametrize(
    "bounds, good",
    [
        ({"ttft": 500.0}, 1),  # only request 1 (200 ms)
        ({"ttft": 1000.0}, 2),  # the equality case: 1000 ms meets a 1000 ms bound
        ({"ttft": 999.0}, 1),
        ({"tpot": 100.0}, 1),  # request 1 counts with tpot 0; request 0 has 750 ms
        ({"e2el": 3000.0, "ttft": 1000.0}, 2),
        ({"e2el": 2499.0, "ttft": 1000.0}, 1),
    ],
)
def test_goodput_counts_requests_within_every_bound(bounds, good):
    m = serving_metrics(_requests(), 5.0, goodput_ms=bounds)
    assert m.request_goodput == pytest.approx(good / 5.0)


def test_an_empty_run_reports_zeros_as_vllm_does():
    m = serving_metrics([], 0.0)
    assert m.completed == 0 and m.request_throughput == 0.0
    assert m.to_dict()["mean_ttft_ms"] == 0.0


@pytest.mark.parametrize("bad", [["ttft"], ["itl:5"], ["ttft:-1"], ["ttft:nan"], ["ttft:abc"], ["ttft:5", "ttft:6"]])
def test_bad_goodput_bounds_are_input_errors(bad):
    with pytest.raises(InputError, match="goodput"):
        parse_goodput(bad)


@pytest.mark.parametrize("bad", ["", "abc", "0", "100", "50,nan", "-1"])
def test_bad_percentiles_are_input_errors(bad):
    with pytest.raises(InputError, match="percentile"):
        parse_percentiles(bad)


def test_percentile_keys_are_spelled_as_vllm():
    m = serving_metrics(_requests(), 5.0, percentiles=(90.0, 99.9))
    assert {"p90_ttft_ms", "p99.9_itl_ms", "p90_tpot_ms", "p99.9_e2el_ms"} <= set(m.to_dict())


def _summary() -> RunSummary:
    return summarize(SimResult(_requests(), 5.0, 0, 0, kv_capacity_tokens=100), scheduler="x", percentiles=(90.0,),
                     goodput_ms={"ttft": 500.0})


def test_summary_round_trips_and_a_missing_field_is_an_error():
    s = _summary()
    d = s.to_dict()
    assert d["p90_ttft_ms"] == s.percentiles_ms["p90_ttft_ms"] and d["request_goodput"] == pytest.approx(0.2)
    json.dumps(d, allow_nan=False)
    assert RunSummary.from_dict(json.loads(json.dumps(d))) == s
    del d["decode_throughput_tokens_per_s"]
    with pytest.raises(InputError, match="decode_throughput_tokens_per_s"):
        RunSummary.from_dict(d, source="summary.json")
    with pytest.raises(KeyError):
        s.value("throughput_tokens_per_s")


def test_summary_json_has_no_nan():
    s = _summary()
    import dataclasses

    d = dataclasses.replace(s, mean_kv_tokens=math.nan).to_dict()
    assert d["mean_kv_tokens"] is None
    json.dumps(d, allow_nan=False)


WORKLOAD = """\
name: tiny
kv_capacity_tokens: 20000
batch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}
types:
  - {name: short, prefill: 20, decode: 10, rate_per_s: 20.0}
"""


@pytest.fixture
def workload(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(WORKLOAD, encoding="utf-8")
    return str(path)


def test_simulate_goodput_and_percentiles(workload, capsys):
    args = ["simulate", workload, "--scheduler", "fcfs", "--requests", "200", "--goodput", "ttft:500", "tpot:50",
            "--metric-percentiles", "50,90"]
    assert main(args + ["--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["goodput_slo_ms"] == {"ttft": 500.0, "tpot": 50.0}
    assert 0 < s["request_goodput"] <= s["request_throughput"]
    assert {"p50_ttft_ms", "p90_itl_ms", "p99_e2el_ms"} <= set(s)
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "TTFT mean ms" in table and "goodput req/s" in table and "TTFT SLO %" in table
    assert main(["simulate", workload, "--scheduler", "fcfs", "--goodput", "itl:5"]) == 2


def test_compare_shows_the_fluid_row(workload, capsys):
    assert main(["compare", workload, "--schedulers", "fcfs,sarathi", "--requests", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("fluid*") and lines[3].startswith("fcfs")
    assert float(lines[2].split()[1]) == pytest.approx(200.0)  # throughput* = 20 req/s × 10 decode tokens
    assert main(["compare", workload, "--schedulers", "fcfs", "--requests", "200", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fluid_throughput_star_tokens_per_s"] == pytest.approx(200.0)
    assert data["summaries"][0]["scheduler"] == "fcfs"


def test_json_on_solve_check_demo_figures(tmp_path, workload, capsys):
    policy = tmp_path / "p.json"
    assert main(["solve", workload, "-o", str(policy), "--json"]) == 0
    solved = json.loads(capsys.readouterr().out)
    assert solved["output"] == str(policy) and solved["policy"]["policy"] == "wait" and solved["broken_conditions"] == []
    assert main(["check", str(policy), workload, "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["all_hold"] is True and checked["conditions"]
    assert main(["check", str(policy), workload, "--rate-scale", "20", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["all_hold"] is False
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--requests", "200", "--json", "--no-figure", "--sweep-requests", "100", "--jobs", "1"]) == 0
    demo = json.loads(capsys.readouterr().out)
    assert {s["scheduler"] for s in demo["summaries"]} >= {"wait", "fcfs"}
    assert main(["figures", str(out), "--json"]) == 0
    # the comparison figure, and the load sweep's
    assert sorted(json.loads(capsys.readouterr().out)["figures"]) == sorted(
        [str(out / "demo_comparison.png"), str(out / "load-sweep" / "figures" / "demo_load.png")])


def test_figures_refuse_a_summary_that_lacks_a_field(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--requests", "200", "--no-figure", "--no-sweep"]) == 0
    capsys.readouterr()
    data = json.loads((out / "demo.json").read_text())
    del data["summaries"][0]["decode_throughput_tokens_per_s"]
    (out / "demo.json").write_text(json.dumps(data))
    assert main(["figures", str(out)]) == 2
    assert "decode_throughput_tokens_per_s" in capsys.readouterr().err
