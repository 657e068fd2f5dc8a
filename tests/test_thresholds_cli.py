"""`fluidsched solve / show / check`: files written, tables printed, exit codes 0, 2, 3."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from thresholds.policy import SCHEMA_PATH, load_policy
from validation.cli import main

WORKLOAD = """name: two
kv_capacity_tokens: 137000
batch_time: {kind: affine, d0_s: 0.015, d1_s_per_token: 1.15e-7}
types:
  - {name: x, prefill: 10, decode: 10, rate_per_s: 1000}
  - {name: y, prefill: 10, decode: 20, rate_per_s: 1000}
"""


def _workload(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD)
    return str(path)


def test_solve_show_check_wait(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["solve", "--service-rule", "cohort", _workload(tmp_path), "-o", str(out), "--max-wait-s", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "threshold" in text and "stage_load" in text and "of C = 137000" in text
    jsonschema.validate(json.loads(out.read_text()), json.loads(SCHEMA_PATH.read_text()))
    assert load_policy(out).drain.max_wait_s == 0.5
    assert main(["show", str(out)]) == 0
    assert "iteration_time[x]" in capsys.readouterr().out
    assert main(["check", str(out), _workload(tmp_path)]) == 0
    assert main(["check", str(out)]) == 0
    # today's traffic is 30 % higher: the stage-time conditions break
    assert main(["check", str(out), _workload(tmp_path), "--rate-scale", "1.3"]) == 3
    assert "BROKEN" in capsys.readouterr().out


def test_solve_nested_auto_and_check(tmp_path, capsys):
    out = tmp_path / "n.json"
    assert main(["solve", "--service-rule", "cohort", _workload(tmp_path), "-o", str(out), "--policy", "nested-wait", "--segments", "auto",
                 "--service-rule", "continuous"]) == 0
    assert "--segments auto" in capsys.readouterr().out
    raw = json.loads(out.read_text())
    assert raw["service_rule"] == "continuous" and raw["options"]["segments_curve"]
    assert main(["check", str(out), _workload(tmp_path)]) == 0
    assert main(["check", str(out), _workload(tmp_path), "--rate-scale", "3"]) == 3
    capsys.readouterr()
    # without a workload file: the rates the policy was solved for, scaled the same way
    assert main(["check", str(out), "--rate-scale", "3"]) == 3
    assert "the policy's own rates × 3" in capsys.readouterr().out
    assert main(["check", str(out), "--rate-scale", "0.5"]) == 0


def test_batch_cap_violations_exit_3_unless_allowed(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["solve", "--service-rule", "cohort", _workload(tmp_path), "-o", str(out), "--batch-cap", "64"]) == 3
    assert not out.exists() and "warning: condition" in capsys.readouterr().err
    assert main(["solve", "--service-rule", "cohort", _workload(tmp_path), "-o", str(out), "--batch-cap", "64", "--allow-violations"]) == 0
    assert out.exists() and main(["show", str(out)]) == 0
    assert main(["check", str(out)]) == 3


def test_bad_inputs_exit_2_without_traceback(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["solve", "--service-rule", "cohort", _workload(tmp_path), "-o", str(out), "--slack", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "slack" in err and "Traceback" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 7, "policy": "wait"}))
    assert main(["show", str(bad)]) == 2
    assert "schema_version" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.json")]) == 2


def test_unstable_workload_exit_3(tmp_path, capsys):
    assert main(["solve", "--service-rule", "cohort", _workload(tmp_path), "-o", str(tmp_path / "p.json"), "--rate-scale", "100"]) == 3
    assert "Nearest feasible setting" in capsys.readouterr().err


NEAR_CAPACITY = """name: near-capacity
kv_capacity_tokens: 68544
batch_time: {kind: linear3, d0_s: 0.00346475, d_kv_s_per_token: 1.1785e-07, d_new_s_per_token: 2.30068e-05}
types:
  - {name: p48d16, prefill: 48, decode: 16, rate_per_s: 213.824}
  - {name: p48d48, prefill: 48, decode: 48, rate_per_s: 213.824}
"""


def test_automatic_slack_picks_slack_0_near_the_load_limit_and_an_explicit_slack_wins(tmp_path, capsys):
    """At load factor 0.9 the candidate min(0.05, (1 − 0.9)/2) = 0.05 doubles the thresholds
    ((15, 15), 67,200 tokens); slack 0 meets every condition with (8, 8) and 35,840, so the rule
    picks slack 0 and says why. `--slack 0.05` still gets the larger thresholds."""
    near = tmp_path / "near.yaml"
    near.write_text(NEAR_CAPACITY)
    assert main(["solve", "--service-rule", "cohort", str(near), "-o", str(tmp_path / "p.json")]) == 0
    err = capsys.readouterr().err
    assert "slack 0 chosen automatically" in err and "needs 67,200 tokens, ≥ 1.5× the 35,840 of slack 0" in err
    auto = load_policy(tmp_path / "p.json")
    assert [c.threshold for c in auto.classes] == [8, 8] and auto.options["slack"] == 0.0
    assert "67,200" in auto.options["slack_rule"]
    assert main(["solve", "--service-rule", "cohort", str(near), "-o", str(tmp_path / "p5.json"), "--slack", "0.05"]) == 0
    assert "chosen automatically" not in capsys.readouterr().err
    given = load_policy(tmp_path / "p5.json")
    assert [c.threshold for c in given.classes] == [15, 15] and given.options["slack_rule"] == "given"
    assert main(["solve", "--service-rule", "cohort", _workload(tmp_path), "-o", str(tmp_path / "far.json")]) == 0
    assert "slack 0.05 chosen automatically: slack 0.05 = min(0.05, (1 − L)/2)" in capsys.readouterr().err


def test_a_cohort_refusal_says_when_the_capped_rule_solves(tmp_path, capsys):
    """p512d1000: one prompt per stage needs Σ a_j ≈ 1.01e6 tokens against C = 137,000, so the cohort
    rule refuses (exit 3); the capped rule solves it, and the refusal says so."""
    assert main(["solve", "p512d1000", "--service-rule", "cohort", "-o", str(tmp_path / "p.json")]) == 3
    err = capsys.readouterr().err
    assert "1.01301e+06" in err and "add --service-rule capped" in err and "Traceback" not in err
    assert main(["solve", "p512d1000", "--service-rule", "capped", "-o", str(tmp_path / "p.json")]) == 0
    assert load_policy(tmp_path / "p.json").service_rule == "capped"
    # without --service-rule the capped rule is the default, and solve says so
    assert main(["solve", "p512d1000", "-o", str(tmp_path / "d.json")]) == 0
    assert load_policy(tmp_path / "d.json").service_rule == "capped"
    assert "service rule capped (default" in capsys.readouterr().err
    # the batch-cap recipe keeps its cohort rule
    assert main(["solve", "p512d1000", "--batch-cap", "128", "--allow-violations", "-o", str(tmp_path / "b.json")]) == 0
    assert load_policy(tmp_path / "b.json").service_rule == "cohort"


@pytest.mark.parametrize("as_json", [False, True])
def test_show_ends_its_output_with_exactly_one_newline(as_json, capsys):
    policy = str(Path(__file__).parent / "data" / "golden_policy_wait.json")
    assert main(["show", policy] + (["--json"] if as_json else [])) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and not out.endswith("\n\n")
    if as_json:
        assert json.loads(out)["policy"] == "wait"


@pytest.mark.parametrize(("text", "value"), [("auto", "auto"), ("types", "types"), ("1", 1), ("20", 20)])
def test_segments_argument_accepts_a_count_auto_or_types(text, value):
    from thresholds.cli_solve import _segments

    assert _segments(text) == value


@pytest.mark.parametrize(("text", "words"), [("0", "positive number of segments, got 0"), ("-3", "got -3"),
                                             ("two", "positive integer, 'auto' or 'types', got 'two'"), ("1.5", "got '1.5'")])
def test_segments_argument_refuses_other_text(text, words):
    import argparse

    from thresholds.cli_solve import _segments

    with pytest.raises(argparse.ArgumentTypeError, match=words):
        _segments(text)


def test_default_service_rule_is_capped_except_for_the_batch_cap_recipe():
    import argparse

    from thresholds.cli_solve import default_service_rule

    assert default_service_rule(argparse.Namespace(batch_cap=None)) == "capped"
    assert default_service_rule(argparse.Namespace(batch_cap=64)) == "cohort"


def test_the_memory_a_slack_choice_compares():
    # the capped rule's chosen bound; else Nested WAIT's requirement, else WAIT's M^π
    from types import SimpleNamespace

    from thresholds.cli_solve import _memory

    assert _memory(SimpleNamespace(memory=SimpleNamespace(required_tokens=7.0), memory_required_tokens=1.0)) == 7.0
    assert _memory(SimpleNamespace(memory_required_tokens=5.0, memory_policy_tokens=3.0)) == 5.0
    assert _memory(SimpleNamespace(memory_policy_tokens=3.0)) == 3.0


def test_nested_solve_records_the_documented_delta_and_horizon_defaults(tmp_path, capsys):
    """`--delta` 0.01 and `--horizon-s` 3600 when not given (the help's defaults), as the guarantee states them."""
    out = tmp_path / "n.json"
    assert main(["solve", "--service-rule", "cohort", _workload(tmp_path), "-o", str(out), "--policy", "nested-wait", "--segments", "2"]) == 0
    g = load_policy(out).guarantees
    assert (g.delta, g.horizon_s) == (0.01, 3600.0)
    assert "δ = 0.01, horizon 3600 s" in capsys.readouterr().out


@pytest.mark.parametrize(("rule", "eta"), [("cohort", 0.05), ("capped", 0.0)])
def test_nested_solve_records_the_documented_eta_default_of_each_rule(tmp_path, rule, eta):
    """`--eta` not given: 0.05 for the cohort rule, 0 for the capped rule (the help's defaults)."""
    out = tmp_path / "n.json"
    assert main(["solve", "--service-rule", rule, _workload(tmp_path), "-o", str(out), "--policy", "nested-wait", "--segments", "2"]) == 0
    assert json.loads(out.read_text())["options"]["eta"] == eta


def test_check_refuses_a_rate_scale_of_zero(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["solve", _workload(tmp_path), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["check", str(out), _workload(tmp_path), "--rate-scale", "0"]) == 2
    assert "--rate-scale" in capsys.readouterr().err


@pytest.mark.parametrize(("rate", "below"), [("1.0", "1×"), ("1.5", "0.6667×")])
def test_solve_at_a_load_factor_of_exactly_one_or_more_says_the_workload_is_unstable(tmp_path, capsys, rate, below):
    # one type, l = 10, l' = 1: a = 2 · 10.5 = 21 token·iterations; d1 = 1/21 makes L = λ exactly
    path = tmp_path / "edge.yaml"
    path.write_text("name: edge\nkv_capacity_tokens: 100000\n"
                    "batch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 0.047619047619047616}\n"
                    f"types:\n  - {{name: t, prefill: 10, decode: 1, rate_per_s: {rate}}}\n")
    assert main(["solve", str(path), "-o", str(tmp_path / "p.json")]) == 3
    err = capsys.readouterr().err
    assert f"load factor L = {float(rate):g} ≥ 1, so latency grows without bound" in err and f"scale rates below {below}" in err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("rule, says", [("capped", True), ("cohort", False)])
def test_nested_wait_per_type_segments_are_explained_only_for_the_capped_rule(tmp_path, capsys, rule, says):
    out = tmp_path / "n.json"
    assert main(["solve", _workload(tmp_path), "-o", str(out), "--policy", "nested-wait", "--segments", "types", "--service-rule", rule]) == 0
    err = capsys.readouterr().err
    assert ("segments: L = 2, one per decode length" in err) is says
