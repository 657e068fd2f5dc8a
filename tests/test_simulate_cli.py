"""`fluidsched simulate` and `fluidsched compare`: outputs, run folders, and bad input (exit 2)."""

from __future__ import annotations

import csv
import json

import pytest

from validation.cli import main

WORKLOAD = """\
name: tiny
kv_capacity_tokens: 20000
batch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}
types:
  - {name: short, prefill: 20, decode: 10, rate_per_s: 20.0}
  - {name: long, prefill: 40, decode: 30, rate_per_s: 10.0}
"""
SUMMARY_KEYS = ("scheduler", "executor", "decode_throughput_tokens_per_s", "mean_latency_s", "mean_ttft_s", "p99_tbt_s", "completed", "restarts", "peak_kv_tokens")


@pytest.fixture
def workload(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(WORKLOAD, encoding="utf-8")
    return str(path)


@pytest.fixture
def policy(tmp_path, workload):
    path = tmp_path / "policy.json"
    assert main(["solve", "--service-rule", "cohort", workload, "-o", str(path)]) == 0
    return str(path)


def test_json_summary(workload, capsys):
    assert main(["simulate", workload, "--scheduler", "sarathi", "--requests", "300", "--json", "--option", "chunk_size=64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in SUMMARY_KEYS:
        assert key in summary
    assert summary["scheduler"] == "sarathi" and summary["executor"] == "simulated" and summary["completed"] == 300
    assert summary["peak_kv_tokens"] <= 20000
    # fluid throughput* = 20·10 + 10·30 = 500 tokens/s; far below capacity the simulator matches it
    assert summary["decode_throughput_tokens_per_s"] == pytest.approx(500, rel=0.1)


def test_policy_run_writes_the_folder(workload, policy, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", workload, "--policy", policy, "--requests", "200", "--out", str(out)]) == 0
    assert "wait" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["scheduler"] == "wait" and config["seed"] == 0 and config["code_version"]
    assert config["workload"]["types"][0]["name"] == "short"
    assert json.loads((out / "policy.json").read_text())["policy"] == "wait"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 200
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 200 and {"request_id", "ttft_s", "latency_s", "restarts"} <= set(rows[0])
    events = json.loads((out / "trace.json").read_text())["traceEvents"]
    batches = [e for e in events if e.get("ph") == "X"]
    assert len(batches) == summary["num_steps"] and all(e["dur"] > 0 for e in batches)


def test_replicas(workload, capsys):
    assert main(["simulate", workload, "--scheduler", "fcfs", "--requests", "300", "--replicas", "2", "--router", "least-work", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["completed"] == 300 and summary["replicas"] == 2


def test_compare_uses_identical_arrivals(workload, tmp_path, policy, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", workload, "--schedulers", "fcfs,sarathi,wait", "--policy", policy, "--requests", "200", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    for name in ("fcfs", "sarathi", "wait"):
        assert name in table
    arrivals = []
    for name in ("fcfs", "sarathi", "wait"):
        with (out / name / "metrics.csv").open() as handle:
            arrivals.append([row["arrival_s"] for row in csv.DictReader(handle)])
    assert arrivals[0] == arrivals[1] == arrivals[2]
    assert len(json.loads((out / "compare.json").read_text())) == 3


def _expect_input_error(argv, capsys, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_unknown_scheduler_lists_valid_names(workload, capsys):
    _expect_input_error(["simulate", workload, "--scheduler", "nope"], capsys, "nope", "sarathi", "wait")
    _expect_input_error(["compare", workload, "--schedulers", "fcfs,nope"], capsys, "nope", "valid names")


def test_policy_whose_classes_do_not_match(workload, policy, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(WORKLOAD.replace("name: short", "name: brief"), encoding="utf-8")
    _expect_input_error(["simulate", str(other), "--policy", policy], capsys, "classes", "brief")


def test_bad_trace_rows(workload, tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.0,12,20\n2023-11-16 18:15:47.0,-4,3\n", encoding="utf-8")
    bad = tmp_path / "traced.yaml"
    bad.write_text(WORKLOAD + f"arrivals: {{kind: trace, trace: {trace}}}\n", encoding="utf-8")
    _expect_input_error(["simulate", str(bad), "--scheduler", "fcfs", "--requests", "2"], capsys, "trace.csv")


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--rate-scale", "0"], "rate"),
        (["--rate-scale", "-2"], "rate"),
        (["--horizon", "-1"], "horizon"),
        (["--requests", "0"], "requests"),
        (["--option", "chunk_size"], "KEY=VALUE"),
        (["--option", "bogus=1"], "bogus"),
        (["--router", "sideways"], "router"),
    ],
)
def test_bad_numbers_and_options(workload, capsys, extra, fragment):
    _expect_input_error(["simulate", workload, "--scheduler", "sarathi", "--requests", "50", *extra], capsys, fragment)


def test_wait_without_policy(workload, capsys):
    _expect_input_error(["simulate", workload, "--scheduler", "wait"], capsys, "--policy")


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda t: t.replace("kv_capacity_tokens: 20000", "kv_capacity_tokens: 19999"),
         ("C is 20000 tokens in the policy, 19999 in the run",)),
        (lambda t: t.replace("rate_per_s: 10.0", "rate_per_s: 11.0"),
         ("rate of long is 10/s in the policy, 11/s in the run",)),
        (lambda t: t.replace("d0_s: 0.01", "d0_s: 0.02"), ("content hash", "same C and rates")),
    ],
)
def test_a_policy_of_another_workload_is_refused_saying_what_differs(workload, policy, tmp_path, capsys, change, words):
    other = tmp_path / "other.yaml"
    other.write_text(change(WORKLOAD), encoding="utf-8")
    for command in (["simulate", str(other), "--policy", policy, "--requests", "50"],
                    ["compare", str(other), "--policy", policy, "--schedulers", "fcfs,wait", "--requests", "50"]):
        _expect_input_error(command, capsys, "another workload", "--accept-policy-mismatch", *words)


def test_the_run_rate_scale_must_be_the_solved_one(workload, tmp_path, capsys):
    path = tmp_path / "half.json"
    assert main(["solve", "--service-rule", "cohort", workload, "--rate-scale", "0.5", "-o", str(path)]) == 0
    capsys.readouterr()
    _expect_input_error(["simulate", workload, "--policy", str(path), "--requests", "50"], capsys,
                        "rate of short is 10/s in the policy, 20/s in the run")
    assert main(["simulate", workload, "--policy", str(path), "--requests", "50", "--rate-scale", "0.5"]) == 0


def test_an_accepted_mismatch_runs_and_is_recorded(workload, policy, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(WORKLOAD.replace("kv_capacity_tokens: 20000", "kv_capacity_tokens: 30000"), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["simulate", str(other), "--policy", policy, "--requests", "50", "--accept-policy-mismatch",
                 "--out", str(out)]) == 0
    assert "policy mismatch accepted: C is 20000 tokens in the policy, 30000 in the run" in capsys.readouterr().err
    recorded = json.loads((out / "config.json").read_text())["policy_mismatch"]
    assert recorded[0] == "C is 20000 tokens in the policy, 30000 in the run" and "content hash" in recorded[-1]
